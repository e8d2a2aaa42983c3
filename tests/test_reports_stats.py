"""Unit tests of the report's numbers: bootstrap CIs, verdicts, metric names, tolerant readers."""

import json
import math

import numpy as np
import pytest

from gan_core import files
from gan_core.errors import mask_passwords
from reports import load, stats


def test_bootstrap_ci_brackets_the_mean_and_stays_inside_the_data():
    values = [3.0, 5.0, 4.0, 8.0]
    s = stats.summarise(values)
    assert s.n == 4 and s.mean == pytest.approx(5.0)
    assert min(values) <= s.lo < s.mean < s.hi <= max(values)
    assert stats.summarise(values) == s  # a fixed RNG seed: the page is reproducible


def test_bootstrap_ci_has_the_textbook_width_for_a_large_normal_sample():
    x = np.random.default_rng(3).normal(10.0, 2.0, size=200)
    s = stats.summarise(x.tolist())
    expected = 2 * 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert s.hi - s.lo == pytest.approx(expected, rel=0.15)


def test_no_ci_from_one_value_and_nothing_from_none():
    one = stats.summarise([7.0])
    assert one.n == 1 and one.mean == 7.0 and not one.has_ci
    assert stats.summarise([]).n == 0
    assert stats.summarise([None, float("nan"), 2.0, 4.0]).n == 2  # missing metrics are dropped
    same = stats.summarise([2.5, 2.5, 2.5])
    assert (same.lo, same.hi) == (2.5, 2.5)


def test_difference_is_second_minus_first():
    d = stats.difference([1.0, 1.1, 0.9], [5.0, 5.1, 4.9])
    assert d.mean == pytest.approx(4.0) and 0 < d.lo <= d.mean <= d.hi


def test_a_clearly_better_arm_is_named_as_a_significant_winner():
    v = stats.verdict({"A": [50.0, 51.0, 49.5], "B": [40.0, 40.5, 39.8], "C": [60.0, 61.0, 59.0]}, "fid1k")
    assert v.best == "B" and v.runner_up == "A" and v.significant
    assert v.text.startswith("B is best on fid1k") and "significant" in v.text and "3 vs 3 seeds" in v.text
    assert v.lead.lo > 0


def test_overlapping_arms_give_no_clear_winner():
    v = stats.verdict({"A": [50.0, 40.0, 45.0], "B": [44.0, 48.0, 42.0]}, "fid1k")
    assert not v.significant
    assert v.text.startswith("no clear winner") and "includes 0" in v.text


@pytest.mark.parametrize("groups", [
    {"A": [50.0], "B": [40.0], "C": [60.0]},  # one seed everywhere
    {"A": [50.0, 50.1, 49.9], "B": [40.0]},  # the apparent winner has one seed
    {"A": [50.0], "B": [40.0, 40.1, 39.9]},  # the runner-up has one seed
])
def test_one_seed_never_gives_a_verdict(groups):
    v = stats.verdict(groups, "fid1k")
    assert not v.significant
    assert v.text.startswith("only one seed: no verdict")


def test_verdict_without_enough_arms():
    assert "no finished trials" in stats.verdict({"A": [], "B": [None]}, "fid1k").text
    only = stats.verdict({"A": [1.0, 2.0], "B": []}, "fid1k")
    assert not only.significant and "only one arm" in only.text


def test_costliest_quirk_is_the_fix_with_the_largest_significant_gain():
    groups = {"blog": [90.0, 91.0, 89.0], "fresh noise": [55.0, 56.0, 54.0], "1 channel": [88.0, 89.0, 87.5],
              "all fixed": [30.0, 31.0, 29.0]}  # all fixed is not a single quirk: never the answer
    v = stats.costliest_quirk(groups, "blog", "fid1k")
    assert v.best == "fresh noise" and v.significant and "costs the most" in v.text
    assert stats.effects(groups, "blog")[0].arm == "all fixed"  # the table still lists it, sorted by gain


def test_costliest_quirk_without_a_clear_answer():
    noisy = {"blog": [90.0, 80.0, 85.0], "fresh noise": [84.0, 86.0, 82.0]}
    assert not stats.costliest_quirk(noisy, "blog", "fid1k").significant
    worse = {"blog": [50.0, 51.0], "fresh noise": [60.0, 61.0]}
    assert "no single fix lowers" in stats.costliest_quirk(worse, "blog", "fid1k").text
    single = {"blog": [50.0], "fresh noise": [40.0]}
    assert stats.costliest_quirk(single, "blog", "fid1k").text.startswith("only one seed: no verdict")
    assert "no finished trial" in stats.costliest_quirk({"fresh noise": [1.0, 2.0]}, "blog", "fid1k").text


def test_postgres_passwords_are_masked():
    assert mask_passwords("postgresql://gan:s3cret@db:5432/studies") == "postgresql://gan:***@db:5432/studies"
    assert mask_passwords("sqlite:///runs/ablations.db") == "sqlite:///runs/ablations.db"


def test_a_torn_jsonl_line_is_skipped(tmp_path):
    p = tmp_path / "evals.jsonl"
    p.write_text('{"g_step": 1}\n{"g_step": 2}\n{"g_st')
    assert files.read_jsonl(p) == [{"g_step": 1}, {"g_step": 2}]
    assert files.read_jsonl(tmp_path / "missing.jsonl") == []


def test_benchmark_json_with_missing_keys_is_read(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"benchmarks": [
        {"name": "a", "group": None, "stats": None},  # --benchmark-disable leaves no stats
        {"name": "b", "stats": {"min": 0.5}, "extra_info": {"g_images_per_s": 10.0, "config": {"x": 1}}},
    ]}))
    frame = load.load_benchmarks([p])
    assert list(frame["name"]) == ["a", "b"] and frame.loc[1, "stat_min"] == 0.5
    assert frame.loc[1, "g_images_per_s"] == 10.0 and "config" not in frame  # nested values stay out of the table
