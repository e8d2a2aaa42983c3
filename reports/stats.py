"""Uncertainty and verdicts for the ablation studies: paired t-statistics on log FID over seeds.

The data
    Every arm of a study is trained once per seed 0..n-1, and arms that share a seed share an
    initialisation, so arms are compared PAIRED by seed. An arm is a mapping ``{seed: value}``; a
    failed seed (diverged, NaN, out of memory) maps to ``None`` or NaN (or +-inf), a seed that was
    never run is simply absent.

Why logs and ratios
    FID is positive and its seed-to-seed spread is multiplicative (a seed that is hard for one arm
    is hard for all). On the log scale the shared seed effect cancels in the paired difference
    ``log a_s - log b_s`` and what is left is roughly normal, so the t-interval of its mean is
    well calibrated even at 3-5 seeds. Results are reported back on the ratio scale:
    ``exp(mean log difference)`` is the geometric-mean ratio ("a has 0.62x the FID of b").

Choices (all deterministic: no random numbers anywhere in this module)
    * Interval: t-interval of the mean (Student quantile with n-1 degrees of freedom); p-value:
      two-sided one-sample t-test of the mean log difference, i.e. ``scipy.stats.ttest_rel`` on
      the logs. With fewer than 2 shared seeds but >= 2 values per arm, Welch's unequal-variance
      t-test and interval on the log values (``scipy.stats.ttest_ind(equal_var=False)``), marked
      ``paired=False``. Fewer than 2 values: a point ratio, no interval, no p (NaN).
      The Student functions are ``scipy.special.stdtr``/``stdtrit``, the ufuncs behind
      ``scipy.stats.t.sf``/``t.ppf``: the same numbers, without 50 us of overhead per call.
    * Failed seed: counted as the worst outcome of its pair. It gets FAIL_FACTOR (2) times the
      largest finite value in the comparison (in ``verdict``/``costliest_choice``: in
      the whole study), so it is worse than every finished run and a failure can never help the
      arm that failed (conservative toward it: the failing arm can lose by a failure, never win).
      The value is finite on purpose: the log difference stays a number, and a larger factor would
      not buy significance against the failing arm anyway (as one of n differences grows, |t| tends
      to 1), it would only exaggerate the ratio. A factor of 2 puts the failure log 2 = 0.69 above
      the largest finished value, more than the seed spread (sd 0.3-0.6): a clear loss. A seed
      where both arms failed says nothing about their difference and is dropped. Failed seeds are
      listed per arm in the result and named in the text. Failures cost power: with 15% of seeds
      failed at random, identical arms almost never give a winner (see below), nor do close ones.
    * Values <= FLOOR (1e-6) are clipped to FLOOR before taking logs. A generator's FID is far above
      that; only real data against itself gets near 0, and an estimator that returns <= 0 (KID's
      unbiased estimate can) has stopped resolving differences, so ratios against such a value
      mean little. The floor only keeps the logs finite and the outcome defined.
    * Several arms: the best arm (lowest mean log value, failures counted as worst) is compared
      with every other arm, the p-values are Holm-adjusted, and it is named the winner only if
      every adjusted p < alpha and it is lower in each comparison. One seed never gives a verdict.

Calibration (simulated in tests/test_reports_stats.py; log FID = log 50 + seed effect + arm x seed
noise, seed effect N(0, 0.5^2) shared by all arms of a seed, noise N(0, 0.2^2) per arm and seed;
alpha = 0.05, 95% intervals):
    * identical arms, 5 seeds, rate at which ``verdict`` names a winner: 2 arms 0.052 (4,000
      simulated studies; exactly alpha in theory), 5 arms 0.000 and 7 arms 0.000 (2,000 each: the
      best must beat every other arm, including the runner-up it was selected against), 3 arms
      with 15% of seeds failed at random 0.001 (2,000).
    * coverage of ``compare``'s 95% interval of the ratio, true ratio 0.8: 0.953 at 3 seeds,
      0.951 at 5 seeds (4,000 studies each); of ``summarise``'s 95% interval of a mean (normal
      data): 0.949 at 3 seeds, 0.954 at 5. The percentile bootstrap this module used before
      covers 0.74 at 3 seeds (2,000 studies).
    * costliest_choice with two equally costly restored choices (both 3x "all fixed", a third 1.1x):
      a single costliest choice is named in 0.049 of 4,000 studies; with eight restored choices that
      change nothing, some choice is called costly in 0.024 of 2,000 (Holm's family-wise rate).
    * tuned families (the optimizer study: 5 families equal at their best learning rate, each tuned over 3 rates
      on 1 tuning seed with ``best_of``, judged with the blog's untuned arm on 5 other seeds, noise sd 0.2-0.4):
      a false winner in at most 0.001 of 4,000 studies. Two families alone (one flat, one with a shallow optimum)
      give 0.15: one tuning seed can mistune a family, which then rightly loses; choosing on the verdict seeds
      themselves gave 0.06 there and the same as tuning apart with five families (no inflation seen).
    * power (2 arms, one with 0.8x the FID of the other, i.e. a 20% FID difference; the paired
      difference of logs has sd noise sd * sqrt 2; exact noncentral t, checked by simulation):
        noise sd 0.2: 5 seeds 0.27, 8 seeds 0.49, 10 seeds 0.60, 15 seeds 0.81, 20 seeds 0.92;
                      80% power needs 15 seeds.
        noise sd 0.1: 5 seeds 0.75 (80% needs 6 seeds); noise sd 0.3: 5 seeds 0.15 (80% needs 31).
      The seed effect (here sd 0.5) cancels in the paired difference and does not enter these.
      Simulated for 2 arms at 5 seeds, the rate at which ``verdict`` names the 0.8x arm is 0.268
      (4,000 studies; noncentral t: 0.275). With more arms the best must beat all of them: 5 arms,
      one at 0.8x / 0.6x / 0.5x, the others 1x, 5 seeds, noise sd 0.2: it is named in 0.02 / 0.53 /
      0.89 of studies (one-off simulation, 1,000 studies each, not rerun by the tests).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

LEVEL = 0.95
ALPHA = 0.05
FLOOR = 1e-6  # values at or below this are clipped to it before taking logs
FAIL_FACTOR = 2.0  # a failed seed counts as this times the largest finite value in the comparison
TIMES = "\u00d7"

Arm = Mapping[int, float | None]


# --------------------------------------------------------------------------------------------- helpers


def _t_quantile(q: float, df: float) -> float:
    """scipy.stats.t.ppf(q, df)."""
    return float(special.stdtrit(df, q))


def _t_p(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic: 2 * scipy.stats.t.sf(|t|, df)."""
    return float(2 * special.stdtr(df, -abs(t)))


