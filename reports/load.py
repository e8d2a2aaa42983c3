"""Everything the report shows, read into pandas: Optuna studies, their run folders, benchmark JSON, and the
results folders of generators scored with ``python -m gan_core.evaluate --out DIR/NAME`` (--scores DIR).

Reading never writes: a missing SQLite or journal file is an empty storage (nothing run yet), not
a file to create. Anything unreadable (a corrupt database, a bad JSON file named by the user) is a
UserError, raised before the report writes a byte.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from gan_core import storage
from gan_core.errors import UserError, first_line, mask_passwords
from gan_core.judging.extractor import SECOND as SECOND_JUDGE
from gan_core.judging.metrics import MetricNames
from gan_core.judging.protocol import PROTOCOL_KEY
from gan_core.training.run_folder import EVALS, METRICS, NEIGHBOURS, SAMPLES, RunFolder
from reports import artifacts as artifact_store
from reports.record import NUMBER, STUDY_ATTRS, Outcome, Required, TrialRecord, check, checked_attrs, number

DIGITS = range(10)
OLD_BLOG_ARM = "baseline"  # the blog's arm in studies recorded before 2026-12-03 (blog_arm since)


@dataclass
class StudyData:
    name: str  # the Optuna study name, e.g. step_ratio-seed-quick
    kind: str | None  # the ablations registry name (user attr "study"); None for a foreign study
    attrs: dict  # the study's user attrs (budget, objective, floor, split, extractor...)
    directions: list[str]
    names: MetricNames | None  # the objective's metric names (fid1k, kid1k_mean, ...); None without one
    trials: pd.DataFrame  # one row per trial that is a result (bookkeeping trials dropped)
    curves: pd.DataFrame  # evals.jsonl rows of complete trials: trial, arm, seed, g_step, wall_s, metrics
    study: optuna.Study = field(repr=False)
    # a tuning phase's trials (same columns as ``trials``), kept apart: they choose the tuned arms, they are no arm's
    # seeds (ablations.studies.Tuning); empty for a study without one
    tuning: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRIAL_COLUMNS))

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[self.trials["state"] == "COMPLETE"]

    # What ablations.run stored about its study (Study.description()): the report never imports the registry.
    @property
    def question(self) -> str:
        return self.attrs.get("question") or ""

    @property
    def knob(self) -> str:
        return self.attrs.get("knob") or ""

    @property
    def arms(self) -> list[str]:
        return list(self.attrs.get("arms") or [])

    @property
    def blog_arm(self) -> str | None:
        """The arm that is the blog's own setting."""
        old = self.attrs.get(OLD_BLOG_ARM)  # the writers refuse it (reports.record); a study of before may hold it
        return self.attrs.get("blog_arm", old if isinstance(old, str) else None)

    @property
    def base_arm(self) -> str | None:
        """The arm that trains the study's base itself (ablations.settings.base_arm)."""
        return self.attrs.get("base_arm")

    @property
    def is_grid(self) -> bool:
        return bool(self.arms)

    @property
    def curve_names(self) -> MetricNames | None:
        """The anytime metrics' names (``fid200``...): the budget's intermediate sample count, which the study
        records (a curve's step-0 row also holds the final count's, fid1k, for "did it learn?"); None without it."""
        n = (self.attrs.get("budget") or {}).get("eval_n_intermediate")
        return MetricNames.for_count(n) if n else None


