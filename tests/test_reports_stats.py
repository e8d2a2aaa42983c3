"""Unit and calibration tests of the report's statistics (reports/stats.py).

The calibration tests simulate studies with the model the suite sees: log FID = log 50 + seed effect
+ arm effect + arm x seed noise, the seed effect N(0, SEED_SD^2) shared by every arm of a seed, the
noise N(0, NOISE_SD^2). Every simulation uses a fixed numpy RNG seed, so the tests are deterministic;
each states its Monte Carlo (MC) standard error, and the thresholds leave room for it.
"""

import inspect
import math

import numpy as np
import pytest
from scipy import stats as sps

from ablations.studies import OPTIMIZER_TUNING
from reports import stats

SEED_SD, NOISE_SD = 0.5, 0.2


def simulate(rng: np.random.Generator, reps: int, seeds: int, ratios, seed_sd=SEED_SD, noise_sd=NOISE_SD):
    """(reps, arms, seeds) FID values; arm i has ratios[i] times the FID of a ratio-1 arm (geometric mean)."""
    effect = np.log(np.asarray(ratios, dtype=float))
    return np.exp(np.log(50.0) + rng.normal(0, seed_sd, (reps, 1, seeds)) + effect[None, :, None]
                  + rng.normal(0, noise_sd, (reps, len(effect), seeds)))


def groups(study: np.ndarray, names=None, failed=None) -> dict:
    """{arm: {seed: value}} from one (arms, seeds) array; ``failed`` (same shape, bool) marks failed seeds."""
    names = names or [f"arm{i}" for i in range(len(study))]
    return {name: {s: (None if failed is not None and failed[i, s] else float(v)) for s, v in enumerate(row)}
            for i, (name, row) in enumerate(zip(names, study, strict=True))}


def mc_sd(p: float, reps: int) -> float:
    return math.sqrt(p * (1 - p) / reps)


def nct_power(n: int, noise_sd: float, ratio: float = 0.8, alpha: float = 0.05) -> float:
    """Exact power of the two-sided paired t-test on log ratios (noncentral t); the seed effect cancels."""
    delta = abs(math.log(ratio)) / (noise_sd * math.sqrt(2) / math.sqrt(n))
    q = sps.t.ppf(1 - alpha / 2, n - 1)
    return float(sps.nct.sf(q, n - 1, delta) + sps.nct.cdf(-q, n - 1, delta))


# ------------------------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("arms, reps, low", [
    (2, 4000, 0.035),  # two arms: the rate is exactly alpha in theory (MC sd 0.0034), so it must not be ~0 either
    (5, 2000, 0.0),  # more arms: best must beat every other arm, so the rate is far below alpha (MC sd <= 0.005)
    (7, 2000, 0.0),
])
def test_identical_arms_rarely_give_a_winner(arms, reps, low):
    rng = np.random.default_rng(100 + arms)
    winners = sum(stats.verdict(groups(study), "fid1k").significant for study in simulate(rng, reps, 5, [1.0] * arms))
    rate = winners / reps
    print(f"false-winner rate, {arms} identical arms, 5 seeds, {reps} studies: {rate:.4f}")
    # 0.06 is 3 MC sds above 0.05 at 4,000 studies and 2 at 2,000 (a rate at alpha would pass).
    assert low <= rate <= 0.06


def test_identical_arms_with_failed_seeds_rarely_give_a_winner():
    # Every seed of every arm fails with probability 0.15, independent of the arm: failures must not make winners.
    rng = np.random.default_rng(7)
    reps = 2000  # MC sd 0.005 at a rate of 0.05
    data = simulate(rng, reps, 5, [1.0, 1.0, 1.0])
    failed = rng.random(data.shape) < 0.15
    rate = np.mean([stats.verdict(groups(s, failed=f), "fid1k").significant for s, f in zip(data, failed, strict=True)])
    print(f"false-winner rate, 3 identical arms with 15% failed seeds: {rate:.4f}")
    assert rate <= 0.06


def _coverage(lo: np.ndarray, hi: np.ndarray, truth: float) -> float:
    return float(np.mean((lo <= truth) & (truth <= hi)))


