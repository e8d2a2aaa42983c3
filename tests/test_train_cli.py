import json
import os
import subprocess
import sys

import pytest

from gan_core import train as train_cli
from gan_core.training.config import RunConfig, preset
from gan_core.training.run_folder import RunFolder


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gan_core.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_bad_input_from_the_real_command_line(tmp_path):
    p = run_cli("--ratio", "1:0", "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "python -m gan_core.train: error: ratio '1:0' is not valid; write D:G with positive integers, e.g. 1:5 or 2:1"]
    assert not (tmp_path / "r").exists()


def test_dry_run_prints_the_final_config(capsys):
    assert train_cli.main(["--preset", "blog", "--ratio", "1:1", "--g-lr", "0.5", "--dry-run"]) == 0
    cfg = RunConfig.from_json(capsys.readouterr().out)
    blog = preset("blog")
    assert cfg.schedule.d_steps == 1 and cfg.schedule.g_steps == 1
    assert cfg.g_optim.lr == 0.5 and cfg.d_optim == blog.d_optim
    assert cfg.model == blog.model


def test_changing_the_optimizer_drops_the_presets_arguments(capsys):
    assert train_cli.main(["--preset", "dcgan", "--optim", "SGD", "--lr", "0.01", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["g_optim"] == {"name": "SGD", "lr": 0.01, "kwargs": {}} == cfg["d_optim"]


def test_adam_with_explicit_betas(capsys):
    assert train_cli.main(["--optim", "adam", "--optim-args", '{"betas": [0.5, 0.999]}', "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["d_optim"] == {"name": "Adam", "lr": 0.001, "kwargs": {"betas": [0.5, 0.999]}}


@pytest.mark.parametrize("args", [
    # the blog's full-size model, shortened (batch 2: its 768-channel layers cost seconds a step at the blog's 100)
    ["--preset", "blog", "--batch-size", "2", "--steps", "5"],
    ["--preset", "dcgan", "--batch-size", "16", "--steps", "6", "--log-every", "3"],  # a DCGAN-style family member
])
def test_short_cpu_runs_write_the_run_folder(tmp_path, args):
    out = tmp_path / "run"
    p = run_cli(*args, "--device", "cpu", "--out", str(out))
    assert p.returncode == 0, p.stderr
    for name in ("config.json", "stats.jsonl", "samples.png", "checkpoint.pt", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    steps = int(args[args.index("--steps") + 1])
    assert summary["g_steps"] == steps and summary["status"] == "finished"
    # resuming a finished run with a larger budget continues it
    p = run_cli(*args[:-2], "--steps", str(steps + 2), "--device", "cpu", "--out", str(out), "--resume")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "summary.json").read_text())["g_steps"] == steps + 2


def test_resume_with_fewer_steps_than_the_checkpoint_is_refused(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert train_cli.main(["--preset", "dcgan-cpu", "--steps", "4", "--log-every", "2", "--device", "cpu",
                           "--out", out]) == 0
    config = (tmp_path / "r" / "config.json").read_text()
    capsys.readouterr()
    assert train_cli.main(["--preset", "dcgan-cpu", "--steps", "2", "--device", "cpu", "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint is at G step 4, past the 2 asked for" in err and err.count("\n") == 1
    assert (tmp_path / "r" / "config.json").read_text() == config  # nothing rewritten



def test_a_second_writer_of_a_run_folder_is_refused_and_a_dead_owners_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["--preset", "dcgan-cpu", "--log-every", "2", "--device", "cpu", "--out", str(out)]
    assert train_cli.main([*args, "--steps", "2"]) == 0
    stats = (out / "stats.jsonl").read_text()
    holder = RunFolder(out)
    holder.lock()  # another run is training into the folder
    try:  # a real second process, as two --resume at once would be
        p = run_cli(*args, "--steps", "4", "--resume")
    finally:
        holder.unlock()
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert f"is being written by another run (process {os.getpid()})" in p.stderr
    assert (out / "stats.jsonl").read_text() == stats  # nothing appended twice
    (out / ".lock").write_text("999999999\n")  # left by a process killed with kill -9: it holds no flock
    capsys.readouterr()
    assert train_cli.main([*args, "--steps", "4", "--resume"]) == 0
    assert [json.loads(line)["g_step"] for line in (out / "stats.jsonl").read_text().splitlines()] == [2, 4]
    assert (out / ".lock").read_text() == f"{os.getpid()}\n"