# a grid arm judged at equal compute too (ablations.trial.equal_points): its FID and KID there, its G steps there, and
# the FLOPs every arm had (the reference's in the budget); absent from studies run before it
EQUAL_FLOPS_COLUMNS = ("fid_flops", "kid_flops", "g_steps_flops", "reference_flops", "flops_reference")
# the memorization check (gan_core.judging.memorization), MetricNames properties; absent from studies run before it
MEMORIZATION_COLUMNS = ("copy", "copy_p", "copy_pixels", "copy_pixels_p")
# the second judge's final metrics (gan_core.judging.extractor.SECOND: fid1k_lenet...) under the first judge's column
# names with its suffix (fid_lenet, kid_lenet...), and its name; absent (NaN, None) from studies run before it
SECOND_JUDGE_METRICS = ("fid", "kid", "precision", "recall")
SECOND_JUDGE_COLUMNS = tuple(f"{m}{SECOND_JUDGE.suffix}" for m in SECOND_JUDGE_METRICS)
SECOND_JUDGE_NAME = f"extractor{SECOND_JUDGE.suffix}"  # the metrics' key and the column: mnist-lenet-v1-<sha8>
TRIAL_COLUMNS = ["number", "state", "arm", "seed", "value", "fid", "kid", "precision", "recall",
                 *SECOND_JUDGE_COLUMNS, SECOND_JUDGE_NAME, "modes",
                 "fid_step0", "modes_step0", *EQUAL_FLOPS_COLUMNS, "channels", *MEMORIZATION_COLUMNS,
                 *[f"share_{d}" for d in DIGITS], "g_images_per_s", "wall_s", "g_steps", "device", "fail_kind",
                 "fail_reason", "restarted", "run_dir", "samples", "neighbours", "params", "git_commit", "python",
                 "torch", "optuna", "torch_fidelity", "host", "batch_size", "protocol", "phase", "family"]


def open_storage(url: str) -> optuna.storages.BaseStorage | None:
    """The storage behind ``url`` for reading, or None when its file does not exist (nothing run yet)."""
    where = storage.parse(url)
    if where.kind == "journal":
        return open_journal(where.path) if where.path.exists() else None
    if where.path is not None:
        if not where.path.parent.is_dir() and not where.is_default:  # no runs/ folder yet: nothing run yet
            raise UserError(f"sqlite storage folder {where.path.parent} does not exist")
        if not where.path.exists():
            return None
    try:
        # skip_table_creation: reading must not turn an arbitrary file into an Optuna database
        return optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception as e:  # noqa: BLE001 - sqlalchemy/driver errors vary; the user needs one line
        raise UserError(f"cannot open storage {where.masked!r}: {first_line(e)}") from None