@pytest.mark.parametrize("seeds", [3, 5])
def test_compare_interval_covers_the_true_ratio(seeds):
    rng = np.random.default_rng(20 + seeds)
    reps = 4000  # MC sd 0.0034 at 0.95: the band [0.93, 0.97] is +-6 MC sds
    cs = [stats.compare(*groups(study).values()) for study in simulate(rng, reps, seeds, [0.8, 1.0])]
    assert all(c.paired and c.n == seeds for c in cs)
    cover = _coverage(np.array([c.lo for c in cs]), np.array([c.hi for c in cs]), 0.8)
    print(f"coverage of compare's 95% CI, true ratio 0.8, {seeds} seeds: {cover:.4f}")
    assert 0.93 <= cover <= 0.97


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_mean_interval_is_a_t_interval_with_nominal_coverage(seeds):
    rng = np.random.default_rng(30 + seeds)
    reps = 4000  # MC sd 0.0034
    x = rng.normal(40.0, 6.0, (reps, seeds))
    s = [stats.summarise(row.tolist()) for row in x]
    cover = _coverage(np.array([v.lo for v in s]), np.array([v.hi for v in s]), 40.0)
    print(f"coverage of summarise's 95% CI, {seeds} seeds: {cover:.4f}")
    assert 0.93 <= cover <= 0.97


def test_the_coverage_check_fails_a_percentile_bootstrap_at_three_seeds():
    # The method this module replaced: the percentile bootstrap of a mean. On the same kind of data (paired
    # log ratios, 3 seeds) it covers ~0.76, so the coverage tests above would catch a return to it.
    rng = np.random.default_rng(5)
    reps, resamples = 2000, 1000
    d = np.log(simulate(rng, reps, 3, [0.8, 1.0]))
    d = d[:, 0] - d[:, 1]
    means = np.take_along_axis(d[:, None, :], rng.integers(0, 3, (reps, resamples, 3)), axis=2).mean(axis=2)
    lo, hi = np.quantile(means, [0.025, 0.975], axis=1)
    cover = _coverage(lo, hi, math.log(0.8))
    print(f"percentile bootstrap coverage at 3 seeds: {cover:.3f}")
    assert cover < 0.85  # MC sd 0.01


def test_power_for_a_20_percent_difference_matches_the_noncentral_t():
    rng = np.random.default_rng(11)
    reps = 4000
    wins = [(v := stats.verdict(groups(s, ["a", "b"]), "fid1k")).significant and v.best == "a"
            for s in simulate(rng, reps, 5, [0.8, 1.0])]
    power = float(np.mean(wins))
    exact = nct_power(5, NOISE_SD)
    print(f"power, 2 arms, 0.8x, 5 seeds, noise sd {NOISE_SD}: simulated {power:.3f}, noncentral t {exact:.3f}")
    # the simulated rate omits the (negligible) rejections in the wrong direction; MC sd 0.007: allow 4 sds
    assert abs(power - exact) < 4 * mc_sd(exact, reps)
    assert 0.06 < power < 1


def test_the_documented_power_numbers_are_the_computed_ones():
    power = {n: nct_power(n, NOISE_SD) for n in (5, 8, 10, 15, 20)}
    need = {sd: next(n for n in range(2, 200) if nct_power(n, sd) >= 0.8) for sd in (0.1, 0.2, 0.3)}
    doc = " ".join(stats.__doc__.split())
    listed = ", ".join(f"{n} seeds {p:.2f}" for n, p in power.items())
    assert listed in doc, listed
    assert f"80% power needs {need[0.2]} seeds" in doc
    assert f"noise sd 0.1: 5 seeds {nct_power(5, 0.1):.2f} (80% needs {need[0.1]} seeds)" in doc
    assert f"noise sd 0.3: 5 seeds {nct_power(5, 0.3):.2f} (80% needs {need[0.3]})" in doc


CHOICE_NAMES = ["all fixed", "noise", "lr", "depth", "blog"]


def test_two_equally_costly_choices_rarely_give_a_costliest_choice():
    rng = np.random.default_rng(13)
    reps = 4000  # MC sd 0.0034 at 0.05
    data = simulate(rng, reps, 5, [1.0, 3.0, 3.0, 1.1, 4.0])  # noise and lr cost the same, depth little
    results = [stats.costliest_choice(groups(s, CHOICE_NAMES), "all fixed", ["noise", "lr", "depth"], "fid1k")
               for s in data]
    rate = np.mean([r.verdict.significant for r in results])
    print(f"costliest choice named with two equally costly choices: {rate:.4f}")
    assert rate <= 0.06
    # and the test is not vacuous: both costly choices clearly cost nearly always, so the blame is the tie
    assert np.mean([{"noise", "lr"} <= set(r.costly()) for r in results]) > 0.95
    assert all(r.verdict.best in ("noise", "lr") for r in results)


