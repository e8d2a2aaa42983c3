"""Uncertainty and verdicts: percentile-bootstrap CIs of means and of differences between arms.

Arms are compared on seeds: every complete trial of an arm is one independent draw of its metric.
The bootstrap is the percentile bootstrap of the mean (10,000 resamples, fixed RNG seed, so the
page is reproducible). With 3 seeds it is optimistic (narrower than a t-interval), which is why a
verdict also states how many seeds it rests on, and why one seed never gives a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
RNG_SEED = 0


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    lo: float  # NaN when n < 2: one value has no spread to resample
    hi: float

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.lo)


def _clean(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _resampled_means(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))].mean(axis=1)


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return float(lo), float(hi)


def summarise(values: Sequence[float], level: float = LEVEL) -> Summary:
    """Mean and its percentile-bootstrap CI; NaN values and Nones are dropped first."""
    x = _clean(values)
    if len(x) == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    if len(x) == 1:
        return Summary(1, float(x[0]), math.nan, math.nan)
    lo, hi = _interval(_resampled_means(x, np.random.default_rng(RNG_SEED)), level)
    return Summary(len(x), float(x.mean()), lo, hi)


def difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Summary:
    """mean(b) - mean(a) with a bootstrap CI, each arm resampled on its own (seeds are not paired)."""
    xa, xb = _clean(a), _clean(b)
    diff = float(xb.mean() - xa.mean()) if len(xa) and len(xb) else math.nan
    if len(xa) < 2 or len(xb) < 2:
        return Summary(min(len(xa), len(xb)), diff, math.nan, math.nan)
    rng = np.random.default_rng(RNG_SEED)
    lo, hi = _interval(_resampled_means(xb, rng) - _resampled_means(xa, rng), level)
    return Summary(min(len(xa), len(xb)), diff, lo, hi)


def fmt(x: float | None) -> str:
    """4 significant digits: what the page shows for every metric."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}"


@dataclass(frozen=True)
class Verdict:
    text: str
    best: str | None = None
    runner_up: str | None = None
    significant: bool = False
    lead: Summary | None = None  # runner-up minus best (positive: best is lower)


def verdict(groups: Mapping[str, Sequence[float]], metric: str, level: float = LEVEL) -> Verdict:
    """Which arm has the lowest ``metric`` and whether its lead over the runner-up is significant.

    Significant means the bootstrap CI of the difference in means excludes 0. Both arms need at
    least two seeds: a single seed carries no information about seed-to-seed noise.
    """
    arms = {k: _clean(v) for k, v in groups.items()}
    arms = {k: v for k, v in arms.items() if len(v)}
    if not arms:
        return Verdict(f"no finished trials: no verdict on {metric}")
    ranked = sorted(arms, key=lambda k: arms[k].mean())
    best = ranked[0]
    if len(ranked) == 1:
        return Verdict(f"only one arm has results ({best}): nothing to compare", best)
    runner_up = ranked[1]
    if len(arms[best]) < 2 or len(arms[runner_up]) < 2:
        single = [k for k in (best, runner_up) if len(arms[k]) < 2]
        return Verdict(f"only one seed: no verdict ({' and '.join(single)} finished with a single seed; "
                       f"run more seeds with --seeds 3)", best, runner_up)
    lead = difference(arms[best], arms[runner_up], level)
    seeds = f"{len(arms[best])} vs {len(arms[runner_up])} seeds"
    pct = f"{level:.0%}"
    if lead.lo > 0:
        return Verdict(f"{best} is best on {metric}: {fmt(arms[best].mean())} against {fmt(arms[runner_up].mean())} "
                       f"for the runner-up {runner_up}; the lead of {fmt(lead.mean)} is significant (its {pct} "
                       f"bootstrap CI, [{fmt(lead.lo)}, {fmt(lead.hi)}], excludes 0; {seeds}).",
                       best, runner_up, True, lead)
    return Verdict(f"no clear winner on {metric}: {best} leads {runner_up} by {fmt(lead.mean)}, but the {pct} "
                   f"bootstrap CI of the difference, [{fmt(lead.lo)}, {fmt(lead.hi)}], includes 0 ({seeds}).",
                   best, runner_up, False, lead)


@dataclass(frozen=True)
class Effect:
    arm: str
    gain: Summary  # baseline minus arm: positive means the arm is lower (better) than the baseline


def effects(groups: Mapping[str, Sequence[float]], baseline: str, level: float = LEVEL) -> list[Effect]:
    """Every arm against the baseline, largest gain first (seed_quirks: what each single fix buys)."""
    base = groups.get(baseline, [])
    out = [Effect(arm, difference(values, base, level)) for arm, values in groups.items()
           if arm != baseline and len(_clean(values))]
    return sorted(out, key=lambda e: -e.gain.mean if not math.isnan(e.gain.mean) else math.inf)


def costliest_quirk(groups: Mapping[str, Sequence[float]], baseline: str, metric: str,
                    exclude: Sequence[str] = ("all fixed",), level: float = LEVEL) -> Verdict:
    """seed_quirks: the single fix that lowers ``metric`` most against the blog's setting, if significantly."""
    if len(_clean(groups.get(baseline, []))) == 0:
        return Verdict(f"the {baseline!r} arm has no finished trial: nothing to measure the fixes against")
    single = {k: v for k, v in groups.items() if k not in exclude}
    ranked = effects(single, baseline, level)
    if not ranked:
        return Verdict("no single fix has finished trials yet")
    top = ranked[0]
    if top.gain.n < 2:
        return Verdict("only one seed: no verdict on which quirk costs most (run more seeds with --seeds 3)",
                       top.arm)
    pct = f"{level:.0%}"
    ci = f"{pct} bootstrap CI [{fmt(top.gain.lo)}, {fmt(top.gain.hi)}]"
    if top.gain.lo > 0:
        return Verdict(f"fixing \u201c{top.arm}\u201d alone lowers {metric} the most, by {fmt(top.gain.mean)} ({ci}, "
                       f"excludes 0): of the blog's quirks, that one costs the most.", top.arm, baseline, True,
                       top.gain)
    if top.gain.mean > 0:
        return Verdict(f"no single quirk clearly costs the most: the largest gain, from fixing \u201c{top.arm}\u201d, "
                       f"is {fmt(top.gain.mean)} {metric} ({ci}, includes 0).", top.arm, baseline, False, top.gain)
    return Verdict(f"no single fix lowers {metric} below the blog's setting at this budget.", None, baseline)