def _is_failed(v: float | None) -> bool:
    return v is None or not math.isfinite(float(v))


def _clean(values: Iterable[float | None]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _split(arm: Arm) -> tuple[dict, tuple]:
    """({seed: finite value clipped at FLOOR}, failed seeds in order)."""
    ok = {s: max(float(v), FLOOR) for s, v in arm.items() if not _is_failed(v)}
    return ok, tuple(sorted(s for s, v in arm.items() if _is_failed(v)))


def _worst(*arms: Arm) -> float | None:
    """FAIL_FACTOR times the largest finite value in ``arms``; None when there is none."""
    finite = [max(float(v), FLOOR) for arm in arms for v in arm.values() if not _is_failed(v)]
    return FAIL_FACTOR * max(finite) if finite else None


def _mean_log(arm: Arm, worst: float) -> float:
    ok, failed = _split(arm)
    logs = [math.log(v) for v in ok.values()] + [math.log(worst)] * len(failed)
    return float(np.mean(logs)) if logs else math.nan


def _t_interval(m: float, se: float, df: float, level: float) -> tuple[float, float, float]:
    """(lo, hi, two-sided p of mean 0) of a t-interval; a zero standard error gives a point interval."""
    if se <= 1e-12 * max(1.0, abs(m)):
        return m, m, (1.0 if m == 0 else 0.0)
    q = _t_quantile(0.5 + level / 2, df)
    return m - q * se, m + q * se, _t_p(m / se, df)


def holm(pvalues: Sequence[float]) -> tuple[float, ...]:
    """Holm step-down adjusted p-values; NaN (no test possible) stays NaN and counts as p = 1 for the others.

    The same numbers as statsmodels' ``multipletests(method="holm")`` (a test compares them), written out
    because statsmodels 0.15 runs a full ``gc.collect()`` on every Holm call (multitest.py:246): 45 ms here,
    which made the calibration simulations (tens of thousands of verdicts) take over 20 minutes.
    """
    p = np.array([1.0 if math.isnan(x) else float(x) for x in pvalues])
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(len(p))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    return tuple(math.nan if math.isnan(x) else float(a) for x, a in zip(pvalues, adjusted, strict=True))


def fmt(x: float | None) -> str:
    """4 significant digits: what the page shows for every metric."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}"


def ratio_digits(x: float) -> str:
    """A ratio: 2 decimals in the usual range, whole numbers above it (130, not 1.3e+02), 2 significant digits
    below it."""
    if math.isnan(x):
        return "–"
    if x >= 99.5:
        return f"{x:.0f}"
    return f"{x:.2f}" if x >= 0.095 else f"{x:.2g}"


def ratio_text(x: float) -> str:
    """'0.62×'."""
    return f"{ratio_digits(x)}{TIMES}"


def _p(p: float, label: str = "p") -> str:
    return f"{label}<0.001" if p < 0.001 else f"{label}={p:.2g}"


def _seeds(seeds: Sequence[int]) -> str:
    s = [str(x) for x in seeds]
    if len(s) == 1:
        return f"seed {s[0]}"
    return f"seeds {', '.join(s[:-1])} and {s[-1]}"


def _failed_note(failed: Mapping[str, Sequence[int]]) -> str:
    """'failed: 5:1 seed 3, 1:5 seeds 0 and 2' (empty when nothing failed)."""
    parts = [f"{arm} {_seeds(seeds)}" for arm, seeds in failed.items() if seeds]
    return f"failed, counted as worst: {', '.join(parts)}" if parts else ""


def _n_seeds(comparisons: Sequence[Comparison]) -> str:
    ns = sorted({c.n for c in comparisons})
    span = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    unpaired = ("" if all(c.paired for c in comparisons) else
                " (unpaired)" if not any(c.paired for c in comparisons) else " (some unpaired)")
    return f"{span} seed{'s' if ns[-1] != 1 else ''}{unpaired}"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------- per-arm mean


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    lo: float  # NaN when n < 2: one value has no spread
    hi: float

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.lo)


def summarise(values: Sequence[float | None] | Arm, level: float = LEVEL) -> Summary:
    """Arithmetic mean and its t-interval; None, NaN and inf values are dropped first.

    ``values`` is a sequence of values or a ``{seed: value}`` mapping. Note that with 2 seeds the
    t quantile is 12.7: the interval is honest, and wide.
    """
    if isinstance(values, Mapping):
        values = list(values.values())
    x = _clean(values)
    if len(x) == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    if len(x) == 1:
        return Summary(1, float(x[0]), math.nan, math.nan)
    m = float(x.mean())
    lo, hi, _ = _t_interval(m, float(x.std(ddof=1)) / math.sqrt(len(x)), len(x) - 1, level)
    return Summary(len(x), m, lo, hi)


# --------------------------------------------------------------------------------------------- two arms


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b``: ratio = geometric-mean a/b with its t-interval [lo, hi] and p-value.

    paired: True when the test is over shared seeds (n pairs); False for Welch's test on the log
    values (n = the smaller arm's count, n_a and n_b the counts). lo, hi and p are NaN when there
    is no interval (fewer than 2 values); ratio is NaN when an arm has nothing at all.
    failed_a/failed_b: seeds that failed in each arm (counted as the worst outcome of their pair).
    """

    a: str
    b: str
    n: int
    paired: bool
    ratio: float
    lo: float
    hi: float
    p: float
    failed_a: tuple[int, ...] = ()
    failed_b: tuple[int, ...] = ()
    n_a: int = 0
    n_b: int = 0
    level: float = LEVEL

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.lo)

    def detail(self, p: float | None = None, p_label: str = "p") -> str:
        """What goes in brackets after the ratio: interval, p (``p`` overrides self.p), seeds, failures."""
        failed = _failed_note({self.a: self.failed_a, self.b: self.failed_b})
        if math.isnan(self.ratio):
            return _join("no finished seed to compare", failed)
        if not self.has_ci:
            if self.paired:
                why = "one shared seed: no interval" if self.n == 1 else "no shared seed: no interval"
            else:
                why = f"{self.n_a} and {self.n_b} seeds, not shared: no interval"
            return _join(why, failed)
        p = self.p if p is None else p
        ci = _ci_p(self, p, p_label)
        if self.paired:
            return _join(f"{ci}, paired over {self.n} seeds", failed)
        return _join(f"{ci}, unpaired (Welch) over {self.n_a} and {self.n_b} seeds: the arms share fewer than 2",
                     failed)

    def inverse(self) -> Comparison:
        """``b`` against ``a``: the reciprocal ratio and interval, the same test."""
        return dataclasses.replace(self, a=self.b, b=self.a, ratio=1 / self.ratio, lo=1 / self.hi, hi=1 / self.lo,
                                   failed_a=self.failed_b, failed_b=self.failed_a, n_a=self.n_b, n_b=self.n_a)

    def text(self, metric: str) -> str:
        """'1:1 has 0.62× the fid1k of 1:5 (95% CI 0.51–0.75, p=0.003, paired over 5 seeds)'."""
        if math.isnan(self.ratio):
            return f"{self.a} and {self.b} cannot be compared on {metric} ({self.detail()})"
        return f"{self.a} has {ratio_text(self.ratio)} the {metric} of {self.b} ({self.detail()})"