def test_choices_that_cost_nothing_are_rarely_called_costly():
    rng = np.random.default_rng(19)
    names = ["all fixed", *(f"c{i}" for i in range(8))]
    data = simulate(rng, 2000, 5, [1.0] * 9)  # eight restored choices that change nothing
    results = [stats.costliest_choice(groups(s, names), "all fixed", names[1:], "fid1k") for s in data]
    rate = np.mean([bool(r.costly()) for r in results])  # any choice called costly: Holm's family-wise error
    print(f"some harmless choice called costly: {rate:.4f}")
    assert rate <= 0.06 and np.mean([r.verdict.significant for r in results]) <= 0.06


def test_a_clearly_costliest_choice_is_found():
    rng = np.random.default_rng(17)
    data = simulate(rng, 200, 5, [1.0, 3.0, 1.3, 1.0, 4.0], noise_sd=0.1)
    found = np.mean([(r := stats.costliest_choice(groups(s, CHOICE_NAMES), "all fixed", ["noise", "lr", "depth"],
                                                  "fid1k")).verdict.significant
                     and r.verdict.best == "noise" for s in data])
    assert found > 0.9


# ------------------------------------------------------------------------------------------- tuned families
# The optimizer study's design (ablations.studies.OPTIMIZER_TUNING): each family's learning rate is chosen on one
# tuning seed (stats.best_of, what ablations.trial_queue uses), and the verdict (stats.verdict, what the page uses)
# is drawn on 5 other seeds between the blog's untuned arm and one arm per family at its chosen rate. The families
# are equal at their best: each one's log FID against the 5 swept rates has the same minimum, only its shape
# differs (flat, a shallow or a deep optimum inside the sweep, an optimum at either end). Noise per arm and seed sd
# 0.2-0.4 on log FID, the spread of the README's paired intervals.
TUNED_NOISE_SD = 0.3
FAMILY_CURVES = np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.5, 1.0, 1.5], [1.0, 0.0, 1.0, 2.0, 3.0],
                          [0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
BLOG_RATIO = 60.0  # the blog's Adadelta at lr 1e-3 does not learn: far above every family


def tuned_study(rng: np.random.Generator, curves: np.ndarray, noise_sd: float, tuning_seeds: int = 1,
                seeds: int = 5, naive: bool = False) -> dict:
    """One simulated study's verdict groups: each family's rate chosen on ``tuning_seeds`` seeds of their own (or,
    ``naive``, on the verdict seeds themselves), then its verdict arm's values on the verdict seeds."""
    families, rates = curves.shape

    def draw(n: int) -> np.ndarray:  # (families, rates, n) FIDs, the seed effect shared by every arm of a seed
        return np.exp(np.log(50.0) + rng.normal(0, SEED_SD, (1, 1, n)) + curves[:, :, None]
                      + rng.normal(0, noise_sd, (families, rates, n)))

    verdict = draw(seeds)
    tuning = verdict if naive else draw(tuning_seeds)
    out = {}
    for f in range(families):
        chosen = stats.best_of({r: dict(enumerate(tuning[f, r].tolist())) for r in range(rates)})
        out[f"family {f}"] = dict(enumerate(verdict[f, chosen].tolist()))
    blog = np.log(50.0 * BLOG_RATIO) + rng.normal(0, SEED_SD, seeds) + rng.normal(0, noise_sd, seeds)
    return {"blog": dict(enumerate(np.exp(blog).tolist())), **out}


def false_winner_rate(seed: int, reps: int, curves: np.ndarray, noise_sd: float, **kw) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([stats.verdict(tuned_study(rng, curves, noise_sd, **kw), "fid1k").significant
                          for _ in range(reps)]))


def test_the_simulated_families_follow_the_optimizer_studys_design():
    """The calibration below holds for the study as it is: as many families and swept values, one tuning seed."""
    assert FAMILY_CURVES.shape == (len(OPTIMIZER_TUNING.families), len(OPTIMIZER_TUNING.families[0].values))
    assert {len(f.values) for f in OPTIMIZER_TUNING.families} == {FAMILY_CURVES.shape[1]}
    assert len(OPTIMIZER_TUNING.seeds) == 1  # tuned_study's default tuning_seeds
    assert (FAMILY_CURVES.min(axis=1) == 0).all()  # equal at their best


