"""gan_core.training.run_folder: what a run folder holds, and what a resume, a second run and a damaged file meet."""

import json

import pytest
import torch
from PIL import Image

from gan_core.errors import UserError
from gan_core.training import loop
from gan_core.training.config import RunConfig


def test_run_folder_holds_config_stats_samples_checkpoint_summary(split, tiny, tmp_path):
    cfg = tiny(steps=10, log_every=5)
    r = loop.train(cfg, tmp_path / "run", split=split)
    run = tmp_path / "run"
    assert RunConfig.from_json((run / "config.json").read_text()) == cfg
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["g_step"] for s in stats] == [5, 10]
    assert {"d_step", "real_images", "wall_s", "flops", "loss_d", "loss_g", "g_images_per_s"} <= set(stats[0])
    assert Image.open(run / "samples.png").size == (8 * 32 + 9 * 2, 8 * 32 + 9 * 2)  # 8 x 8 grid, padding 2
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["g_step"] == 10 and RunConfig.from_dict(ckpt["config"]) == cfg
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["g_steps"] == 10 and summary["d_steps"] == 10
    assert summary["flops"] == 10 * summary["flops_per_g_step"] + 10 * summary["flops_per_d_step"] == r.flops > 0
    assert not list(run.glob("*.tmp"))  # atomic writes leave no temporaries


def test_a_finished_run_folder_is_not_overwritten_without_resume(split, tiny, tmp_path):
    loop.train(tiny(steps=2), tmp_path / "r", split=split)
    with pytest.raises(UserError, match="already holds a run"):
        loop.train(tiny(steps=2), tmp_path / "r", split=split)


def test_resume_survives_a_torn_last_stats_line(split, tiny, tmp_path):
    loop.train(tiny(steps=4, log_every=2, checkpoint_every=2), tmp_path / "r", split=split)
    with open(tmp_path / "r" / "stats.jsonl", "a") as f:
        f.write('{"g_step": 6, "loss')  # a process killed mid-append
    r = loop.train(tiny(steps=6, log_every=2, checkpoint_every=2), tmp_path / "r", split=split, resume=True)
    assert r.g_steps == 6
    lines = (tmp_path / "r" / "stats.jsonl").read_text().splitlines()
    assert [json.loads(x)["g_step"] for x in lines] == [2, 4, 6]  # the torn line cut off, every line whole


def test_a_file_system_without_locks_trains_unlocked(split, tiny, tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    result = loop.train(tiny(steps=2), tmp_path / "r", split=split)
    assert result.g_steps == 2 and (tmp_path / "r" / "checkpoint.pt").is_file()


def test_a_checkpoint_whose_content_changed_after_saving_is_refused(split, tiny, tmp_path):
    """The checksum covers the whole content, counters and config too, not only the tensors' bytes."""
    from gan_core.training.run_folder import CHECKSUM, DamagedCheckpoint

    loop.train(tiny(steps=2), tmp_path / "r", split=split)
    path = tmp_path / "r" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    torch.save({**ckpt, "g_step": 1}, path)  # its recorded checksum kept
    with pytest.raises(DamagedCheckpoint, match="does not match its checksum"):
        loop.train(tiny(steps=4), tmp_path / "r", split=split, resume=True)
    del ckpt[CHECKSUM]  # a checkpoint written before checksums: read unverified, as before
    torch.save(ckpt, path)
    assert loop.train(tiny(steps=4), tmp_path / "r", split=split, resume=True).g_steps == 4
    assert CHECKSUM in torch.load(path, weights_only=False)  # and rewritten with one