def compare(a: Arm, b: Arm, level: float = LEVEL, *, names: tuple[str, str] = ("a", "b"),
            worst: float | None = None) -> Comparison:
    """Arm ``a`` against arm ``b`` ({seed: value}, lower is better), as the ratio a/b.

    Paired over the seeds both arms have (a pair where both failed is dropped); Welch's test on the
    log values when they share fewer than 2 seeds but each has >= 2; a point ratio with no interval
    and p = NaN below that. A failed seed counts as ``worst`` (default: FAIL_FACTOR times the largest
    finite value of the two arms). ``names`` label the arms in the result and its text.
    """
    ok_a, failed_a = _split(a)
    ok_b, failed_b = _split(b)
    both_failed = set(failed_a) & set(failed_b)
    if worst is None:
        worst = _worst(a, b)
    na, nb = names

    def values(ok: dict, failed: tuple) -> dict:
        out = dict(ok)
        if worst is not None:
            out.update({s: worst for s in failed if s not in both_failed})
        return out

    va, vb = values(ok_a, failed_a), values(ok_b, failed_b)
    shared = sorted(set(va) & set(vb), key=str)
    common = dict(a=na, b=nb, failed_a=failed_a, failed_b=failed_b, n_a=len(va), n_b=len(vb), level=level)
    if len(shared) >= 2 or (len(shared) == 1 and (len(va) < 2 or len(vb) < 2)):
        d = np.log([va[s] for s in shared]) - np.log([vb[s] for s in shared])
        m = float(d.mean())
        if len(d) < 2:
            return Comparison(n=1, paired=True, ratio=math.exp(m), lo=math.nan, hi=math.nan, p=math.nan, **common)
        lo, hi, p = _t_interval(m, float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1, level)
        return Comparison(n=len(d), paired=True, ratio=math.exp(m), lo=math.exp(lo), hi=math.exp(hi), p=p, **common)
    la, lb = np.log(list(va.values())), np.log(list(vb.values()))
    if len(la) == 0 or len(lb) == 0:
        return Comparison(n=0, paired=False, ratio=math.nan, lo=math.nan, hi=math.nan, p=math.nan, **common)
    m = float(la.mean() - lb.mean())
    n = min(len(la), len(lb))
    if n < 2:
        return Comparison(n=n, paired=False, ratio=math.exp(m), lo=math.nan, hi=math.nan, p=math.nan, **common)
    sa, sb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
    se = math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (len(la) - 1) + sb**2 / (len(lb) - 1)) if se > 0 else 1.0
    lo, hi, p = _t_interval(m, se, df, level)
    return Comparison(n=n, paired=False, ratio=math.exp(m), lo=math.exp(lo), hi=math.exp(hi), p=p, **common)