@pytest.mark.parametrize("noise_sd", [0.2, TUNED_NOISE_SD, 0.4])
def test_families_equal_at_their_best_rarely_give_a_winner_when_tuned_on_other_seeds(noise_sd):
    reps = 2000  # MC sd 0.005 at a rate of 0.05
    rate = false_winner_rate(int(noise_sd * 100), reps, FAMILY_CURVES, noise_sd)
    print(f"false-winner rate, 5 families equal at their best, tuned on 1 seed, noise sd {noise_sd}: {rate:.4f}")
    # measured 0.0000, 0.0005 and 0.0005 (4,000 studies each): the winner must beat four other families at their
    # best. Selecting on the verdict seeds themselves gave about the same (0.0003, 0.0000, 0.0003): with five
    # families that each pick the best of 5, the selection flatters every family alike, so this design shows no
    # inflation.
    assert rate <= 0.06


def test_with_two_families_one_tuning_seed_can_mistune_a_family_and_name_a_false_winner():
    # The limit of one tuning seed, measured: a family whose optimum is shallow (0.5 in log FID, 1.65x, a factor of 3
    # from its best rate) is often tuned to a wrong rate on one noisy seed, and then rightly loses at the verdict to
    # a flat family that is no better at its best. With two families (and the blog), nothing else stands between
    # them: 0.14 of 20,000 studies named a false winner at noise sd 0.3 (0.12 of the 2,000 here, the lowest of ten
    # such runs; 0.088 of 4,000 with 2 tuning seeds, 0.062 with 3).
    # Selecting on the verdict seeds named one in 0.078 (the seeds' own noise, and the flattery of the best of 5
    # seen on the seeds that judge it): the larger risk of this design is the tuning seed's noise. With the study's
    # five families it stays below 0.001 (above).
    curves = FAMILY_CURVES[:2]
    rate = false_winner_rate(5, 2000, curves, TUNED_NOISE_SD)
    naive = false_winner_rate(6, 2000, curves, TUNED_NOISE_SD, naive=True)
    print(f"two families (flat, shallow optimum), one tuning seed: {rate:.4f}; "
          f"selected on the verdict seeds: {naive:.4f}")
    assert rate > 0.1 > naive  # MC sd 0.008 and 0.006


def test_best_of_takes_the_lowest_mean_log_and_counts_a_failure_as_worst():
    assert stats.best_of({"a": {0: 30.0, 1: 10.0}, "b": {0: 18.0, 1: 18.0}}) == "a"  # geometric mean 17.3 < 18
    assert stats.best_of({"a": {0: None}, "b": {0: 900.0}}) == "b"  # a diverged candidate never wins
    assert stats.best_of({"a": {0: None}, "b": {0: float("nan")}}) == "a"  # all failed: the first, in order


# ------------------------------------------------------------------------------------------- compare


A5 = {0: 40.0, 1: 52.0, 2: 31.0, 3: 44.0, 4: 47.0}
B5 = {0: 61.0, 1: 75.0, 2: 50.0, 3: 66.0, 4: 70.0}


def test_paired_compare_is_ttest_rel_on_logs_with_a_t_interval():
    c = stats.compare(A5, B5, names=("1:1", "1:5"))
    la, lb = np.log(list(A5.values())), np.log(list(B5.values()))
    d = la - lb
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert c.paired and c.n == 5 and (c.a, c.b) == ("1:1", "1:5")
    assert c.ratio == pytest.approx(math.exp(d.mean()))
    assert (c.lo, c.hi) == (pytest.approx(math.exp(d.mean() - half)), pytest.approx(math.exp(d.mean() + half)))
    assert c.p == pytest.approx(sps.ttest_rel(la, lb).pvalue)
    assert c.text("fid1k").startswith(f"1:1 has {c.ratio:.2f}\u00d7 the fid1k of 1:5 (95% CI {c.lo:.2f}–{c.hi:.2f}")
    assert "paired over 5 seeds" in c.text("fid1k")
    swapped = stats.compare(B5, A5)
    assert swapped.ratio == pytest.approx(1 / c.ratio) and swapped.p == pytest.approx(c.p)


