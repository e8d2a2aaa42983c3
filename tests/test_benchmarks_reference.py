"""The benchmark baselines (benchmarks/reference_loops.py) do the same training work as GanSteps.

A speed-up ratio means something only if one ``iteration()`` of each loop trains the same networks
from the same initial weights, with the same optimizers, for the same number of D and G optimizer
steps, showing D the same number of real training images.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.reference_loops import (
    LOOPS,
    BlogStyleLoop,
    ExampleStyleLoop,
    make_loop,
    write_image_folder,
)
from gan_core.training import data, sampling
from gan_core.training.loop import GanSteps

# These networks are tiny: with a thread per core every op waits on its peers, which on the shared CPU made this
# file 5x slower. What is checked here does not depend on threads.
pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")
ITERATIONS = 2
TRAIN_IMAGES = 24  # 3 batches of 8: the loops run over several epochs within ITERATIONS

# Both data paths of the blog loop: RGB copies with the blog's [0, 1] head, and grey with Tanh's [-1, 1].
MODELS = {
    "dcgan-1ch-tanh": {},
    "seed-3ch-bn_sigmoid": {"model.arch": "blog", "model.depth": 4, "model.channels": 3, "model.head": "bn_sigmoid",
                            "schedule.loss": "bce"},
}


@pytest.fixture
def make(split, tiny, tmp_path):
    """``make(name, d_steps, g_steps)`` -> (cfg, loop) on the same tiny config and the same training images."""

    def build(name: str, d_steps: int, g_steps: int, model: str = "dcgan-1ch-tanh"):
        cfg = tiny(**MODELS[model], **{"schedule.d_steps": d_steps, "schedule.g_steps": g_steps,
                                       "data.train_limit": TRAIN_IMAGES})
        images = data.training_images(split, cfg.data)
        folder = tmp_path / "train_net_pic"
        if name == "blog" and not folder.exists():
            write_image_folder(images, split.train_labels[: len(images)], folder)
        loop = GanSteps(cfg, images, CPU) if name == "gan_steps" else make_loop(name, cfg, images, CPU, folder)
        return cfg, loop

    return build


def count_steps(loop) -> dict[str, int]:
    counts = {"d": 0, "g": 0}
    for key, opt in (("d", loop.opt_d), ("g", loop.opt_g)):
        opt.register_step_post_hook(lambda *_, key=key: counts.__setitem__(key, counts[key] + 1))
    return counts


def record_inputs(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


def is_real(batch: torch.Tensor, real: torch.Tensor) -> bool:
    """Every image of the batch is (up to float rounding) one of the training images."""
    dist = torch.cdist(batch.flatten(1).double(), real.flatten(1).double())
    return bool((dist.min(dim=1).values < 1e-4).all())


@pytest.mark.parametrize("d_steps,g_steps", [(1, 5), (1, 1), (2, 3), (3, 1)])
@pytest.mark.parametrize("name", ["gan_steps", "blog", "example"])
def test_an_iteration_takes_d_steps_d_and_g_steps_g_optimizer_steps(make, name, d_steps, g_steps):
    _, loop = make(name, d_steps, g_steps)
    counts = count_steps(loop)
    for i in range(1, ITERATIONS + 1):
        loop.iteration()
        assert counts == {"d": i * d_steps, "g": i * g_steps}, f"after iteration {i}"


@pytest.mark.parametrize("model", list(MODELS))
def test_the_loops_train_the_same_networks_with_the_same_optimizers(make, model):
    _, reference = make("gan_steps", 1, 5, model)
    for name in ("blog", "example"):
        _, loop = make(name, 1, 5, model)
        for ours, theirs in ((reference.g_net, loop.g_net), (reference.d_net, loop.d_net)):
            # GanSteps trains its seed as a pack of one: the same layers (groups=1) under the same state keys
            assert [type(layer) for layer in ours.net] == [type(layer) for layer in theirs.net]
            a, b = ours.state_dict(), theirs.state_dict()
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: initial weights differ"
            assert theirs.training
        for ours, theirs in ((reference.opt_g, loop.opt_g), (reference.opt_d, loop.opt_d)):
            assert type(ours) is type(theirs)
            hyper = [{k: v for k, v in g.items() if k != "params"} for g in ours.param_groups]
            assert hyper == [{k: v for k, v in g.items() if k != "params"} for g in theirs.param_groups]


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("d_steps,g_steps", [(1, 5), (2, 1)])
def test_d_sees_the_same_number_of_real_training_images(make, split, model, d_steps, g_steps):
    """Per iteration: d_steps real batches of training pixels, the blog's PNG path included, and fakes otherwise."""
    d_inputs, g_inputs = {}, {}
    for name in ("gan_steps", "blog", "example"):
        cfg, loop = make(name, d_steps, g_steps, model)
        # at the layers, where GanSteps' pack of one sees what a solo network sees
        d_inputs[name], g_inputs[name] = record_inputs(loop.d_net.net), record_inputs(loop.g_net.net)
        for _ in range(ITERATIONS):
            loop.iteration()
    m, b = cfg.model, cfg.schedule.batch_size
    real = sampling.to_float(data.training_images(split, cfg.data), m.head, m.channels)
    for name, seen in d_inputs.items():
        assert len(seen) == ITERATIONS * (2 * d_steps + g_steps), name  # real + fake per D step, fake per G step
        assert all(x.shape == (b, m.channels, 32, 32) for x in seen), name
        assert sum(is_real(x, real) for x in seen) == ITERATIONS * d_steps, name
    # G runs once per step, except that the example's first G step reuses its D step's fake batch.
    assert len(g_inputs["gan_steps"]) == len(g_inputs["blog"]) == ITERATIONS * (d_steps + g_steps)
    assert len(g_inputs["example"]) == ITERATIONS * (d_steps + g_steps - 1)


def test_the_blog_loop_makes_its_d_step_on_the_first_batch_of_each_iteration(make):
    """The blog's ``it % 5 == 0`` on a batch counter that runs across epochs (3 batches each here): 1:5 stays 1:5."""
    _, loop = make("blog", 1, 5)
    assert isinstance(loop, BlogStyleLoop)
    order: list[str] = []
    loop.opt_d.register_step_post_hook(lambda *_: order.append("d"))
    loop.opt_g.register_step_post_hook(lambda *_: order.append("g"))
    for _ in range(ITERATIONS):
        loop.iteration()
    assert isinstance(loop.dataloader.sampler, torch.utils.data.SequentialSampler)  # the blog does not shuffle
    assert "".join(order) == "dggggg" * ITERATIONS
    assert loop.epoch == (ITERATIONS * 5 - 1) // (TRAIN_IMAGES // 8)  # 10 batches of 3-batch epochs: in the 4th


def test_the_example_loop_host_syncs_every_step_and_shuffles(make):
    _, loop = make("example", 1, 1)
    assert isinstance(loop, ExampleStyleLoop)
    assert isinstance(loop.dataloader.sampler, torch.utils.data.RandomSampler)
    loop.iteration()
    assert len(loop.log) == 5 and all(isinstance(v, float) for v in loop.log)  # the example's .item() values


def test_warm_up_is_one_d_step_and_one_g_step(make):
    for name in LOOPS:
        _, loop = make(name, 1, 5)
        counts = count_steps(loop)
        loop.warm_up()
        assert counts == {"d": 1, "g": 1}, name


def test_unknown_loop_names_the_valid_ones(make):
    with pytest.raises(ValueError, match="project, blog, example"):
        make("nope", 1, 1)
