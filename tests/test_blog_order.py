"""The blog's data order (schedule.order blog_epochs, training/order.py) against the blog's own loop.

The blog's loop is transcribed in tests/blog_reference.py and fed by torchvision's ImageFolder and DataLoader over
a folder of the same images, so the order (classes, then file names) is torchvision's, not ours.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gan_core import files
from gan_core.errors import ConfigError, Diverged
from gan_core.training import loop, order
from gan_core.training.config import override, preset
from tests.blog_reference import blog_loop
from tests.conftest import timeline, trained_steps

N, BATCH, EPOCHS = 90, 10, 3  # the blog's 900 images in batches of 100, at a tenth: 9 iterations an epoch


def blog_folder(split, root):
    """The first N train images as an ImageFolder tree: one sub-folder per digit, files named by source index."""
    for i in range(N):
        folder = root / str(int(split.train_labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{int(split.train_source_index[i]):05d}.png"
        Image.fromarray(split.train[i, 0].numpy()).save(folder / name)
    return root


def blog_events(root) -> list:
    """("D", source indices of the real batch) and ("G",) in the order the blog's loop runs them."""
    import torchvision
    from torch.utils.data import DataLoader

    transforms = torchvision.transforms.Compose([torchvision.transforms.Resize([32, 32]),
                                                 torchvision.transforms.ToTensor()])
    datasets = torchvision.datasets.ImageFolder(root=str(root), transform=transforms)
    names = [int(path.rsplit("/", 1)[-1][:-4]) for path, _ in datasets.samples]
    by_content = {(img * 255).round().to(torch.uint8)[0].numpy().tobytes(): names[i]
                  for i, (img, _) in enumerate(datasets)}
    dataloader = DataLoader(datasets, batch_size=BATCH, num_workers=0)
    events = []
    blog_loop(dataloader, EPOCHS, lambda real_pic: events.append(("D", content_ids(real_pic, by_content))),
              lambda: events.append(("G",)))
    return events, by_content


def content_ids(images: torch.Tensor, by_content: dict) -> tuple | None:
    """Source indices of a batch [B, 3, 32, 32] in 0..1, or None when an image is not a training image (a fake)."""
    ids = [by_content.get((x[0] * 255).round().to(torch.uint8).numpy().tobytes()) for x in images.float()]
    return None if None in ids else tuple(ids)


def test_the_blog_preset_runs_the_blogs_loop_step_by_step_packed_and_resumed_mid_epoch(split, tmp_path, monkeypatch):
    events, by_content = blog_events(blog_folder(split, tmp_path / "train_net_pic"))
    assert sum(e[0] == "D" for e in events) == 2 * EPOCHS  # the blog's 2 D steps per 9-batch epoch
    ours = []

    def record(steps):
        def d_input(_module, args):
            x = args[0]  # [B, members, 3, 32, 32]
            ids = content_ids(x[:, 0], by_content)
            if ids is not None:
                assert all(content_ids(x[:, m], by_content) == ids for m in range(x.shape[1]))  # every member's
                ours.append(("D", ids))

        steps.d_net.register_forward_pre_hook(d_input)
        steps.g_net.register_forward_pre_hook(lambda _m, _a: ours.append(("G",)) if torch.is_grad_enabled() else None)

    trained_steps(monkeypatch, record)
    # the blog's preset, small: its order depends on none of the model's settings
    cfg = override(preset("blog"), {"model.depth": 4, "model.shrink": 1 / 96, "schedule.batch_size": BATCH,
                                    "data.train_limit": N, "device.device": "cpu", "log_every": 4,
                                    "checkpoint_every": 0})
    out = [tmp_path / "seed0", tmp_path / "seed1"]
    loop.train_seeds(override(cfg, {"steps": 13}), [0, 1], out)  # stops on iteration 4 of epoch 2
    loop.train_seeds(override(cfg, {"steps": 9 * EPOCHS}), [0, 1], out, resume=True)
    assert ours == events
    g_done = [i for i, e in enumerate(events) if e[0] == "G"]
    for line in files.read_jsonl(out[1] / "stats.jsonl"):  # the D step counter, tick by tick
        assert line["d_step"] == sum(e[0] == "D" for e in events[: g_done[line["g_step"] - 1]])


@pytest.mark.parametrize("tick, bad_d, bad_g, where", [
    ((0, 0), 2, None, "G step 9, D step 3: discriminator"),  # D step 3 opens epoch 2, after its 9 G steps
    ((0, 0), None, 5, "G step 6, D step 2: generator"),  # G step 6 follows the D step of iteration 5
    ((13, 3), 0, 1, "G step 14, D step 4: discriminator"),  # from a tick mid-epoch 2: D on its iteration 5
    ((13, 3), 1, 0, "G step 14, D step 3: generator"),
])
def test_a_divergence_in_the_blogs_order_names_the_blogs_steps(tick, bad_d, bad_g, where):
    d_vals, g_vals = torch.zeros(4), torch.zeros(9)
    if bad_d is not None:
        d_vals[bad_d] = float("nan")
    if bad_g is not None:
        g_vals[bad_g] = float("nan")
    at_tick = loop.Progress(preset("blog"), 0.0, 0.0, "cpu", *tick)
    with pytest.raises(Diverged, match=f"diverged at {where}"):
        loop.check_finite(*timeline(order.BlogEpochs(N, BATCH, 1, 5), at_tick, d_vals, g_vals), at_tick)


def test_an_epoch_ends_on_a_short_batch_and_d_steps_repeat_on_the_iterations_batch():
    blog = order.BlogEpochs(25, 10, 2, 2)  # 3 iterations: 10, 10, 5 images; D (twice) on iterations 0 and 2
    assert [blog.trains_d(s) for s in range(6)] == [True, False, True] * 2
    assert [blog.batch_of(s) for s in (2, 3)] == [slice(20, 25), slice(0, 10)]
    assert [order.d_steps_in(blog.phases(0, k + 1)) for k in range(4)] == [2, 2, 4, 6]  # D steps done by G step k+1
    with pytest.raises(ConfigError, match="needs at least one full batch: the train set has 9 images"):
        order.BlogEpochs(9, 10, 1, 5)


@pytest.mark.parametrize("schedule", [
    order.Sampled(1, 1), order.Sampled(1, 5), order.Sampled(5, 1), order.Sampled(2, 3), order.BlogEpochs(25, 10, 2, 2),
    order.BlogEpochs(900, 100, 1, 5), order.BlogEpochs(900, 100, 3, 1), order.BlogEpochs(250, 100, 1, 5)], ids=repr)
def test_the_d_steps_counted_for_a_run_are_those_its_phases_place(schedule):
    """accounting.flops_at counts a run's D steps without listing its phases: the same count for every length."""
    assert [schedule.d_steps_before(n) for n in range(200)] == [order.d_steps_in(schedule.phases(0, n))
                                                                 for n in range(200)]