def test_pairing_removes_the_shared_seed_effect():
    # B is exactly A * 1.25 up to small noise, while seeds differ by a factor of 4: paired, this is clear.
    a = {0: 20.0, 1: 80.0, 2: 40.0, 3: 160.0}
    b = {0: 25.5, 1: 99.0, 2: 50.5, 3: 199.0}
    c = stats.compare(a, b)
    assert c.paired and c.hi < 0.82 and c.p < 0.001
    unpaired = sps.ttest_ind(np.log(list(a.values())), np.log(list(b.values())), equal_var=False)
    assert unpaired.pvalue > 0.5  # what ignoring the pairing would have said


def test_a_failed_seed_counts_as_the_worst_outcome_and_is_named():
    a = {**A5, 3: None}
    c = stats.compare(a, B5, names=("1:1", "1:5"))
    worst = 2 * max(list(B5.values()) + [v for v in a.values() if v is not None])  # FAIL_FACTOR x largest
    expected = [math.log(a[s] if a[s] is not None else worst) - math.log(B5[s]) for s in range(5)]
    assert c.failed_a == (3,) and c.failed_b == () and c.n == 5
    assert c.ratio == pytest.approx(math.exp(np.mean(expected)))
    assert c.ratio > stats.compare(A5, B5).ratio  # the failure hurts the arm that failed
    assert "1:1 seed 3" in c.text("fid1k")
    nan = stats.compare({**A5, 3: float("nan")}, B5)
    assert nan.failed_a == (3,) and nan.ratio == pytest.approx(c.ratio)


def test_a_failure_can_never_help_the_failing_arm():
    # A finishes only its luckiest seed and fails the rest: it must come out worse than B, not better.
    c = stats.compare({0: 10.0, 1: None, 2: None}, {0: 20.0, 1: 21.0, 2: 22.0})
    assert c.ratio > 1 and c.failed_a == (1, 2)


def test_a_pair_where_both_failed_is_dropped():
    c = stats.compare({**A5, 2: None}, {**B5, 2: None})
    assert c.n == 4 and c.failed_a == c.failed_b == (2,)
    without = stats.compare({s: v for s, v in A5.items() if s != 2}, {s: v for s, v in B5.items() if s != 2})
    assert (c.ratio, c.lo, c.hi, c.p) == (without.ratio, without.lo, without.hi, without.p)


def test_welch_fallback_when_the_arms_share_no_seeds():
    a = {0: 40.0, 1: 52.0, 2: 31.0}
    b = {3: 61.0, 4: 75.0, 5: 50.0, 6: 66.0}
    c = stats.compare(a, b, names=("x", "y"))
    la, lb = np.log(list(a.values())), np.log(list(b.values()))
    ref = sps.ttest_ind(la, lb, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert not c.paired and (c.n_a, c.n_b, c.n) == (3, 4, 3)
    assert c.p == pytest.approx(ref.pvalue)
    assert (c.lo, c.hi) == (pytest.approx(math.exp(ci.low)), pytest.approx(math.exp(ci.high)))
    assert c.ratio == pytest.approx(math.exp(la.mean() - lb.mean()))
    assert "unpaired (Welch) over 3 and 4 seeds" in c.text("fid1k")
    one_shared = stats.compare(a, {**b, 0: 60.0})  # one shared seed is not a pairing: still Welch
    assert not one_shared.paired and one_shared.n_b == 5


@pytest.mark.parametrize("a, b, ratio", [
    ({0: 40.0}, {0: 50.0}, 0.8),  # one shared seed
    ({0: 40.0}, {1: 50.0, 2: 50.0}, 0.8),  # one value in a, none shared
    ({0: 40.0, 1: None}, {0: 50.0, 1: None}, 0.8),  # the other pair both failed
])
def test_fewer_than_two_values_give_a_point_ratio_and_no_interval(a, b, ratio):
    c = stats.compare(a, b)
    assert c.ratio == pytest.approx(ratio)
    assert math.isnan(c.lo) and math.isnan(c.hi) and math.isnan(c.p) and not c.has_ci
    assert "no interval" in c.text("fid1k")


def test_nothing_to_compare():
    c = stats.compare({0: None}, {0: None, 1: None})
    assert math.isnan(c.ratio) and c.n == 0 and "cannot be compared" in c.text("fid1k")
    assert math.isnan(stats.compare({}, {0: 5.0, 1: 6.0}).ratio)


def test_zero_and_negative_values_are_clipped_at_the_floor():
    c = stats.compare({0: 0.0, 1: -0.5, 2: 1e-9}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert c.n == 3 and math.isfinite(c.ratio) and c.ratio > 0 and math.isfinite(c.p)
    assert c.ratio == pytest.approx(stats.FLOOR / 6 ** (1 / 3))


def test_identical_arms_give_ratio_one_and_p_one():
    c = stats.compare(A5, A5)
    assert (c.ratio, c.lo, c.hi, c.p) == (1.0, 1.0, 1.0, 1.0)


def test_holm_matches_the_step_down_definition():
    """Hand-computed Holm adjustments: sorted p times (m - rank), made monotone, capped at 1."""
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx((0.03, 0.06, 0.06))
    assert stats.holm([0.5, 0.9]) == pytest.approx((1.0, 1.0))  # monotone: never below an earlier step
    adj = stats.holm([0.01, math.nan])
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1])
    assert stats.holm([]) == ()


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.2, 0.013, 0.04, 0.5, 0.012]
    assert stats.holm(p) == pytest.approx(tuple(multipletests(p, method="holm")[1]))


