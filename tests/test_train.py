import json

import pytest
import torch

from gan_core import files
from gan_core.errors import Diverged, UserError
from gan_core.training import accounting, loop, order
from gan_core.training.losses import blog_bce
from gan_core.training.run_folder import RunFolder
from tests.conftest import timeline, trained_steps


@pytest.fixture
def count_steps(monkeypatch):
    """Count the optimizer steps train() really takes, per network."""
    counts = {"g": 0, "d": 0}
    made = []
    real_make = loop.make_optimizer

    def make(params, cfg):
        opt = real_make(params, cfg)
        key = "g" if not made else "d"  # train() builds G's optimizer first
        made.append(key)
        opt.register_step_post_hook(lambda *_: counts.__setitem__(key, counts[key] + 1))
        return opt

    monkeypatch.setattr(loop, "make_optimizer", make)
    return counts


@pytest.mark.parametrize("d_steps,g_steps,steps,expect_d", [
    (1, 5, 12, 3),  # the blog's 1:5: iterations of 5, 5, 2 G steps
    (5, 1, 4, 20),
    (2, 1, 3, 6),
    (1, 1, 7, 7),
    (3, 2, 5, 9),
])
def test_d_and_g_step_counts_follow_the_ratio(split, tiny, count_steps, d_steps, g_steps, steps, expect_d):
    cfg = tiny(steps=steps, **{"schedule.d_steps": d_steps, "schedule.g_steps": g_steps})
    r = loop.train(cfg, split=split)
    assert (r.g_steps, r.d_steps) == (steps, expect_d)
    assert count_steps == {"g": steps, "d": expect_d}
    assert r.real_images == expect_d * cfg.schedule.batch_size


def test_flops_scale_with_batch_and_width(tiny):
    d8, g8 = accounting.count_flops(tiny(**{"schedule.batch_size": 8}))
    d16, g16 = accounting.count_flops(tiny(**{"schedule.batch_size": 16}))
    assert d16 == pytest.approx(2 * d8) and g16 == pytest.approx(2 * g8)
    _, g_wide = accounting.count_flops(tiny(**{"model.width": 1 / 8}))
    assert g_wide > 3 * g8  # convolutions grow with the square of the width


def losses(run_dir):
    return [(s["g_step"], s["loss_d"], s["loss_g"]) for s in
            (json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines())]


def test_training_is_deterministic_on_cpu(split, tiny, tmp_path):
    for name in ("a", "b"):
        loop.train(tiny(steps=10, log_every=2), tmp_path / name, split=split)
    loop.train(tiny(steps=10, log_every=2, seed=1), tmp_path / "c", split=split)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


@pytest.mark.parametrize("reuse", [False, True])
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(split, tiny, tmp_path, reuse):
    cfg = tiny(steps=20, log_every=2, checkpoint_every=10, **{"schedule.reuse_noise": reuse,
                                                            "schedule.d_steps": 1, "schedule.g_steps": 2})
    full = loop.train(cfg, tmp_path / "full", split=split)
    loop.train(tiny(**{**_flat(cfg), "steps": 10}), tmp_path / "part", split=split)
    resumed = loop.train(cfg, tmp_path / "part", split=split, resume=True)
    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    assert (resumed.g_steps, resumed.d_steps) == (full.g_steps, full.d_steps)
    for a, b in zip(full.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _flat(cfg):
    """Dotted overrides that rebuild cfg from tiny()."""
    out = {}
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict) and section not in ("g_optim", "d_optim"):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        elif not isinstance(value, dict):
            out[section] = value
    return out


def test_resume_refuses_a_different_experiment(split, tiny, tmp_path):
    loop.train(tiny(steps=4), tmp_path / "r", split=split)
    with pytest.raises(UserError, match="differs in schedule"):
        loop.train(tiny(steps=8, **{"schedule.batch_size": 4}), tmp_path / "r", split=split, resume=True)


def test_a_run_resumes_on_another_gpu_but_not_on_the_cpu(split, tiny, tmp_path, monkeypatch):
    """A study retries a trial on whichever GPU is free: cuda:1 continues cuda:0's run (faked: no GPU here)."""
    import torch

    from gan_core import devices
    from gan_core.training.run_folder import RunFolder

    monkeypatch.setattr(devices, "resolve", lambda name: torch.device("cpu"))
    loop.train(tiny(steps=4, **{"device.device": "cuda:0"}), tmp_path / "r", split=split)
    folder = RunFolder(tmp_path / "r")
    assert folder.checkpoint_to_resume(tiny(steps=8, **{"device.device": "cuda:1"}), resume=True)["g_step"] == 4
    with pytest.raises(UserError, match="differs in device"):
        folder.checkpoint_to_resume(tiny(steps=8, **{"device.device": "cpu"}), resume=True)


