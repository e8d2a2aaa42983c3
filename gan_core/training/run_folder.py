"""A run folder: every file a training run writes, named once, written atomically, read back here.

    config.json    the frozen RunConfig, written before training starts
    stats.jsonl    one line per logging tick (step counters, losses, images/s)
    evals.jsonl    one line per on_eval result (anytime metrics)
    samples.png    a grid from fixed noise, generator in eval mode
    checkpoint.pt  models, optimizers, RNG state, counters and the config (atomic)
    summary.json   the run's outcome: finished or diverged, with its budget units
    metrics.json   final metrics, written by evaluation (gan_core.judging), not by training
    neighbours.png generated digits beside their nearest training digits (the memorization check), by evaluation
    .lock          the pid of the process training into the folder, flock-ed while it runs

``RunFolder(None)`` is the folder of a run that keeps nothing: every write is a no-op and every read
finds nothing, so the training loop never asks whether it has a folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from gan_core import files
from gan_core.errors import UserError, first_line
from gan_core.training.config import RunConfig

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
STATS = "stats.jsonl"
EVALS = "evals.jsonl"
SAMPLES = "samples.png"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
METRICS = "metrics.json"
NEIGHBOURS = "neighbours.png"
LOCK = ".lock"
LOGS = (STATS, EVALS)  # appended during training; cut back to the checkpoint on resume

CHECKSUM = "content_sha256"  # a checkpoint's key holding the SHA-256 of the rest of its content
LOG_TEXT = ("extractor", "real_set")  # the only text in a log line: an evaluation names its judge and real images
PROTOCOL = "protocol"  # the only object in a log line or a metrics.json: what a score was measured under (flat)


def check_log_row(row: dict, where: str) -> None:
    """A stats.jsonl or evals.jsonl line as the loop writes it: its step counters integers >= 0, every other value
    a number or null (a NaN loss is a number), but for the names in LOG_TEXT and an evaluation's PROTOCOL (an
    object of text and numbers, gan_core.judging.protocol)."""
    for key, value in row.items():
        if key in LOG_TEXT:
            ok = isinstance(value, str)
        elif key == PROTOCOL:
            ok = isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values())
        elif key in ("g_step", "d_step"):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            ok = value is None or isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            wanted = ("text" if key in LOG_TEXT else "an object of text and numbers" if key == PROTOCOL
                      else "an integer >= 0" if key.endswith("_step") else "a number or null")
            raise UserError(f"{where}: {key!r} is {json.dumps(value)[:40]}, not {wanted}; the file is damaged: "
                            "remove that line, or the run folder")
    if "g_step" not in row:
        raise UserError(f"{where} has no 'g_step'; the file is damaged: remove that line, or the run folder")


class FolderInUse(UserError):
    """Another live process is training into this run folder (it holds the folder's lock)."""


class DamagedCheckpoint(UserError):
    """A run folder's checkpoint.pt cannot be read, or its content is not what was saved (checksum mismatch)."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path} cannot be read ({why}); it is truncated or corrupt: delete it to start the run "
                         "afresh")


# A resumed run must be the same experiment: only the budget and the cadence of its outputs may change.
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "sample_every", "checkpoint_every", "eval_every", "eval_at"})


def _same_experiment(cfg: RunConfig) -> dict:
    """What a resume compares: the config as config.json holds it (through JSON: a tuple in memory is a list there),
    with the GPU's index left out (a study retries a trial on whichever GPU or host is free: cuda:1 continues
    cuda:0's run; the CPU does not continue a GPU's)."""
    d = json.loads(cfg.to_json())
    d["device"]["device"] = d["device"]["device"].split(":")[0]
    return d


class RunFolder:
    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self._lock_fd: int | None = None
        self._seen: tuple | None = None  # the checkpoint file's (size, mtime) when checkpoint_to_resume read it

    def __bool__(self) -> bool:
        return self.path is not None

    def file(self, name: str) -> Path | None:
        return self.path / name if self.path is not None else None

    def exists(self, name: str) -> bool:
        return self.path is not None and (self.path / name).is_file()

    def check_finished_run(self, output: str) -> None:
        """Refuse a path that is no run folder to read (missing, or a file), or one where ``output`` (the file a
        reader writes into it, e.g. metrics.json) cannot be written."""
        if self.path.is_file():
            raise UserError(f"{self.path} is a file, not a run folder; give the folder that holds {CONFIG}")
        if not self.path.is_dir():
            raise UserError(f"run folder {self.path} does not exist")
        files.check_writable(self.path, output)

    # ---- starting a run ---------------------------------------------------------------------------

    def checkpoint_to_resume(self, cfg: RunConfig, resume: bool) -> dict | None:
        """The checkpoint a run continues from (``resume`` and one exists), else None.

        A folder that already holds a checkpoint is never overwritten by a fresh run, a checkpoint of a
        different experiment or one past the asked budget is never resumed, an unreadable checkpoint is named,
        and a path through a file or a folder that may not be written is refused: each a UserError, raised
        before anything is written.
        """
        if self.path is not None:
            files.check_writable(self.path, "the run (--out DIR)")
        self._seen = self._checkpoint_stamp()
        if not self.exists(CHECKPOINT):
            return None
        if not resume:
            raise UserError(f"{self.path} already holds a run; resume it (--resume) or choose another output folder")
        ckpt = self.checkpoint()
        saved = RunConfig.from_dict(ckpt["config"])
        was, now = saved.model.arch_sha256, cfg.model.arch_sha256
        if saved.model.arch == cfg.model.arch and was != now:
            raise UserError(f"cannot resume: the code of --arch {cfg.model.arch} changed since the checkpoint "
                            f"(source sha256 {was[:12]} then, {now[:12]} now); restore it or use another folder")
        diff = config_diff(saved, cfg)
        if diff:
            raise UserError(f"cannot resume: the checkpoint's config differs in {', '.join(diff)}; "
                            "use the same settings or another output folder")
        if ckpt["g_step"] > cfg.steps:
            raise UserError(f"cannot resume: the checkpoint is at G step {ckpt['g_step']}, past the {cfg.steps} "
                            f"asked for; ask for at least {ckpt['g_step']} steps (--steps)")
        for name in LOGS:  # damaged logs are refused now, before start() takes the lock and cuts them back
            self.read_jsonl(name)
        return ckpt

    def start(self, cfg: RunConfig, resumed_at: int | None) -> None:
        """Create the folder and write the config. Resumed at G step N: log lines after N are dropped (the
        run logs them again). A fresh start: logs of an earlier attempt that never checkpointed are stale."""
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        try:
            if self._checkpoint_stamp() != self._seen:  # another run wrote it between our reading it and the lock
                raise UserError(f"{self.path} was written by another run while this one was starting; run the "
                                "command again")
            if resumed_at is None:
                for name in (*LOGS, SUMMARY):
                    (self.path / name).unlink(missing_ok=True)
            else:
                for name in LOGS:
                    keep = [r for r in self.read_jsonl(name) if r.get("g_step", 0) <= resumed_at]
                    if self.exists(name):
                        files.write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in keep))
            files.write_text(self.path / CONFIG, cfg.to_json() + "\n")
        except BaseException:
            self.unlock()
            raise

    def _checkpoint_stamp(self) -> tuple | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path / CHECKPOINT)
        except OSError:  # none yet
            return None
        return st.st_size, st.st_mtime_ns

    def lock(self) -> None:
        """Make this process the folder's only writer, until ``unlock`` or its exit. A second writer (two
        --resume at once) is refused with the owner's pid. flock, not the file's existence, is the lock: the
        kernel drops it when its owner dies, so a stale .lock (kill -9) is simply taken over."""
        if self.path is None or self._lock_fd is not None:
            return
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderInUse(f"{self.path} is being written by another run (process {owner}); wait for it to end "
                              "or choose another output folder") from None
        except OSError as e:  # a file system without locks (some network mounts): train unlocked, as before
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
        with files.naming(self.path / LOCK):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock; the file stays (unlinking it would let a waiting and a new writer both lock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- writing ----------------------------------------------------------------------------------

    def append(self, name: str, row: dict) -> None:
        """One JSON line (stats.jsonl, evals.jsonl); a torn last line is skipped by read_jsonl."""
        if self.path is not None:
            with files.naming(self.path / name), open(self.path / name, "a") as f:
                f.write(json.dumps(row) + "\n")

    def write_json(self, name: str, obj: dict) -> None:
        if self.path is not None:
            files.write_json(self.path / name, obj)

    def save_checkpoint(self, state: dict) -> None:
        """The state with a checksum of its content, which ``checkpoint`` verifies."""
        if self.path is not None:
            files.torch_save(self.path / CHECKPOINT, {**state, CHECKSUM: files.content_sha256(state)})

    def save_samples(self, images: torch.Tensor, nrow: int = 8) -> None:
        """uint8 images [N, 1, H, W] as one PNG grid."""
        self.save_grid(SAMPLES, images, nrow)

    def save_grid(self, name: str, images: torch.Tensor, nrow: int) -> None:
        """uint8 images [N, 1, H, W] as one PNG grid of ``nrow`` images a row (samples.png, neighbours.png)."""
        if self.path is None:
            return
        import torchvision

        grid = images.float() / 255.0
        files.atomic_write(self.path / name,
                           lambda p: torchvision.utils.save_image(grid, p, nrow=nrow, format="png"))

    # ---- reading ----------------------------------------------------------------------------------

    def read_jsonl(self, name: str) -> list[dict]:
        return files.read_jsonl(self.path / name, check_log_row) if self.path is not None else []

    def read_json(self, name: str) -> dict | None:
        if not self.exists(name):
            return None
        return json.loads((self.path / name).read_text())

    def config(self) -> RunConfig:
        if not self.exists(CONFIG):
            raise UserError(f"{self.path} is not a run folder (no {CONFIG})")
        try:
            return RunConfig.from_json((self.path / CONFIG).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{self.path / CONFIG} is not valid JSON ({e}); the run folder is damaged") from None

    def checkpoint(self) -> dict:
        """The checkpoint's content; a truncated or corrupt file (a copy cut short, flipped bytes: writes here are
        atomic) is a DamagedCheckpoint naming it, never a traceback from deep inside torch.load nor weights that
        are not the ones saved. A checkpoint from before checksums (no CHECKSUM key) is read unverified."""
        if not self.exists(CHECKPOINT):
            raise UserError(f"{self.path} has no {CHECKPOINT} yet; train it first")
        import torch  # here, not at the top: the CLIs check a run folder before the slow imports

        path = self.path / CHECKPOINT
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors alike: the file is unreadable
            raise DamagedCheckpoint(path, first_line(e)) from None
        if not isinstance(ckpt, dict) or not {"config", "g", "d", "g_step"} <= set(ckpt):
            raise UserError(f"{path} is not a checkpoint of this project")
        recorded = ckpt.pop(CHECKSUM, None)
        if recorded is not None and recorded != files.content_sha256(ckpt):
            raise DamagedCheckpoint(path, "its content does not match its checksum")
        _check_models(ckpt, path)
        return ckpt

    def trained(self) -> tuple[RunConfig, dict]:
        """(config, checkpoint) of a trained run, which must describe the same experiment: a config.json edited
        after training (or copied from another run) would otherwise judge these weights as another model."""
        cfg, ckpt = self.config(), self.checkpoint()
        diff = config_diff(RunConfig.from_dict(ckpt["config"]), cfg)
        if diff:
            raise UserError(f"{self.path / CONFIG} disagrees with {CHECKPOINT} in {', '.join(diff)}; restore "
                            f"the config the run was trained with, or train the run again")
        return cfg, ckpt

    def discard_damaged_checkpoint(self) -> str | None:
        """Set a damaged checkpoint aside (checkpoint.pt.damaged), so that the run starts afresh: the reason, or
        None when the checkpoint is readable (another run replaced it) or gone. Under the folder's lock, so a run
        writing a good checkpoint here meanwhile is waited for (FolderInUse), not lost."""
        self.lock()
        try:
            if not self.exists(CHECKPOINT):
                return None
            try:
                self.checkpoint()
            except DamagedCheckpoint as e:
                os.replace(self.path / CHECKPOINT, self.path / f"{CHECKPOINT}.damaged")
                return f"{e.path} cannot be read ({e.why}); set aside as {CHECKPOINT}.damaged, trained afresh"
            return None
        finally:
            self.unlock()


def config_diff(saved: RunConfig, asked: RunConfig) -> list[str]:
    """The dotted names of the fields in which two configs of a run differ (``model.head``), other than those a
    resumed run may change (RESUMABLE_CHANGES) and the GPU's index (_same_experiment)."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = (flat(_same_experiment(cfg)) for cfg in (saved, asked))
    return sorted(k for k in a.keys() | b.keys() if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k))


def _check_models(ckpt: dict, path: Path) -> None:
    """Refuse a checkpoint whose G and D weights are not those of the model its own config describes (another
    architecture, an edited file): loading them would fail deep inside torch, or load the wrong network."""
    import torch

    from gan_core.training import plugin_arch

    m = RunConfig.from_dict(ckpt["config"]).model
    with torch.device("meta"):
        nets = dict(zip("gd", plugin_arch.build_models(m), strict=True))
    for name, net in nets.items():
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        state = ckpt[name] if isinstance(ckpt[name], dict) else {}
        have = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
        if have != want:
            key = next(k for k in sorted({*want, *have}) if want.get(k) != have.get(k))
            raise UserError(f"{path} does not hold the model its config describes ({name}.{key}: "
                            f"{list(have[key]) if key in have else 'missing'} where {m.arch} depth {m.depth} has "
                            f"{list(want[key]) if key in want else 'nothing'}); delete it to start the run afresh")