# --------------------------------------------------------------------------------------------- selection


def best_of(candidates: Mapping[str, Arm]) -> str:
    """The candidate with the lowest mean log value over its seeds, a failed seed counted as worst (FAIL_FACTOR
    times the largest finite value among the candidates), as ``verdict`` ranks arms: the tuning phase's choice
    (ablations.trial_queue). A tie (every candidate failed) goes to the first in ``candidates``' order."""
    worst = _worst(*candidates.values()) or 1.0  # nothing finished: every candidate is equally worst
    return _ranked(candidates, worst)[0]


# --------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """text: the sentence for the page. best/runner_up: arm names (None when there is none).

    significant: the best arm is named the winner. comparisons: best against each other arm, in
    the order of the other arm's mean log value (runner-up first); p_holm: their Holm-adjusted
    p-values, in the same order (costliest_choice: the costliest vs the reference, then vs the next).
    """

    text: str
    best: str | None = None
    runner_up: str | None = None
    significant: bool = False
    comparisons: tuple[Comparison, ...] = ()
    p_holm: tuple[float, ...] = ()


def _arms(groups: Mapping[str, Arm]) -> dict[str, Arm]:
    """Arms with at least one seed recorded (finished or failed)."""
    return {k: v for k, v in groups.items() if v is not None and len(v)}


def _thin(comparisons: Sequence[Comparison]) -> list[str]:
    """Arms that enter some comparison with fewer than 2 values."""
    out: list[str] = []
    for c in comparisons:
        for name, n in ((c.a, c.n_a), (c.b, c.n_b)):
            if n < 2 and name not in out:
                out.append(name)
    return out


def _ranked(arms: Mapping[str, Arm], worst: float) -> list[str]:
    means = {k: _mean_log(v, worst) for k, v in arms.items()}
    return sorted(arms, key=lambda k: (math.isnan(means[k]), means[k]))


def verdict(groups: Mapping[str, Arm], metric: str, level: float = LEVEL, alpha: float = ALPHA) -> Verdict:
    """Which arm has the lowest ``metric`` (lower is better), and whether it clearly beats every other arm.

    ``groups``: {arm: {seed: value}}. Best = lowest mean log value (failed seeds counted as worst);
    it is compared with every other arm (``compare``), the p-values are Holm-adjusted, and it is the
    winner only if every adjusted p < alpha and its ratio is below 1 against each.
    """
    arms = _arms(groups)
    worst = _worst(*arms.values())
    if worst is None:
        return Verdict(f"no finished trials: no verdict on {metric}")
    ranked = _ranked(arms, worst)
    best = ranked[0]
    if len(ranked) == 1:
        return Verdict(f"only one arm has results on {metric} ({best}): nothing to compare", best)
    runner = ranked[1]
    comps = tuple(compare(arms[best], arms[o], level, names=(best, o), worst=worst) for o in ranked[1:])
    adjusted = holm([c.p for c in comps])
    failed = _failed_note({k: _split(arms[k])[1] for k in ranked})
    seeds = _n_seeds(comps)
    thin = _thin(comps)
    if thin:
        return Verdict(f"only one seed: no verdict on {metric} ({', '.join(thin)} "
                       f"{'has' if len(thin) == 1 else 'have'} fewer than 2 usable seeds; run more seeds; "
                       f"{best} leads {runner} at {ratio_text(comps[0].ratio)})",
                       best, runner, False, comps, adjusted)
    won = [p < alpha and c.ratio < 1 for c, p in zip(comps, adjusted, strict=True)]
    lead, p_lead = comps[0], adjusted[0]
    label = "p" if len(comps) == 1 else "p_holm"
    if all(won):
        ci = _ci(lead)
        if len(comps) == 1:
            claim = f"({ci}, {_p(p_lead)}), a significant difference"
        else:
            claim = f"({ci}), and beats every other arm after Holm correction over {len(comps)} comparisons"
        return Verdict(f"{best} is best on {metric}: {ratio_text(lead.ratio)} the {metric} of the runner-up {runner} "
                       f"{claim} ({_join(seeds, failed)})", best, runner, True, comps, adjusted)
    if not won[0]:
        return Verdict(f"no arm is clearly best on {metric}: {best} leads {runner} at {ratio_text(lead.ratio)} "
                       f"({_join(_ci_p(lead, p_lead, label), seeds, failed)})", best, runner, False, comps, adjusted)
    i = won.index(False)
    other = comps[i]
    return Verdict(f"no arm is clearly best on {metric}: {best} beats the runner-up {runner} "
                   f"({ratio_text(lead.ratio)}, {_ci_p(lead, p_lead, label)}) but not {other.b} "
                   f"({ratio_text(other.ratio)}, {_ci_p(other, adjusted[i], label)}) ({_join(seeds, failed)})",
                   best, runner, False, comps, adjusted)


# --------------------------------------------------------------------------------------------- two judges


def mean_logs(groups: Mapping[str, Arm]) -> dict[str, float]:
    """Each arm's mean log value over its seeds, a failed seed counted as the worst: the order ``verdict`` ranks by."""
    arms = _arms(groups)
    worst = _worst(*arms.values())
    return {} if worst is None else {k: _mean_log(v, worst) for k, v in arms.items()}