def test_the_statistics_use_no_random_numbers():
    source = inspect.getsource(stats)
    assert "np.random" not in source and "default_rng" not in source
    arms = {"A": A5, "B": B5, "C": {**B5, 1: None}}
    assert stats.verdict(arms, "fid1k") == stats.verdict(arms, "fid1k")
    once, again = (stats.costliest_choice(arms, "B", ["A", "C"], "fid1k") for _ in range(2))
    assert once == again


# ------------------------------------------------------------------------------------------- verdict


def test_a_clearly_better_arm_is_named_the_winner():
    c5 = {s: v * 1.02 + 1 for s, v in B5.items()}
    v = stats.verdict({"5:1": c5, "1:5": B5, "1:1": A5}, "fid1k")
    assert v.best == "1:1" and v.runner_up == "1:5" and v.significant
    assert [c.b for c in v.comparisons] == ["1:5", "5:1"] and all(c.a == "1:1" for c in v.comparisons)
    assert len(v.p_holm) == 2 and max(v.p_holm) < 0.05
    assert v.text.startswith(f"1:1 is best on fid1k: {v.comparisons[0].ratio:.2f}\u00d7 the fid1k of the runner-up 1:5")
    assert "after Holm correction over 2 comparisons" in v.text and "(5 seeds)" in v.text


def test_a_winner_over_one_arm_but_not_another_is_no_winner():
    noisy = {0: 35.0, 1: 80.0, 2: 28.0, 3: 70.0, 4: 40.0}  # lower than B on average, not clearly above A
    v = stats.verdict({"A": A5, "B": B5, "N": noisy}, "fid1k")
    assert v.best == "A" and not v.significant
    assert v.text.startswith("no arm is clearly best on fid1k: A")


def test_overlapping_arms_give_no_winner():
    v = stats.verdict({"1:1": {0: 50.0, 1: 38.0, 2: 45.0}, "1:2": {0: 44.0, 1: 48.0, 2: 42.0}}, "fid1k")
    assert not v.significant and v.best == "1:1" and v.runner_up == "1:2"
    assert v.text.startswith("no arm is clearly best on fid1k: 1:1 leads 1:2 at ")
    assert "95% CI" in v.text and "p=" in v.text and "3 seeds" in v.text


def test_a_failed_seed_is_named_in_the_verdict():
    v = stats.verdict({"1:1": A5, "1:5": B5, "5:1": {**B5, 3: None}}, "fid1k")
    assert "5:1 seed 3" in v.text
    assert v.comparisons[-1].b == "5:1" and v.comparisons[-1].failed_b == (3,)


def test_a_failed_seed_can_cost_an_arm_its_win():
    v = stats.verdict({"1:1": {**A5, 4: None}, "1:5": B5}, "fid1k")
    assert not v.significant and "1:1 seed 4" in v.text


@pytest.mark.parametrize("arms", [
    {"A": {0: 50.0}, "B": {0: 40.0}, "C": {0: 60.0}},  # one seed everywhere
    {"A": {0: 50.0, 1: 50.1, 2: 49.9}, "B": {0: 40.0}},  # the apparent winner has one seed
    {"A": {0: 50.0}, "B": {0: 40.0, 1: 40.1, 2: 39.9}},  # the runner-up has one seed
])
def test_one_seed_never_gives_a_verdict(arms):
    v = stats.verdict(arms, "fid1k")
    assert not v.significant
    assert v.text.startswith("only one seed: no verdict on fid1k")


