"""Everything the report shows, read into pandas: Optuna studies, their run folders, benchmark JSON.

Reading never writes: a missing SQLite or journal file is an empty storage (nothing run yet), not
a file to create. Anything unreadable (a corrupt database, a bad JSON file named by the user) is a
UserError, raised before the report writes a byte.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from ablations.storage import DEFAULT_URL
from gan_core import files
from gan_core.errors import UserError

# Bookkeeping trials of ablations.run (a worker that found no queued arm, a raced duplicate): not results.
BOOKKEEPING_ATTRS = ("spare", "duplicate")
DIGITS = range(10)


def mask_url(url: str) -> str:
    """A storage URL fit to print: a PostgreSQL password is replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


@dataclass(frozen=True)
class Keys:
    """Metric names of one study, derived from its objective: ``fid1k`` -> ``kid1k_mean``, ``precision1k``...

    Names carry the sample count (and an extractor suffix such as ``_inception``), so they are derived,
    never hard-coded. Mode coverage comes from the MNIST classifier only and has no suffix.
    """

    tag: str
    suffix: str = ""

    @classmethod
    def from_objective(cls, objective: str | None) -> Keys | None:
        m = re.fullmatch(r"fid(?P<tag>\d+k?)(?P<suffix>.*)", objective or "")
        return cls(m["tag"], m["suffix"]) if m else None

    @property
    def fid(self) -> str:
        return f"fid{self.tag}{self.suffix}"

    @property
    def kid(self) -> str:
        return f"kid{self.tag}_mean{self.suffix}"

    @property
    def precision(self) -> str:
        return f"precision{self.tag}{self.suffix}"

    @property
    def recall(self) -> str:
        return f"recall{self.tag}{self.suffix}"

    @property
    def modes(self) -> str:
        return f"modes{self.tag}"

    def share(self, digit: int) -> str:
        return f"share{self.tag}_{digit}"


@dataclass
class StudyData:
    name: str  # the Optuna study name, e.g. step_ratio-seed-quick
    kind: str | None  # the ablations registry name (user attr "study"); None for a foreign study
    attrs: dict  # the study's user attrs (budget, objective, floor, split, extractor...)
    directions: list[str]
    keys: Keys | None
    trials: pd.DataFrame  # one row per trial that is a result (bookkeeping trials dropped)
    curves: pd.DataFrame  # evals.jsonl rows of complete trials: trial, arm, seed, g_step, wall_s, metrics
    study: optuna.Study = field(repr=False)

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[self.trials["state"] == "COMPLETE"]


TRIAL_COLUMNS = ["number", "state", "arm", "seed", "value", "fid", "kid", "precision", "recall", "modes",
                 *[f"share_{d}" for d in DIGITS], "g_images_per_s", "wall_s", "g_steps", "device", "fail_kind",
                 "fail_reason", "run_dir", "samples", "params", "git_commit", "python", "torch", "optuna",
                 "torch_fidelity", "host", "batch_size"]


DEFAULT_STORAGE = DEFAULT_URL  # where ablations.run writes