@dataclass(frozen=True)
class Agreement:
    """Whether a second judge agrees with the first on a study.

    tau: Kendall's tau-b (scipy.stats.kendalltau) between the two judges' arm rankings, each arm ranked by its
    mean log value over seeds (``mean_logs``), over the arms both judged; None when it is undefined (fewer than 2
    such arms, or one judge ties them all). p: its two-sided p-value (no test of agreement at a handful of arms;
    shown for scale). flips: why the verdict flips between the judges, one sentence each; empty when it holds.
    """

    tau: float | None
    p: float | None
    arms: int
    flips: tuple[str, ...]

    @property
    def flipped(self) -> bool:
        return bool(self.flips)


def agreement(first_groups: Mapping[str, Arm], second_groups: Mapping[str, Arm], first: Verdict, second: Verdict,
              names: tuple[str, str] = ("first judge", "second judge")) -> Agreement:
    """Kendall's tau between two judges' rankings of the same arms (``{arm: {seed: value}}`` each, with their
    ``verdict``s), and the flip: the best arm differs, or the verdict is significant under one judge only."""
    from scipy.stats import kendalltau

    a, b = mean_logs(first_groups), mean_logs(second_groups)
    both = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    tau = p = None
    if len(both) >= 2:
        result = kendalltau([a[k] for k in both], [b[k] for k in both])
        if math.isfinite(result.statistic):
            tau, p = float(result.statistic), float(result.pvalue)
    flips = []
    if first.best and second.best and first.best != second.best:
        flips.append(f"the best arm differs: {first.best} under the {names[0]}, {second.best} under the {names[1]}")
    if first.significant != second.significant:
        yes, no = names if first.significant else names[::-1]
        flips.append(f"the verdict is significant under the {yes} and not under the {no}")
    return Agreement(tau, p, len(both), tuple(flips))