def test_verdict_without_enough_arms():
    assert stats.verdict({}, "fid1k").text == "no finished trials: no verdict on fid1k"
    assert "no finished trials" in stats.verdict({"A": {}, "B": {0: None}}, "fid1k").text
    only = stats.verdict({"A": {0: 1.0, 1: 2.0}, "B": {}}, "fid1k")
    assert not only.significant and only.best == "A" and "only one arm" in only.text


# ------------------------------------------------------------------------------------------- choices, effects


QUIRKS = {"blog": {0: 90.0, 1: 91.0, 2: 89.0}, "all fixed": {0: 30.0, 1: 31.0, 2: 29.0},
          "reused noise": {0: 75.0, 1: 76.0, 2: 74.5}, "3 channels": {0: 40.0, 1: 41.5, 2: 39.5}}
RESTORED = ["reused noise", "3 channels"]


def test_the_costliest_choice_beats_all_fixed_and_the_next_costliest():
    r = stats.costliest_choice(QUIRKS, "all fixed", RESTORED, "fid1k")  # the blog is not a restored choice
    v = r.verdict
    assert v.best == "reused noise" and v.runner_up == "3 channels" and v.significant
    assert [(c.a, c.b) for c in v.comparisons] == [("reused noise", "all fixed"), ("reused noise", "3 channels")]
    assert [(c.a, c.b) for c in r.costs] == [("reused noise", "all fixed"), ("3 channels", "all fixed")]
    assert r.costly() == RESTORED and "costs the most" in v.text
    assert r.costs[0].ratio == pytest.approx(math.exp(np.mean(np.log([75 / 30, 76 / 31, 74.5 / 29]))))


def test_costliest_choice_says_which_part_failed():
    tie = dict(QUIRKS, **{"3 channels": {0: 76.0, 1: 75.0, 2: 75.0}})
    v = stats.costliest_choice(tie, "all fixed", RESTORED, "fid1k").verdict
    assert not v.significant and "costs about as much" in v.text and "no single choice is clearly" in v.text
    noisy = {"all fixed": {0: 90.0, 1: 80.0, 2: 85.0}, "reused noise": {0: 84.0, 1: 96.0, 2: 88.0}}
    text = stats.costliest_choice(noisy, "all fixed", ["reused noise"], "fid1k").verdict.text
    assert text.startswith("no restored choice clearly raises fid1k")
    cheaper = {"all fixed": {0: 50.0, 1: 51.0}, "reused noise": {0: 40.0, 1: 41.0}}  # restoring helps: no cost
    assert not stats.costliest_choice(cheaper, "all fixed", ["reused noise"], "fid1k").costly()
    single = {"all fixed": {0: 50.0}, "reused noise": {0: 60.0}}
    assert stats.costliest_choice(single, "all fixed", ["reused noise"], "fid1k").verdict.text.startswith(
        "only one seed: no verdict")
    no_reference = stats.costliest_choice({"x": {0: 1.0, 1: 2.0}}, "all fixed", ["x"], "fid1k")
    assert "no finished trial" in no_reference.verdict.text
    assert "no restored choice has" in stats.costliest_choice({"all fixed": {0: 1.0}}, "all fixed", ["x"],
                                                               "fid1k").verdict.text


# ------------------------------------------------------------------------------------------- learned


def test_a_big_drop_is_learning():
    rng = np.random.default_rng(1)
    step0 = {s: 300.0 * math.exp(rng.normal(0, 0.1)) for s in range(5)}
    final = {s: v * 0.1 * math.exp(rng.normal(0, 0.2)) for s, v in step0.items()}
    r = stats.learned(step0, final)
    assert r.learned and r.n == 5 and r.hi < 0.5 and r.lo < r.ratio < r.hi
    assert r.text.startswith("learned: FID fell to")


def test_a_noise_level_change_is_not_learning():
    rng = np.random.default_rng(2)
    step0 = {s: 300.0 * math.exp(rng.normal(0, 0.1)) for s in range(5)}
    final = {s: v * math.exp(rng.normal(0, 0.2)) for s, v in step0.items()}
    r = stats.learned(step0, final)
    assert not r.learned and r.hi > 0.5 and r.text.startswith("not clearly learned")