def open_storage(url: str) -> optuna.storages.BaseStorage | None:
    """The storage behind ``url`` for reading, or None when its file does not exist (nothing run yet)."""
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        if not path.exists():
            return None
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as e:  # noqa: BLE001 - any reason the journal cannot be replayed: one line
            raise UserError(f"cannot read journal storage {path}: {_first_line(e)}") from None
    if "://" not in url:
        raise UserError(f"storage {url!r} is not a URL; use sqlite:///FILE, postgresql://..., or journal:FILE")
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if str(path) != ":memory:":
            if not path.parent.is_dir() and url != DEFAULT_STORAGE:  # no runs/ folder yet: nothing run yet
                raise UserError(f"sqlite storage folder {path.parent} does not exist")
            if not path.exists():
                return None
    try:
        # skip_table_creation: reading must not turn an arbitrary file into an Optuna database
        return optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception as e:  # noqa: BLE001 - sqlalchemy/driver errors vary; the user needs one line
        raise UserError(f"cannot open storage {mask_url(url)!r}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    """The first line of the innermost cause: Optuna and SQLAlchemy wrap the driver's message (``connection
    refused``, ``file is not a database``) in generic ones that do not say what went wrong."""
    seen = {id(e)}
    while (inner := e.__cause__ or e.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        e = inner
    text = str(e).strip()
    return mask_url(text.splitlines()[0]) if text else type(e).__name__


def load_studies(url: str, runs: str | Path = "runs") -> list[StudyData]:
    """Every study in the storage, with its trials and anytime curves; [] for an empty or absent storage."""
    storage = open_storage(url)
    if storage is None:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings are not the user's business
            summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
            studies = [optuna.load_study(study_name=s.study_name, storage=storage) for s in summaries]
            trials = [s.get_trials(deepcopy=False) for s in studies]
    except Exception as e:  # noqa: BLE001 - a file that is not an Optuna database, a dropped connection...
        raise UserError(f"cannot read storage {mask_url(url)!r}: {_first_line(e)}") from None
    return [study_data(s, t, Path(runs)) for s, t in zip(studies, trials, strict=True)]


def study_data(study: optuna.Study, trials: list, runs: Path) -> StudyData:
    attrs = dict(study.user_attrs)
    keys = Keys.from_objective(attrs.get("objective"))
    rows = [trial_row(t, keys, runs, study.study_name) for t in trials
            if not any(t.user_attrs.get(a) for a in BOOKKEEPING_ATTRS)]
    frame = pd.DataFrame.from_records(rows, columns=TRIAL_COLUMNS)
    curves = anytime_curves(frame)
    return StudyData(study.study_name, attrs.get("study"), attrs, [d.name.lower() for d in study.directions],
                     keys, frame, curves, study)


def trial_row(t: optuna.trial.FrozenTrial, keys: Keys | None, runs: Path, study_name: str) -> dict:
    a = t.user_attrs
    metrics = a.get("metrics") or {}
    budget = a.get("budget") or {}
    prov = a.get("provenance") or {}
    config = a.get("config") or {}

    def metric(name: str | None):
        return metrics.get(name) if name else None

    run_dir = resolve_run_dir(a.get("run_dir"), runs)
    samples = run_dir / "samples.png" if run_dir is not None and (run_dir / "samples.png").is_file() else None
    row = {
        "number": t.number, "state": t.state.name,
        "arm": a.get("arm", t.params.get("arm", f"trial {t.number}")),
        "seed": a.get("seed", t.params.get("seed")),
        # a multi-objective trial has values, not a value
        "value": t.values[0] if t.values else None,
        "fid": metric(keys and keys.fid), "kid": metric(keys and keys.kid),
        "precision": metric(keys and keys.precision), "recall": metric(keys and keys.recall),
        "modes": metric(keys and keys.modes),
        "g_images_per_s": budget.get("g_images_per_s"), "wall_s": budget.get("wall_s"),
        "g_steps": budget.get("g_steps"), "device": budget.get("device"),
        "fail_kind": a.get("fail_kind") if t.state.name == "FAIL" else None,
        "fail_reason": a.get("fail_reason") if t.state.name == "FAIL" else None,
        "run_dir": run_dir, "samples": samples, "params": dict(t.params),
        "batch_size": (config.get("schedule") or {}).get("batch_size"),
        **{k: prov.get(k) for k in ("git_commit", "python", "torch", "optuna", "torch_fidelity", "host")},
    }
    for d in DIGITS:
        row[f"share_{d}"] = metric(keys and keys.share(d))
    if t.state.name == "FAIL" and not row["fail_kind"]:
        # failed by Optuna itself (a worker's heartbeat went stale), not by the trial's own handler
        row["fail_kind"], row["fail_reason"] = "worker lost", "its worker stopped sending heartbeats"
    return row


def resolve_run_dir(recorded: str | None, runs: Path) -> Path | None:
    """A trial's run folder: as recorded, or moved under ``runs`` (the report may be built elsewhere)."""
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_dir():
        return path
    # ablations.trial lays folders out as <runs>/<study name>/<arm slug>/seed<N>: rebase the last three parts
    if len(path.parts) >= 3 and (runs.joinpath(*path.parts[-3:])).is_dir():
        return runs.joinpath(*path.parts[-3:])
    return None