def _ci(c: Comparison) -> str:
    """'95% CI 0.51–0.75'."""
    return f"{c.level:.0%} CI {ratio_digits(c.lo)}–{ratio_digits(c.hi)}"


def _ci_p(c: Comparison, p: float, label: str) -> str:
    return f"{_ci(c)}, {_p(p, label)}"


@dataclass(frozen=True)
class Choices:
    """A leave-one-out study's answer. costs: each restored choice against the reference arm (everything fixed),
    costliest first, with Holm-adjusted p-values over all of them (p_holm, same order); verdict: which one costs the
    most (best = the costliest, runner_up = the next)."""

    verdict: Verdict
    costs: tuple[Comparison, ...] = ()
    p_holm: tuple[float, ...] = ()

    def costly(self, alpha: float = ALPHA) -> list[str]:
        """The restored choices that clearly raise the metric above the reference's, costliest first."""
        return [c.a for c, p in zip(self.costs, self.p_holm, strict=True) if p < alpha and c.ratio > 1]


def costliest_choice(groups: Mapping[str, Arm], reference: str, choices: Sequence[str], metric: str,
                     level: float = LEVEL, alpha: float = ALPHA) -> Choices:
    """Leave-one-out: each arm in ``choices`` restores one choice with all the others fixed (``reference``).

    Every restored choice is compared with the reference, paired by seed, Holm over all of them: a choice costs
    when its adjusted p < alpha and its ratio is above 1. The costliest (the highest mean log value) is named
    only if it costs AND it is significantly above the next costliest (a second test at alpha, made only when the
    first rejects: a fixed sequence, so the claim keeps its false-winner rate; simulated in the tests).
    """
    arms = _arms(groups)
    if reference not in arms or not _split(arms[reference])[0]:
        return Choices(Verdict(f"the \u201c{reference}\u201d arm has no finished trial: nothing to measure the "
                               "restored choices against"))
    worst = _worst(*arms.values())
    restored = {k: arms[k] for k in choices if k in arms}
    if not restored:
        return Choices(Verdict("no restored choice has finished trials yet"))
    ranked = _ranked(restored, worst)[::-1]  # costliest first
    costs = tuple(compare(restored[k], arms[reference], level, names=(k, reference), worst=worst) for k in ranked)
    adjusted = holm([c.p for c in costs])
    top, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    vs_ref, p_ref = costs[0], adjusted[0]
    failed = _failed_note({k: _split(arms[k])[1] for k in (reference, *ranked)})
    seeds = _n_seeds(costs)
    quoted, ref = f"\u201c{top}\u201d", f"\u201c{reference}\u201d"
    out = {"costs": costs, "p_holm": adjusted}
    if _thin(costs):
        return Choices(Verdict(f"only one seed: no verdict on which choice costs most ({', '.join(_thin(costs))} "
                               "with fewer than 2 usable seeds; run more seeds)", top, second), **out)
    holm_note = f"Holm over {len(costs)} restored choices"
    raises = (f"restoring {quoted} alone (all else fixed) raises {metric} to {ratio_text(vs_ref.ratio)} {ref}'s "
              f"({_ci_p(vs_ref, p_ref, 'p_holm')})")
    if not (p_ref < alpha and vs_ref.ratio > 1):
        return Choices(Verdict(f"no restored choice clearly raises {metric} above {ref}'s ({holm_note}): the "
                               f"largest, {quoted}, gives {ratio_text(vs_ref.ratio)} "
                               f"({_join(_ci_p(vs_ref, p_ref, 'p_holm'), seeds, failed)})", top, second), **out)
    if second is None:
        return Choices(Verdict(f"{raises}; it is the only restored choice ({_join(seeds, failed)})", top, None, True,
                               (vs_ref,), (p_ref,)), **out)
    vs_second = compare(restored[top], restored[second], level, names=(top, second), worst=worst)
    comps = (vs_ref, vs_second)
    if vs_second.p < alpha and vs_second.ratio > 1:
        return Choices(Verdict(f"{raises} and to {ratio_text(vs_second.ratio)} the next costliest "
                               f"\u201c{second}\u201d's ({_ci_p(vs_second, vs_second.p, 'p')}): of the blog's "
                               f"choices, that one costs the most ({_join(holm_note, seeds, failed)})",
                               top, second, True, comps, (p_ref, vs_second.p)), **out)
    return Choices(Verdict(f"{raises}, but restoring \u201c{second}\u201d costs about as much ({quoted} has "
                           f"{ratio_text(vs_second.ratio)} its {metric}, "
                           f"{_join(_ci_p(vs_second, vs_second.p, 'p'), seeds, failed)}), so no single choice is "
                           "clearly the costliest", top, second, False, comps, (p_ref, vs_second.p)), **out)


