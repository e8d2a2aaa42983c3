"""A run folder: every file a training run writes, named once, written atomically, read back here.

    config.json    the frozen RunConfig, written before training starts
    stats.jsonl    one line per logging tick (step counters, losses, images/s)
    evals.jsonl    one line per on_eval result (anytime metrics)
    samples.png    a grid from fixed noise, generator in eval mode
    checkpoint.pt  models, optimizers, RNG state, counters and the config (atomic)
    summary.json   the run's outcome: finished or diverged, with its budget units
    metrics.json   final metrics, written by evaluation (gan_core.judging), not by training

``RunFolder(None)`` is the folder of a run that keeps nothing: every write is a no-op and every read
finds nothing, so the training loop never asks whether it has a folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gan_core import files
from gan_core.errors import UserError
from gan_core.training.config import RunConfig

CONFIG = "config.json"
STATS = "stats.jsonl"
EVALS = "evals.jsonl"
SAMPLES = "samples.png"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
METRICS = "metrics.json"
LOGS = (STATS, EVALS)  # appended during training; cut back to the checkpoint on resume

# A resumed run must be the same experiment: only the budget and the cadence of its outputs may change.
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "sample_every", "checkpoint_every", "eval_every"})


class RunFolder:
    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None

    def __bool__(self) -> bool:
        return self.path is not None

    def file(self, name: str) -> Path | None:
        return self.path / name if self.path is not None else None

    def exists(self, name: str) -> bool:
        return self.path is not None and (self.path / name).is_file()

    # ---- starting a run ---------------------------------------------------------------------------

    def checkpoint_to_resume(self, cfg: RunConfig, resume: bool) -> dict | None:
        """The checkpoint a run continues from (``resume`` and one exists), else None.

        A folder that already holds a checkpoint is never overwritten by a fresh run, a checkpoint of a
        different experiment or one past the asked budget is never resumed, and a path through a file is
        refused: each a UserError, raised before anything is written.
        """
        if self.path is not None:
            blocker = next((p for p in (self.path, *self.path.parents) if p.exists() and not p.is_dir()), None)
            if blocker is not None:
                raise UserError(f"{blocker} is a file, not a folder; choose a folder for the run (--out DIR)")
        if not self.exists(CHECKPOINT):
            return None
        if not resume:
            raise UserError(f"{self.path} already holds a run; resume it (--resume) or choose another output folder")
        ckpt = torch.load(self.path / CHECKPOINT, map_location="cpu", weights_only=False)
        saved, asked = RunConfig.from_dict(ckpt["config"]).to_dict(), cfg.to_dict()
        diff = sorted(k for k in saved if k not in RESUMABLE_CHANGES and saved[k] != asked[k])
        if diff:
            raise UserError(f"cannot resume: the checkpoint's config differs in {', '.join(diff)}; "
                            "use the same settings or another output folder")
        if ckpt["g_step"] > cfg.steps:
            raise UserError(f"cannot resume: the checkpoint is at G step {ckpt['g_step']}, past the {cfg.steps} "
                            f"asked for; ask for at least {ckpt['g_step']} steps (--steps)")
        return ckpt

    def start(self, cfg: RunConfig, resumed_at: int | None) -> None:
        """Create the folder and write the config. Resumed at G step N: log lines after N are dropped (the
        run logs them again). A fresh start: logs of an earlier attempt that never checkpointed are stale."""
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if resumed_at is None:
            for name in (*LOGS, SUMMARY):
                (self.path / name).unlink(missing_ok=True)
        else:
            for name in LOGS:
                keep = [r for r in self.read_jsonl(name) if r.get("g_step", 0) <= resumed_at]
                if self.exists(name):
                    files.write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in keep))
        files.write_text(self.path / CONFIG, cfg.to_json() + "\n")

    # ---- writing ----------------------------------------------------------------------------------

    def append(self, name: str, row: dict) -> None:
        """One JSON line (stats.jsonl, evals.jsonl); a torn last line is skipped by read_jsonl."""
        if self.path is not None:
            with open(self.path / name, "a") as f:
                f.write(json.dumps(row) + "\n")

    def write_json(self, name: str, obj: dict) -> None:
        if self.path is not None:
            files.write_json(self.path / name, obj)

    def save_checkpoint(self, state: dict) -> None:
        if self.path is not None:
            files.torch_save(self.path / CHECKPOINT, state)

    def save_samples(self, images: torch.Tensor, nrow: int = 8) -> None:
        """uint8 images [N, 1, H, W] as one PNG grid."""
        if self.path is None:
            return
        import torchvision

        grid = images.float() / 255.0
        files.atomic_write(self.path / SAMPLES,
                           lambda p: torchvision.utils.save_image(grid, p, nrow=nrow, format="png"))

    # ---- reading ----------------------------------------------------------------------------------

    def read_jsonl(self, name: str) -> list[dict]:
        return files.read_jsonl(self.path / name) if self.path is not None else []

    def read_json(self, name: str) -> dict | None:
        if not self.exists(name):
            return None
        return json.loads((self.path / name).read_text())

    def config(self) -> RunConfig:
        if not self.exists(CONFIG):
            raise UserError(f"{self.path} is not a run folder (no {CONFIG})")
        return RunConfig.from_json((self.path / CONFIG).read_text())

    def checkpoint(self) -> dict:
        if not self.exists(CHECKPOINT):
            raise UserError(f"{self.path} has no {CHECKPOINT} yet; train it first")
        return torch.load(self.path / CHECKPOINT, map_location="cpu", weights_only=False)