def test_learning_just_below_the_bound_is_not_clear():
    # every seed at 0.45x, but spread so that the interval reaches above 0.5x: not clearly halved
    r = stats.learned({s: 100.0 for s in range(3)}, {0: 30.0, 1: 45.0, 2: 68.0})
    assert r.ratio < 0.5 and r.hi >= 0.5 and not r.learned


def test_one_seed_learning_has_no_interval():
    r = stats.learned({0: 300.0}, {0: 30.0})
    assert r.n == 1 and r.ratio == pytest.approx(0.1) and r.learned and not r.has_ci
    assert "no interval" in r.text
    assert not stats.learned({0: 300.0}, {0: 200.0}).learned
    assert stats.learned({0: 300.0}, {1: 30.0}).n == 0


def test_a_failed_seed_counts_as_not_learned():
    r = stats.learned({0: 300.0, 1: 310.0, 2: 290.0}, {0: 30.0, 1: 31.0, 2: None})
    assert r.failed == (2,) and r.n == 3
    assert r.ratio == pytest.approx(math.exp(np.mean([math.log(0.1), math.log(0.1), 0.0])))
    assert not r.learned and "seed 2 failed" in r.text


# ------------------------------------------------------------------------------------------- summaries, format


def test_summarise_is_the_t_interval_of_the_mean():
    values = [3.0, 5.0, 4.0, 8.0]
    s = stats.summarise(values)
    half = sps.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert s.n == 4 and s.mean == pytest.approx(5.0)
    assert (s.lo, s.hi) == (pytest.approx(5.0 - half), pytest.approx(5.0 + half))
    assert stats.summarise({0: 3.0, 1: 5.0, 2: 4.0, 3: 8.0, 4: None}) == s  # a {seed: value} mapping works too


def test_no_ci_from_one_value_and_nothing_from_none():
    one = stats.summarise([7.0])
    assert one.n == 1 and one.mean == 7.0 and not one.has_ci
    assert stats.summarise([]).n == 0
    assert stats.summarise([None, float("nan"), 2.0, 4.0]).n == 2  # missing metrics are dropped
    same = stats.summarise([2.5, 2.5, 2.5])
    assert (same.lo, same.hi) == (2.5, 2.5)


def test_ratios_read_as_plain_numbers_at_every_size():
    """Seen on a page: "the blog has 1.3e+02x the fid1k of all fixed". A ratio of 100 or more is a whole number."""
    assert [stats.ratio_text(x) for x in (130.4, 1084.2, 34.47, 0.5, 0.0012)] == ["130×", "1084×", "34.47×", "0.50×",
                                                                                   "0.0012×"]


def test_fmt_shows_four_significant_digits():
    assert [stats.fmt(x) for x in (180.712, 0.038581, -0.0386, 12345.0)] == ["180.7", "0.03858", "-0.0386", "1.234e+04"]
    assert stats.fmt(None) == stats.fmt(float("nan")) == "–"


# ------------------------------------------------------------------------------------------- readers


def test_agreement_flags_a_verdict_significant_under_one_judge_only():
    # the same best arm under both judges, clearly ahead under the first, within noise under the second
    seeds = range(5)
    clear = {"a": {s: 10.0 + 0.1 * s for s in seeds}, "b": {s: 20.0 + 0.1 * s for s in seeds}}
    noisy = {"a": dict(zip(seeds, (15.0, 7.0, 12.0, 8.0, 10.0), strict=True)),
             "b": dict(zip(seeds, (8.4, 14.7, 9.45, 13.65, 10.5), strict=True))}
    first, second = stats.verdict(clear, "fid"), stats.verdict(noisy, "fid_lenet")
    assert first.best == second.best == "a" and first.significant and not second.significant
    agree = stats.agreement(clear, noisy, first, second)
    assert agree.flipped and agree.flips == ("the verdict is significant under the first judge and not under the "
                                             "second judge",)
    assert agree.tau == 1.0 and agree.arms == 2
    reversed_ = {"a": clear["b"], "b": clear["a"]}
    assert stats.agreement(clear, reversed_, first, stats.verdict(reversed_, "fid_lenet")).tau == -1.0
    held = stats.agreement(clear, clear, first, first)
    assert not held.flipped and held.tau == 1.0
    assert stats.agreement({"a": clear["a"]}, {"a": clear["a"]}, first, first).tau is None  # one arm: no ranking