# --------------------------------------------------------------------------------------------- learning


@dataclass(frozen=True)
class Learning:
    """Did an arm learn? ratio = geometric mean of final/step-0 over seeds, [lo, hi] its t-interval
    (NaN with one seed); learned = hi < max_ratio (with one seed: ratio < max_ratio)."""

    n: int
    ratio: float
    lo: float
    hi: float
    learned: bool
    text: str
    failed: tuple[int, ...] = ()
    level: float = LEVEL

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.lo)


def learned(step0: Arm, final: Arm, level: float = LEVEL, max_ratio: float = 0.5, *,
            metric: str = "FID") -> Learning:
    """Whether ``final`` is clearly below ``max_ratio`` times ``step0``, paired over the seeds both have.

    A seed whose final (or step-0) value failed counts as not learned: ratio 1 for that seed.
    """
    seeds = sorted(set(step0) & set(final), key=str)
    failed = tuple(s for s in seeds if _is_failed(step0[s]) or _is_failed(final[s]))
    logs = np.array([0.0 if s in failed else math.log(max(float(final[s]), FLOOR)) - math.log(
        max(float(step0[s]), FLOOR)) for s in seeds])
    fail_note = f"{_seeds(failed)} failed, counted as not learned (ratio 1)" if failed else ""
    bound = ratio_text(max_ratio)
    if len(logs) == 0:
        return Learning(0, math.nan, math.nan, math.nan, False,
                        f"no seed has both a step-0 and a final {metric}: cannot tell whether it learned", (), level)
    ratio = math.exp(float(logs.mean()))
    if len(logs) == 1:
        ok = ratio < max_ratio
        head = "learned" if ok else "did not learn"
        return Learning(1, ratio, math.nan, math.nan, ok,
                        f"{head}: {metric} went to {ratio_text(ratio)} its step-0 value "
                        f"({_join('one seed: no interval', fail_note)})", failed, level)
    m = float(logs.mean())
    lo, hi, _ = _t_interval(m, float(logs.std(ddof=1)) / math.sqrt(len(logs)), len(logs) - 1, level)
    lo, hi = math.exp(lo), math.exp(hi)
    ok = hi < max_ratio
    ci = f"{level:.0%} CI {ratio_digits(lo)}–{ratio_digits(hi)}, {len(logs)} seeds"
    if ok:
        text = (f"learned: {metric} fell to {ratio_text(ratio)} its step-0 value "
                f"({_join(ci, fail_note)}; the whole interval is below {bound})")
    else:
        text = (f"not clearly learned: {metric} went to {ratio_text(ratio)} its step-0 value "
                f"({_join(ci, fail_note)}; the interval reaches {bound} or above)")
    return Learning(len(logs), ratio, lo, hi, ok, text, failed, level)
