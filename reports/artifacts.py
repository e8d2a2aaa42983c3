"""A trial's files in Optuna's artifact store, for hosts that share only the study storage.

What the page and a retry need from a run folder goes to the store (``python -m ablations.run --artifacts PATH``):
at every checkpoint the checkpoint and the logs up to it (what a resume continues from), at the end also the sample
grid, the summary and the final metrics. Each file is an Optuna artifact of its trial (``upload_artifact``: its
meta in the trial's system attrs, where optuna-dashboard lists it). Once a snapshot's files are all written, the
trial's user attr ``artifacts`` names them and the G step they reach: written last, it never names a half-written
file, and Optuna copies it into a retry. The report (reports.load) and a retry on a host that lacks the run folder
(ablations.trial) read the files back with ``download_artifact``.

Here, not in ablations, because the report reads what the runner writes, and reports does not import ablations.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from gan_core import files
from gan_core.errors import UserError
from gan_core.training.run_folder import CHECKPOINT, CONFIG, EVALS, METRICS, SAMPLES, STATS, SUMMARY

SNAPSHOT = "artifacts"  # the trial's user attr: {"g_step": N, "files": {file name: artifact id}}
STORE = "artifact_store"  # the study's user attr: where its runner put the store (a default for the report)
UPLOADED = (CONFIG, STATS, EVALS, CHECKPOINT, SAMPLES, SUMMARY, METRICS)
FOR_THE_PAGE = (CONFIG, STATS, EVALS, SAMPLES, SUMMARY, METRICS)  # all but the checkpoint (the large one)


def open_store(path: str | os.PathLike, create: bool) -> FileSystemArtifactStore:
    """Optuna's file-system store at ``path`` (a folder every host sees: NFS, a bucket mounted with s3fs...).
    The runner creates it; a reader asked for one that does not exist is told so (UserError)."""
    folder = Path(path)
    if create:
        files.check_writable(folder, "the artifact store (--artifacts)")
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise UserError(f"artifact store {folder} does not exist; give the folder the study's runner used "
                        "(--artifacts)")
    return FileSystemArtifactStore(folder)


class Uploads:
    """One trial's uploads from its run folder. A file unchanged since the last snapshot (same size and mtime) is
    not uploaded again: the final metrics reuse the final checkpoint's upload. A checkpoint that a newer snapshot
    replaced is removed from the store (the blog's model's is 119 MB: four per trial would fill a disk); Optuna
    keeps its meta, there being no API to drop it."""

    def __init__(self, store, trial: optuna.Trial, folder: Path):
        self.store, self.trial, self.folder = store, trial, Path(folder)
        self.done: dict[str, tuple[tuple, str]] = {}  # file name -> (size, mtime) when uploaded, artifact id
        self.checkpoint: str | None = None  # the id of the last checkpoint this trial uploaded (a retry's first
        # snapshot keeps the one it resumed from: another attempt's)

    def snapshot(self, g_step: int) -> None:
        ids = {}
        for name in UPLOADED:
            path = self.folder / name
            try:
                st = path.stat()
            except OSError:  # not written (yet): samples and metrics come at the end
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if name not in self.done or self.done[name][0] != stamp:
                self.done[name] = stamp, upload_artifact(artifact_store=self.store, file_path=str(path),
                                                         study_or_trial=self.trial)
            ids[name] = self.done[name][1]
        self.trial.set_user_attr(SNAPSHOT, {"g_step": g_step, "files": ids})  # then the replaced checkpoint goes
        replaced, self.checkpoint = self.checkpoint, ids.get(CHECKPOINT)
        if replaced is not None and replaced != self.checkpoint:
            self.store.remove(replaced)


def latest(trials, arm: str, seed: int) -> dict | None:
    """The snapshot that reaches furthest among the trials of this arm and seed (a retry, a trial queued again
    after an interrupt, a raced duplicate: each ran the same run folder, on whichever host)."""
    found = [t.user_attrs[SNAPSHOT] for t in trials
             if t.user_attrs.get(SNAPSHOT) and t.user_attrs.get("arm") == arm and t.user_attrs.get("seed") == seed]
    return max(found, key=lambda s: s["g_step"], default=None)


def fetch(store, snapshot: dict, folder: Path, names=UPLOADED) -> list[str]:
    """The snapshot's files (those among ``names``) into ``folder``, each written atomically; a file missing from
    the store is left out. Returns the names fetched."""
    fetched = []
    for name, artifact_id in snapshot["files"].items():
        if name not in names:
            continue
        try:
            files.atomic_write(folder / name, lambda tmp, a=artifact_id: _download(store, a, tmp))
        except ArtifactNotFound:
            continue
        fetched.append(name)
    return fetched


def _download(store, artifact_id: str, tmp: Path) -> None:
    tmp.unlink()  # download_artifact refuses to overwrite; atomic_write made the temporary file
    download_artifact(artifact_store=store, file_path=str(tmp), artifact_id=artifact_id)


def page_copy(store, snapshot: dict) -> Path:
    """A local copy of what the page reads from a trial's run folder (not its checkpoint), in the cache: artifacts
    never change once written, so a copy named by their ids is never stale, and a second build fetches nothing."""
    ids = sorted(f"{n}={a}" for n, a in snapshot["files"].items() if n in FOR_THE_PAGE)
    folder = files.cache_dir() / "artifacts" / hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24]
    if not (folder / ".complete").is_file():
        fetch(store, snapshot, folder, FOR_THE_PAGE)
        files.write_text(folder / ".complete", "\n".join(ids) + "\n")
    return folder
