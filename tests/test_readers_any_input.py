"""Every reader of a file or record the suite did not just write itself, fed anything: it returns a result or raises
one UserError (a clear line for the user), never another exception. Hypothesis draws whole documents at random, and
valid documents with one value replaced by anything, which is where a hostile or careless edit lands.

Readers: stats.jsonl and evals.jsonl (RunFolder.read_jsonl), config.json (RunFolder.config), a pytest-benchmark
file (reports.load.load_benchmarks), a study's and a trial's user attrs (reports.record.checked_attrs,
TrialRecord.of, reports.load.trial_row).
"""

from __future__ import annotations

import json

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gan_core.errors import UserError
from gan_core.training.config import RunConfig
from gan_core.training.run_folder import CONFIG, EVALS, STATS, RunFolder
from reports import load, record
from tests import report_fixtures as rf

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


def paths(doc, prefix=()):
    """Every place in a JSON document where a value sits."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


@st.composite
def edited(draw, doc):
    """``doc`` with the value at one of its places replaced by any JSON value (or a key removed)."""
    doc = json.loads(json.dumps(doc))
    where = draw(st.sampled_from(list(paths(doc))[1:]))
    parent = doc
    for step in where[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[where[-1]]
    else:
        parent[where[-1]] = draw(json_values)
    return doc


def documents(valid):
    """Random bytes, random JSON, or ``valid`` edited in one place, as bytes."""
    as_bytes = st.builds(lambda d: json.dumps(d, allow_nan=True).encode(), json_values | edited(valid))
    return st.binary(max_size=200) | as_bytes


def result_or_user_error(read):
    try:
        return read()
    except UserError as e:
        assert "\n" not in str(e).strip(), str(e)
        return None


VALID_LOG = [{"g_step": 0, "d_step": 0, "wall_s": 0.0, "extractor": "mnist-cnn-v1-81967625", "fid100": 280.7},
             {"g_step": 4, "d_step": 4, "wall_s": 1.07, "loss_d": 1.2, "loss_g": 0.8, "g_images_per_s": 88.2}]


@FAST
@given(lines=st.lists(documents(VALID_LOG[0]) | documents(VALID_LOG[1]), max_size=4), torn=st.binary(max_size=20))
def test_a_log_reads_as_rows_of_numbers_or_is_refused_in_one_line(tmp_path, lines, torn):
    folder = RunFolder(tmp_path)
    for name in (STATS, EVALS):
        (tmp_path / name).write_bytes(b"\n".join([*lines, torn]))  # the last line, without a newline: torn
        rows = result_or_user_error(lambda name=name: folder.read_jsonl(name))
        for row in rows or []:  # what the loop on resume, the progress bar and the report rely on
            assert isinstance(row["g_step"], int) and row["g_step"] >= 0
            assert all(v is None or isinstance(v, int | float | str) for v in row.values())


@FAST
@given(doc=documents(RunConfig().to_dict()))
def test_a_config_json_reads_as_a_run_config_or_is_refused_in_one_line(tmp_path, doc):
    (tmp_path / CONFIG).write_bytes(doc)
    cfg = result_or_user_error(RunFolder(tmp_path).config)
    assert cfg is None or isinstance(cfg, RunConfig)


@pytest.fixture(scope="module")
def bench_doc(tmp_path_factory):
    return rf.benchmark_json(tmp_path_factory.mktemp("bench") / "cpu.json")


@FAST
@given(data=st.data())
def test_a_benchmark_file_reads_as_a_table_or_is_refused_in_one_line(tmp_path, bench_doc, data):
    path = tmp_path / "bench.json"
    path.write_bytes(data.draw(documents(bench_doc)))
    frame = result_or_user_error(lambda: load.load_benchmarks([path]))
    if frame is not None and len(frame):  # what reports.sections.benchmark_section relies on
        assert frame["name"].map(lambda x: isinstance(x, str)).all()
        assert frame["group"].map(lambda x: isinstance(x, str)).all()
        for col in ("g_images_per_s", *(f"stat_{k}" for k in load.BENCH_STATS)):
            if col in frame:
                assert frame[col].map(lambda x: x is None or isinstance(x, int | float)).all(), col


VALID_STUDY = {"study": "width", "base": "dcgan-cpu", "budget": {"name": "smoke", "g_steps": 4, "eval_n": 100,
               "eval_every": 4, "eval_n_intermediate": 100, "batch_size": 16, "seeds": 1, "joint_trials": 3,
               "note": "x"}, "objective": "fid100", "data": "embedded", "split": [4000, 1000],
               "extractor": "mnist-cnn-v1-81967625", "question": "q", "knob": "k", "arms": ["1/2", "1"],
               "blog_arm": None, "base_arm": "1/2", "base_why": "", "shrink": 0.125, "seeds": 1,
               "floor": {"fid100": 1.27}, "catalogue": [{"name": "width", "question": "q"}]}
VALID_TRIAL = {"arm": "1/2", "seed": 0, "run_dir": "runs/x/1_2/seed0", "config": {"schedule": {"batch_size": 16}},
               "provenance": {"git_commit": "abc", "git_dirty": False},
               "metrics": {"fid100": 279.3, "kid100_mean": 41.3, "modes100": 1.0, "share100_8": 1.0},
               "metrics_step0": {"fid100": 280.7}, "channels": {"g": [16, 8]},
               "spent": {"g_steps": 4, "d_steps": 4, "real_images": 64, "wall_s": 1.1, "flops": 2.5e8,
                         "g_images_per_s": 88.2, "device": "cpu", "device_name": "cpu", "seeds_in_pass": [0]}}


@FAST
@given(attrs=json_values | edited(VALID_STUDY))
def test_a_studys_attrs_are_of_their_kind_or_refused_in_one_line(attrs):
    if isinstance(attrs, dict):
        result_or_user_error(lambda: record.checked_attrs(attrs, record.STUDY_ATTRS, "study 'x'"))


@FAST
@given(attrs=edited(VALID_TRIAL), state=st.sampled_from(["COMPLETE", "FAIL"]))
def test_a_trials_attrs_read_as_a_row_or_are_refused_in_one_line(tmp_path, attrs, state):
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState[state], user_attrs=attrs,
                                      value=1.0 if state == "COMPLETE" else None)
    row = result_or_user_error(lambda: load.trial_row(record.TrialRecord.of(trial, "x"),
                                                      load.MetricNames.from_fid("fid100"), tmp_path, "x"))
    if row is not None:  # what reports.stats and reports.sections compute with
        for key in ("fid", "kid", "modes", "fid_step0", "g_images_per_s", "wall_s"):
            assert row[key] is None or isinstance(row[key], int | float) and not isinstance(row[key], bool), key
        assert isinstance(row["arm"], str)
        assert row["seed"] is None or isinstance(row["seed"], int)
