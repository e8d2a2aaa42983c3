"""A user's model plugged in with --arch module:function (gan_core.training.plugin_arch): it trains, resumes and is
evaluated like a built-in member; its config records its source hash, so that changed code is not resumed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ablations import run as ablations_run
from gan_core import train as train_cli
from gan_core.judging import evaluation
from gan_core.judging.protocol import Protocol
from gan_core.training import loop, plugin_arch
from gan_core.training.config import RunConfig
from tests.metric_helpers import embedded_split, one_thread

MLP = "tests.plugins.mlp_gan:build"
PLUGIN_FILE = Path(__file__).parent / "plugins" / "mlp_gan.py"
TINY = ["--preset", "dcgan", "--width", "0.04", "--batch-size", "8", "--device", "cpu", "--checkpoint-every", "0"]


def test_a_plugged_mlp_gan_trains_resumes_and_is_evaluated(tmp_path, capsys):
    out = tmp_path / "mlp"
    with one_thread():
        assert train_cli.main([*TINY, "--arch", MLP, "--steps", "3", "--out", str(out)]) == 0
        assert train_cli.main([*TINY, "--arch", MLP, "--steps", "5", "--out", str(out), "--resume"]) == 0
        cfg = RunConfig.from_json((out / "config.json").read_text())
        assert cfg.model.arch == MLP and cfg.model.arch_sha256 == hashlib.sha256(PLUGIN_FILE.read_bytes()).hexdigest()
        assert json.loads((out / "summary.json").read_text())["g_steps"] == 5
        result = evaluation.evaluate_run(out, 20, device="cpu", cache_dir=tmp_path / "cache", with_floor=False)
    assert result["fid20"] > 0 and Protocol.of(result).n_generated == 20
    _, generator = loop.load_run(out)  # the checkpoint holds the MLP's own state dict, keyed as the MLP's
    assert type(generator).__name__ == "MLPGenerator" and generator.latent_dim == cfg.model.latent_dim
    assert "20 generated" not in capsys.readouterr().err


def test_resuming_a_run_whose_builder_code_changed_is_refused(tmp_path, monkeypatch, capsys):
    shutil.copy(PLUGIN_FILE, tmp_path / "my_mlp_gan_i20.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    out, spec = tmp_path / "run", "my_mlp_gan_i20:build"
    with one_thread():
        assert train_cli.main([*TINY, "--arch", spec, "--steps", "2", "--out", str(out)]) == 0
    with (tmp_path / "my_mlp_gan_i20.py").open("a") as f:
        f.write("\n# hidden width changed\n")
    assert train_cli.main([*TINY, "--arch", spec, "--steps", "4", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot resume: the code of --arch {spec} changed since the checkpoint" in err


def test_a_pack_of_one_keeps_the_users_network_and_its_state_dict():
    cfg = plugin_arch.with_source_hash(train_cli.config_from_args(train_cli.parser().parse_args([*TINY, "--arch",
                                                                                                  MLP])))
    steps = loop.GanSteps(cfg, embedded_split().train[:64], torch.device("cpu"))
    steps.iteration()
    g, _ = plugin_arch.build(cfg.model)
    assert steps.state_dict()["g"].keys() == g.state_dict().keys()
    z = torch.randn(4, cfg.model.latent_dim)
    solo = steps.generator().eval()
    assert torch.equal(solo(z), steps.g_net.eval()(z[:, None])[:, 0])  # the solo copy is the trained network


def test_a_study_takes_the_builder_and_names_its_study_after_it(capsys):
    assert ablations_run.main(["--study", "step_ratio", "--arch", MLP, "--budget", "smoke", "--device", "cpu",
                               "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "step_ratio-dcgan-cpu-smoke-tests.plugins.mlp_gan.build" in plan
    assert "with channels x" not in plan  # the budget's shrinking is a knob this builder does not take