def test_nan_loss_stops_with_the_step_where_it_appeared(split, tiny, tmp_path, monkeypatch):
    real_loss = loop.gan_loss
    calls = {"g": 0, "last_was_fake": False}

    def poisoned(name, *args):
        fn = real_loss(name, *args)

        def loss(logits, target):
            value = fn(logits, target)
            is_g_step = bool(target.all()) and calls["last_was_fake"]  # at 1:1: D real, D fake, then G
            calls["last_was_fake"] = not bool(target.any())
            if is_g_step:
                calls["g"] += 1
                if calls["g"] >= 7:
                    return value * float("nan")
            return value
        return loss

    monkeypatch.setattr(loop, "gan_loss", poisoned)
    with pytest.raises(Diverged, match="diverged at G step 7, D step 7: generator loss") as e:
        loop.train(tiny(steps=20, log_every=5, checkpoint_every=5), tmp_path / "r", split=split)
    assert e.value.step == 7
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["reason"] == "generator loss not finite at G step 7, D step 7"
    # the last good checkpoint (step 5) survives; the diverged weights are never written
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)["g_step"] == 5


def test_nan_weights_are_detected(split, tiny, monkeypatch):
    def poison(record):
        if record["g_step"] == 4:
            with torch.no_grad():
                next(iter(made[0].g_net.parameters())).fill_(float("inf"))

    made = trained_steps(monkeypatch)
    # the inf weight poisons G's output, so D's next loss (D step 5, still at G step 4) is the first non-finite value
    with pytest.raises(Diverged, match="diverged at G step 4, D step 5: discriminator loss"):
        loop.train(tiny(steps=12, log_every=4, **{"schedule.loss": "bce"}), split=split, on_log=poison)


@pytest.mark.parametrize("d_steps, g_steps, bad_d_index, where", [
    (5, 1, 3, "G step 0, D step 3"),  # 5:1: the first five D steps all come before G step 1
    (5, 1, 7, "G step 1, D step 7"),
    (1, 5, 2, "G step 5, D step 2"),  # 1:5: D step 2 opens the second iteration, after G steps 1-5
])
def test_a_discriminator_divergence_names_its_g_step_and_d_step(tiny, d_steps, g_steps, bad_d_index, where):
    cfg = tiny(**{"schedule.d_steps": d_steps, "schedule.g_steps": g_steps})
    d_vals = torch.zeros(10)
    d_vals[bad_d_index - 1] = float("nan")
    with pytest.raises(Diverged, match=f"diverged at {where}: discriminator loss is not finite"):
        at_tick = loop.Progress(cfg, 0.0, 0.0, "cpu")
        loop.check_finite(*timeline(order.schedule(cfg.schedule, 0), at_tick, d_vals, torch.zeros(10)), at_tick)


@pytest.mark.parametrize("reuse", [True, False])
def test_noise_is_fresh_every_step_unless_the_blog_quirk_is_on(split, tiny, monkeypatch, reuse):
    seen = []
    trained_steps(monkeypatch, lambda steps: steps.g_net.register_forward_pre_hook(
        lambda _m, a: seen.append(a[0].clone()) if torch.is_grad_enabled() else None))
    loop.train(tiny(steps=4, **{"schedule.reuse_noise": reuse}), split=split)
    g_step_noise = seen[: 4]  # forward passes with grad enabled are the G steps (samples run under no_grad)
    same = [torch.equal(g_step_noise[0], z) for z in g_step_noise[1:]]
    assert all(same) if reuse else not any(same)


def test_on_eval_is_called_at_its_interval_and_logged(split, tiny, tmp_path):
    seen = []

    def on_eval(point):
        assert point.generator.training  # train() hands over the live generator; it must put it back
        seen.append(point.g_step)
        return {"score": float(point.g_step)}

    r = loop.train(tiny(steps=10, log_every=1, eval_every=4), tmp_path / "r", split=split, on_eval=on_eval)
    assert seen == [0, 4, 8, 10]  # step 0: the untrained generator, the reference of "did it learn?"
    rows = [json.loads(x) for x in (tmp_path / "r" / "evals.jsonl").read_text().splitlines()]
    assert [row["score"] for row in rows] == [0.0, 4.0, 8.0, 10.0] and r.evals == rows
    seen.clear()  # a resumed run has its step-0 row already: it is not evaluated again
    loop.train(tiny(steps=12, log_every=1, eval_every=4), tmp_path / "r", split=split, on_eval=on_eval, resume=True)
    assert seen == [12]
    rows = [json.loads(x) for x in (tmp_path / "r" / "evals.jsonl").read_text().splitlines()]
    assert [row["g_step"] for row in rows] == [0, 4, 8, 10, 12]


def test_load_run_restores_the_generator(split, tiny, tmp_path):
    r = loop.train(tiny(steps=3), tmp_path / "r", split=split)
    cfg, g = loop.load_run(tmp_path / "r")
    assert cfg == r.cfg and not g.training
    for a, b in zip(g.state_dict().values(), r.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="not a run folder"):
        loop.load_run(tmp_path / "missing")


def test_cuda_request_without_cuda_is_a_user_error(tiny, split):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA is not available"):
        loop.train(tiny(**{"device.device": "cuda"}), split=split)