CURVE_STATES = ("COMPLETE", "PRUNED", "FAIL")  # a pruned or diverged trial's curve shows where it stopped


def anytime_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """evals.jsonl of every finished trial, one row per evaluation, tagged with its trial, arm, seed and state.

    A retried trial shares its run folder with the attempt before it: each folder is read once, for
    its most final trial (complete before pruned before failed).
    """
    frames, seen = [], set()
    rank = {s: i for i, s in enumerate(CURVE_STATES)}
    ranked = trials[trials["state"].isin(CURVE_STATES)].sort_values("state", key=lambda s: s.map(rank), kind="stable")
    for t in ranked.itertuples():
        if t.run_dir is None or t.run_dir in seen:
            continue
        seen.add(t.run_dir)
        rows = files.read_jsonl(t.run_dir / "evals.jsonl")
        if rows:
            frames.append(pd.DataFrame(rows).assign(trial=t.number, arm=t.arm, seed=t.seed, state=t.state.lower()))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curve_metric(curves: pd.DataFrame, kind: str = "fid") -> str | None:
    """The intermediate metric column of the curves (``fid200``: its count differs from the final one)."""
    names = sorted(c for c in curves.columns if re.fullmatch(rf"{kind}\d+k?" + ("_mean" if kind == "kid" else ""), c))
    return names[0] if names else None


# ---- benchmarks --------------------------------------------------------------------------------------

BENCH_STATS = ("min", "median", "mean", "ops", "rounds")


def default_benchmark_files(folder: str | Path = "benchmarks/results") -> list[Path]:
    return sorted(Path(folder).glob("*.json"))


def load_benchmarks(paths: list[str | Path], skipped: list[str] | None = None) -> pd.DataFrame:
    """One row per benchmark case of every pytest-benchmark JSON file, extra_info flattened into columns.

    Tolerant of missing keys (the suites grow). A file that is not pytest-benchmark JSON is a
    UserError, unless ``skipped`` is given: then the file is left out and the reason appended to it
    (files found by globbing must not fail a study's report after the study has run).
    """
    rows = []
    for p in map(Path, paths):
        try:
            doc = _benchmark_doc(p)
        except UserError as e:
            if skipped is None:
                raise
            skipped.append(str(e))
            continue
        machine = doc.get("machine_info") or {}
        cpu = machine.get("cpu") or {}
        for b in doc["benchmarks"]:
            if not isinstance(b, dict):
                continue
            stats = b.get("stats") or {}  # None under --benchmark-disable
            extra = b.get("extra_info") or {}
            row = {"file": p.name, "name": b.get("name"), "group": b.get("group") or "",
                   "host": machine.get("node"), "cpu": cpu.get("brand_raw"),
                   "datetime": doc.get("datetime"), "commit": (doc.get("commit_info") or {}).get("id")}
            row.update({f"stat_{k}": stats.get(k) for k in BENCH_STATS})
            # nested values (config, metrics, parts) do not fit a table cell
            row.update({k: v for k, v in extra.items() if not isinstance(v, dict | list)})
            rows.append(row)
    return pd.DataFrame.from_records(rows)


def _benchmark_doc(p: Path) -> dict:
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise UserError(f"cannot read benchmark file {p}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"benchmark file {p} is not valid JSON: {_first_line(e)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UserError(f"benchmark file {p} has no 'benchmarks' list; write it with "
                        f"pytest benchmarks/ --benchmark-only --benchmark-json {p}")
    return doc