def open_journal(path: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file storage at ``path`` (the runner's and the report's); one that cannot be replayed (not
    JSON, JSON without an op code) is a UserError."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        _check_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:  # noqa: BLE001 - any reason the journal cannot be replayed: one line
        raise UserError(f"cannot read journal storage {path} ({first_line(e)}): not an Optuna journal file, or a "
                        "damaged one") from None


def _check_journal(path: Path) -> None:
    """Every complete line an Optuna operation (a JSON object with an op code). Optuna skips a last line it cannot
    parse (torn by a killed writer), and then appends after it: a file of garbage would be written into."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if line.endswith(b"\n") and line.strip():
                op = json.loads(line)
                if not isinstance(op, dict) or "op_code" not in op:
                    raise ValueError(f"line {n} has no op code")


def load_studies(url: str, runs: str | Path = "runs", artifacts: str | None = None) -> list[StudyData]:
    """Every study in the storage, with its trials and anytime curves; [] for an empty or absent storage.

    A trial whose run folder is not under ``runs`` here is read from the artifact store (reports.artifacts):
    ``artifacts``, else the one its study's runner recorded, when that folder exists on this host."""
    store = artifact_store.open_store(artifacts, create=False) if artifacts else None
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
        raise UserError(f"cannot read storage {mask_passwords(url)!r}: {first_line(e)}") from None
    return [study_data(s, t, Path(runs), store) for s, t in zip(studies, trials, strict=True)]


def study_data(study: optuna.Study, trials: list, runs: Path, store=None) -> StudyData:
    attrs = checked_attrs(dict(study.user_attrs), STUDY_ATTRS, f"study {study.study_name!r}")
    names = MetricNames.from_fid(attrs.get("objective"))
    recorded = attrs.get(artifact_store.STORE)
    if store is None and recorded and Path(recorded).is_dir():
        store = artifact_store.open_store(recorded, create=False)
    records = (TrialRecord.of(t, study.study_name) for t in trials)
    rows = [trial_row(r, names, runs, study.study_name, store) for r in records if r.outcome is not Outcome.BOOKKEEPING]
    frame = pd.DataFrame.from_records(rows, columns=TRIAL_COLUMNS)
    tuning = frame["phase"] == "tuning"
    frame, tuning = frame[~tuning].reset_index(drop=True), frame[tuning].reset_index(drop=True)
    curves = anytime_curves(frame)
    return StudyData(study.study_name, attrs.get("study"), attrs, [d.name.lower() for d in study.directions],
                     names, frame, curves, study, tuning)


def trial_row(t: TrialRecord, names: MetricNames | None, runs: Path, study_name: str, store=None) -> dict:
    """A result's row of the trials frame, from its record."""
    a = t.attrs
    metrics = a.get("metrics") or {}
    step0 = a.get("metrics_step0") or {}  # the untrained generator, same sample count (ablations.trial)
    spent = a.get("spent") or {}
    at_flops, equal_flops = a.get("metrics_equal_flops") or {}, a.get("equal_flops") or {}
    prov = a.get("provenance") or {}
    config = a.get("config") or {}

    def metric(name: str | None, of: dict = metrics, attr: str = "metrics"):
        return number(of.get(name), f"study {study_name!r} trial #{t.number}: {attr}[{name!r}]") if name else None

    run_dir, samples, neighbours = _run_folder(a, runs, store)
    row = {
        "number": t.number, "state": t.state,
        "arm": a.get("arm", t.params.get("arm", f"trial {t.number}")),
        "seed": a.get("seed", t.params.get("seed")),
        "value": t.value,
        "fid": metric(names and names.fid), "kid": metric(names and names.kid),
        "precision": metric(names and names.precision), "recall": metric(names and names.recall),
        "modes": metric(names and names.modes),
        "fid_step0": metric(names and names.fid, step0, "metrics_step0"),
        "modes_step0": metric(names and names.modes, step0, "metrics_step0"),
        "fid_flops": metric(names and names.fid, at_flops, "metrics_equal_flops"),
        "kid_flops": metric(names and names.kid, at_flops, "metrics_equal_flops"),
        "g_steps_flops": equal_flops.get("g_steps"), "reference_flops": equal_flops.get("reference_flops"),
        "flops_reference": equal_flops.get("reference"),
        "channels": a.get("channels"),
        "g_images_per_s": spent.get("g_images_per_s"), "wall_s": spent.get("wall_s"),
        "g_steps": spent.get("g_steps"), "device": spent.get("device"),
        "fail_kind": t.kind, "fail_reason": t.reason,
        "restarted": a.get("restarted"),  # why it trained again from scratch (its checkpoint was damaged)
        "run_dir": run_dir, "samples": samples, "neighbours": neighbours, "params": t.params,
        "batch_size": (config.get("schedule") or {}).get("batch_size"),
        "protocol": metrics.get(PROTOCOL_KEY),  # how its metrics were measured (gan_core.judging.protocol)
        "phase": a.get("phase"), "family": a.get("family"),  # a tuning trial's (None for the verdict's)
        **{k: prov.get(k) for k in ("git_commit", "python", "torch", "optuna", "torch_fidelity", "host")},
    }
    row.update({f"share_{d}": metric(names and names.share(d)) for d in DIGITS})
    row.update({column: metric(names and getattr(names, column)) for column in MEMORIZATION_COLUMNS})
    second = second_judge_names(names)
    row.update({column: metric(second and getattr(second, name))
                for name, column in zip(SECOND_JUDGE_METRICS, SECOND_JUDGE_COLUMNS, strict=True)})
    row[SECOND_JUDGE_NAME] = metrics.get(SECOND_JUDGE_NAME)
    return row


def _run_folder(a: dict, runs: Path, store) -> tuple[Path | None, Path | None, Path | None]:
    """(a trial's run folder: here, or the page's copy of its artifacts; its samples.png, its neighbours.png), each
    None when absent."""
    run_dir = resolve_run_dir(a.get("run_dir"), runs)
    if run_dir is None and store is not None and a.get(artifact_store.SNAPSHOT):
        run_dir = artifact_store.page_copy(store, a[artifact_store.SNAPSHOT])
    samples, neighbours = (run_dir / name if run_dir is not None and (run_dir / name).is_file() else None
                           for name in (SAMPLES, NEIGHBOURS))
    return run_dir, samples, neighbours


def second_judge_names(names: MetricNames | None) -> MetricNames | None:
    """The second judge's names at the objective's sample count (``fid1k`` -> ``fid1k_lenet``)."""
    return names and MetricNames(names.tag, SECOND_JUDGE.suffix)


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

    A retried trial continues the run of the attempt before it (its run folder, or on another host that folder's
    snapshot in the artifact store): each run, an arm and seed, is read once, for its most final trial (complete
    before pruned before failed).
    """
    frames, seen = [], set()
    rank = {s: i for i, s in enumerate(CURVE_STATES)}
    ranked = trials[trials["state"].isin(CURVE_STATES)].sort_values("state", key=lambda s: s.map(rank), kind="stable")
    for t in ranked.itertuples():
        if t.run_dir is None or (t.arm, t.seed) in seen:
            continue
        seen.add((t.arm, t.seed))
        rows = RunFolder(t.run_dir).read_jsonl(EVALS)
        if rows:
            frames.append(pd.DataFrame(rows).assign(trial=t.number, arm=t.arm, seed=t.seed, state=t.state.lower()))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---- scored generators (python -m gan_core.evaluate --samples/--generator --out DIR/NAME) -----------------------

DEFAULT_SCORES = "results"


@dataclass
class Score:
    name: str  # the results folder's name
    metrics: dict  # its metrics.json, as gan_core.judging.scoring.score wrote it
    samples: Path | None  # its samples.png, when there is one


def load_scores(folder: str | Path | None = None) -> list[Score]:
    """Every results folder (a sub-folder holding metrics.json) under ``folder``, by name; the default folder
    may be absent (nothing scored yet), a folder named by the user must exist. An unreadable metrics.json is one
    line (UserError)."""
    root = Path(folder or DEFAULT_SCORES)
    if not root.is_dir():
        if folder is None:
            return []
        raise UserError(f"--scores {root} is not a folder; give the folder whose sub-folders hold metrics.json "
                        "(python -m gan_core.evaluate --samples ... --out DIR/NAME)")
    scores = []
    for sub in sorted(p for p in root.iterdir() if (p / METRICS).is_file()):
        try:
            doc = json.loads((sub / METRICS).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{sub / METRICS} cannot be read: {first_line(e)}") from None
        if not isinstance(doc, dict):
            raise UserError(f"{sub / METRICS} is not a metrics object")
        scores.append(Score(sub.name, doc, sub / SAMPLES if (sub / SAMPLES).is_file() else None))
    return scores


# ---- benchmarks --------------------------------------------------------------------------------------

BENCH_STATS = ("min", "median", "mean", "ops", "rounds")
# What the report reads of a pytest-benchmark file (checked like the study attrs above); extra_info holds what each
# suite adds (benchmarks/README.md), of which the figures plot g_images_per_s
BENCH_DOC = {
    "benchmarks": Required([{"name": Required(str), "group": (str, type(None)), "stats": {str: object, **{
        k: (int, float, type(None)) for k in BENCH_STATS}}, "extra_info": {str: object, "g_images_per_s": NUMBER}}]),
    "machine_info": {"node": (str, type(None)), "cpu": {"brand_raw": (str, type(None))}},
    "commit_info": {"id": (str, type(None))}, "datetime": (str, type(None)),
}


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
        raise UserError(f"benchmark file {p} is not valid JSON: {first_line(e)}") from None
    how = f"write it with pytest benchmarks/ --benchmark-only --benchmark-json {p}"
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UserError(f"benchmark file {p} has no 'benchmarks' list; {how}")
    try:
        check(doc, BENCH_DOC, "")
    except UserError as e:
        raise UserError(f"benchmark file {p}: the value at {e}; {how}") from None
    return doc