def test_blog_bce_matches_torch_bce_on_sigmoid():
    logits = torch.cat([torch.randn(60) * 8, torch.tensor([-30.0, 30.0, -30.0, 30.0])]).requires_grad_()
    target = torch.cat([(torch.rand(60) > 0.5).float(), torch.tensor([0.0, 0.0, 1.0, 1.0])])  # saturated too
    ours = blog_bce(logits, target)
    (g_ours,) = torch.autograd.grad(ours, logits)
    ref = torch.nn.BCELoss()(torch.sigmoid(logits), target)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    assert torch.isnan(blog_bce(torch.tensor([float("nan")]), torch.ones(1)))  # no exception: NaN flows on


def test_intervals_that_are_not_multiples_of_log_every_fire_at_their_own_steps(split, tiny):
    seen = []
    loop.train(tiny(steps=12, log_every=4, eval_every=3), split=split,
                on_eval=lambda point: seen.append(point.g_step) or {})
    assert seen == [0, 3, 6, 9, 12]  # step 0 (untrained), then every 3 G steps, not at the next logging tick


def test_checkpoints_and_evaluations_fire_when_asked_not_only_at_logging_ticks(split, tiny, tmp_path, monkeypatch):
    saved = []
    real_save = RunFolder.save_checkpoint

    def save(self, state):
        saved.append(state["g_step"])
        real_save(self, state)

    monkeypatch.setattr(RunFolder, "save_checkpoint", save)
    evals = []
    loop.train(tiny(steps=10, log_every=100, checkpoint_every=3, eval_every=4), tmp_path / "r", split=split,
               on_eval=lambda point: evals.append(point.g_step))
    assert saved == [3, 6, 9, 10]  # 10: the end always writes one
    assert evals == [0, 4, 8, 10]
    assert [r["g_step"] for r in files.read_jsonl(tmp_path / "r" / "stats.jsonl")] == [3, 4, 6, 8, 9, 10]


def test_the_first_non_finite_loss_in_time_is_named_not_the_first_checked(tiny):
    cfg = tiny(**{"schedule.d_steps": 1, "schedule.g_steps": 2})
    d_vals, g_vals = torch.zeros(3), torch.zeros(6)
    g_vals[1] = float("nan")  # G step 2, in iteration 0; its NaN weights spoil D step 2 (iteration 1)
    d_vals[1:] = float("nan")
    at_tick = loop.Progress(cfg, 0.0, 0.0, "cpu")
    with pytest.raises(Diverged, match="diverged at G step 2, D step 1: generator loss"):
        loop.check_finite(*timeline(order.schedule(cfg.schedule, 0), at_tick, d_vals, g_vals), at_tick)
    g_vals[:] = float("nan")
    d_vals[0] = float("nan")  # D step 1 comes before G step 1 in the same iteration
    with pytest.raises(Diverged, match="diverged at G step 0, D step 1: discriminator loss"):
        loop.check_finite(*timeline(order.schedule(cfg.schedule, 0), at_tick, d_vals, g_vals), at_tick)


def test_eval_at_steps_are_evaluated_and_end_their_iteration_there(split, tiny, tmp_path):
    """1:5 with eval_at 7: the iteration of G steps 6-10 ends at 7, so the generator judged there is the one a run of
    exactly 7 G steps ends with (its D steps too: 2), and training goes on to 12 from there."""
    seen = {}

    def on_eval(point):
        seen[point.g_step] = (point.d_step, {k: v.clone() for k, v in point.generator.state_dict().items()})
        return {"score": 1.0}

    ratio = {"schedule.d_steps": 1, "schedule.g_steps": 5}
    loop.train(tiny(steps=12, eval_every=100, eval_at=(7,), **ratio), tmp_path / "long", split=split, on_eval=on_eval)
    assert sorted(seen) == [0, 7, 12]
    short = loop.train(tiny(steps=7, **ratio), tmp_path / "short", split=split)
    assert seen[7][0] == short.d_steps == 2
    for name, value in short.generator.state_dict().items():
        assert torch.equal(seen[7][1][name], value), name


@pytest.mark.parametrize("changes", [{"schedule.d_steps": 1, "schedule.g_steps": 5},
                                     {"schedule.d_steps": 5, "schedule.g_steps": 1},
                                     {"schedule.order": "blog_epochs", "schedule.g_steps": 3}])
def test_g_steps_for_is_the_first_g_step_that_has_had_the_compute(tiny, changes):
    cfg = tiny(**changes)
    for target in (1.0, 3.3e6, 1e9, accounting.flops_at(cfg, 57, 40)):
        n = accounting.g_steps_for(cfg, target, 40)
        assert accounting.flops_at(cfg, n, 40) >= target > accounting.flops_at(cfg, n - 1, 40)
    d_flops, g_flops = accounting.count_flops(cfg)  # the D steps fall where the order puts them
    expected_d = {(1, 5): 2, (5, 1): 35}.get((cfg.schedule.d_steps, cfg.schedule.g_steps))
    if expected_d is not None:
        assert accounting.flops_at(cfg, 7, 40) == 7 * g_flops + expected_d * d_flops
