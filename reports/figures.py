"""Seaborn figures as PNG bytes, ready to embed as base64 (the page fetches nothing).

Figures are ``matplotlib.figure.Figure`` objects rendered by the Agg canvas directly: no pyplot, so no
global figure registry, no backend to select and no state leaking into the process that calls the
report builder (ablations.run). Styles are applied in a context, never globally. Means and CIs drawn
here come from reports.stats, so the plots and the tables show the same numbers.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from reports import stats

DPI = 100
POINT_COLOR = "0.35"
MEAN_COLOR = "#c0392b"
FLOOR_COLOR = "#27ae60"
FLOOR_FAR = 3.0  # a floor further below the data than this many data spans is annotated, not drawn to scale


@dataclass(frozen=True)
class Image:
    name: str  # file stem when written beside the page (--png-dir)
    data: bytes  # PNG
    alt: str

    @property
    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _rotate_if_long(ax, labels: Sequence[str]) -> None:
    if sum(len(str(x)) for x in labels) > 40:
        ax.tick_params(axis="x", labelrotation=30)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")


def _floor_line(ax, floor: float | None, values: np.ndarray) -> None:
    """The real-data floor as a reference line; when far below the data, a note instead of a squashed plot."""
    if floor is None or not math.isfinite(floor):
        return
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        span = max(hi - lo, 1e-12 + abs(hi) * 0.01)
        if lo - floor > FLOOR_FAR * span:
            ax.text(0.01, 0.02, f"real-data floor {stats.fmt(floor)} (far below; off this axis)",
                    transform=ax.transAxes, color=FLOOR_COLOR, fontsize=8, va="bottom")
            return
    ax.axhline(floor, ls="--", color=FLOOR_COLOR, lw=1.2, label=f"real-data floor {stats.fmt(floor)}")
    ax.legend(loc="best", fontsize=8)


def knob_figure(name: str, complete: pd.DataFrame, order: Sequence[str], knob: str,
                metrics: Sequence[tuple[str, str, float | None]]) -> Image | None:
    """Per metric (column, label, floor): every seed as a point, the mean with its t-interval per arm."""
    if complete.empty:
        return None
    with _style():
        fig = Figure(figsize=(max(4.5, 0.9 * len(order) + 1.5) * len(metrics), 3.8))
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, (column, label, floor) in zip(axes, metrics, strict=True):
            data = complete[["arm", column]].dropna()
            data = data.assign(**{column: data[column].astype(float)})
            sns.stripplot(data=data, x="arm", y=column, order=list(order), ax=ax, color=POINT_COLOR, size=5,
                          jitter=0.12, alpha=0.8)
            for i, arm in enumerate(order):
                s = stats.summarise(data.loc[data["arm"] == arm, column].tolist())
                if s.n == 0:
                    continue
                err = [[s.mean - s.lo], [s.hi - s.mean]] if s.has_ci else None
                ax.errorbar(i, s.mean, yerr=err, fmt="D", color=MEAN_COLOR, ms=6, capsize=6, lw=1.6, zorder=5,
                            label="mean, 95% t-interval" if i == 0 else None)
            _floor_line(ax, floor, data[column].to_numpy(dtype=float))
            ax.set_xlabel(knob)
            ax.set_ylabel(f"{label} (lower is better)")
            ax.set_title(f"{label} per seed", fontsize=10)
            _rotate_if_long(ax, order)
        fig.tight_layout()
        return Image(name, _png(fig), f"{knob} vs " + " and ".join(m[1] for m in metrics))


MAX_LEGEND = 12


def anytime_figure(name: str, curves: pd.DataFrame, order: Sequence[str], metrics: Sequence[str | None],
                   hue: str = "arm", units: str = "seed") -> Image | None:
    """Intermediate metrics against generator steps and against wall seconds, one line per arm and seed
    (``hue``/``units``: a searched study colours by trial state, one line per trial)."""
    metrics = [m for m in metrics if m and m in curves.columns]
    if curves.empty or not metrics:
        return None
    hue_order = [a for a in order if a in set(curves[hue])]
    with _style():
        fig = Figure(figsize=(11, 3.4 * len(metrics)))
        axes = fig.subplots(len(metrics), 2, squeeze=False)
        for r, metric in enumerate(metrics):
            for c, x in enumerate(("g_step", "wall_s")):
                ax = axes[r][c]
                data = curves[list(dict.fromkeys([hue, units, x, metric]))].dropna()
                sns.lineplot(data=data, x=x, y=metric, hue=hue, hue_order=hue_order, units=units, estimator=None,
                             marker="o", markersize=4, lw=1.2, ax=ax,
                             legend=(r == 0 and c == 1 and len(hue_order) <= MAX_LEGEND))
                ax.set_xlabel("generator steps" if x == "g_step" else "training wall seconds")
                ax.set_ylabel(metric)
        handles = axes[0][1].get_legend()
        if handles is not None:
            sns.move_legend(axes[0][1], "upper left", bbox_to_anchor=(1.02, 1), title=f"{hue} (one line per {units})",
                            fontsize=8)
        fig.tight_layout()
        return Image(name, _png(fig), "anytime curves: " + ", ".join(metrics) + " vs G steps and wall seconds")


def coverage_figure(name: str, complete: pd.DataFrame, order: Sequence[str]) -> Image | None:
    """Mode coverage: the share of each predicted digit per arm (mean over seeds); 0.1 each is balanced."""
    share_cols = [f"share_{d}" for d in range(10)]
    data = complete.dropna(subset=share_cols, how="all")
    if data.empty:
        return None
    arms = [a for a in order if a in set(data["arm"])]
    matrix = data.groupby("arm")[share_cols].mean().reindex(arms).astype(float)
    matrix.columns = [str(d) for d in range(10)]
    modes = data.groupby("arm")["modes"].mean().reindex(arms)
    matrix.index = [f"{a} ({stats.fmt(m)}/10)" if pd.notna(m) else a for a, m in zip(arms, modes, strict=True)]
    with _style():
        fig = Figure(figsize=(8, 0.45 * len(arms) + 1.6))
        ax = fig.subplots()
        sns.heatmap(matrix, ax=ax, vmin=0, vmax=max(0.3, float(np.nanmax(matrix.to_numpy()))), cmap="mako_r",
                    annot=True, fmt=".2f", annot_kws={"fontsize": 7}, cbar_kws={"label": "share of samples"})
        ax.set_xlabel("predicted digit (MNIST classifier); 0.10 each = balanced")
        ax.set_ylabel("arm (classes covered)")
        fig.tight_layout()
        return Image(name, _png(fig), "mode coverage: share of generated samples per predicted digit")


def history_figure(name: str, trials: pd.DataFrame, label: str) -> Image | None:
    """A searched study: every trial's objective in order, the best so far, pruned and failed marked."""
    done = trials[trials["state"] == "COMPLETE"].dropna(subset=["value"]).sort_values("number")
    if done.empty:
        return None
    with _style():
        fig = Figure(figsize=(8, 3.4))
        ax = fig.subplots()
        ax.scatter(done["number"], done["value"].astype(float), color=POINT_COLOR, s=18, label="complete", zorder=3)
        ax.step(done["number"], done["value"].astype(float).cummin(), where="post", color=MEAN_COLOR,
                label="best so far")
        for state, marker in (("PRUNED", "x"), ("FAIL", "v")):
            n = trials.loc[trials["state"] == state, "number"]
            if len(n):
                y = np.full(len(n), float(done["value"].max()))
                ax.scatter(n, y, marker=marker, color="0.6", label=f"{state.lower()} (no value)", zorder=2)
        ax.set_xlabel("trial number")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{label} (lower is better)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return Image(name, _png(fig), f"{label} of every trial in order")


def importance_figure(name: str, importances: dict[str, float]) -> Image | None:
    if not importances:
        return None
    data = pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
    with _style():
        fig = Figure(figsize=(6, 0.35 * len(data) + 1.2))
        ax = fig.subplots()
        sns.barplot(data=data, y="parameter", x="importance", ax=ax, color="#4c72b0")
        ax.set_xlabel("importance (normalised, sums to 1)")
        fig.tight_layout()
        return Image(name, _png(fig), "parameter importances")


def throughput_figure(name: str, rows: pd.DataFrame, value: str, label: str) -> Image | None:
    """One bar per model x variant (loop for the baselines): images/s on one device."""
    data = rows.dropna(subset=[value])
    if data.empty:
        return None
    with _style():
        fig = Figure(figsize=(9, 0.42 * len(data) + 1.4))
        ax = fig.subplots()
        sns.barplot(data=data, y="model", x=value, hue="case", ax=ax, orient="h")
        ax.set_xlabel(label)
        ax.set_ylabel("")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title="loop / variant")
        fig.tight_layout()
        return Image(name, _png(fig), f"{label} per model and variant")


def tuning_figure(name: str, points: pd.DataFrame, knob: str, metric: str) -> Image | None:
    """A tuning phase's sweep: each family's tuning FIDs against the swept value (both axes logarithmic: the values
    are log-spaced and the FIDs span orders of magnitude), a line through each value's geometric mean over tuning
    seeds, the value each family won with ringed. ``points``: one row per finished tuning trial (family, value, fid,
    chosen)."""
    if points.empty:
        return None
    data = points.assign(fid=points["fid"].astype(float), value=points["value"].astype(float))
    with _style():
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        means = data.groupby(["family", "value"], sort=False).agg(
            fid=("fid", lambda x: float(np.exp(np.log(x).mean()))), chosen=("chosen", "first")).reset_index()
        sns.lineplot(data=means, x="value", y="fid", hue="family", marker="o", ax=ax, sort=True)
        sns.scatterplot(data=data, x="value", y="fid", hue="family", ax=ax, legend=False, alpha=0.5, s=18)
        won = means[means["chosen"]]
        ax.scatter(won["value"], won["fid"], s=220, facecolors="none", edgecolors="black", lw=1.5, zorder=5,
                   label="chosen")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # FIDs as plain numbers: 20, 50, 100
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{knob} (log scale)")
        ax.set_ylabel(f"{metric} on the tuning seeds (lower is better)")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title="tuned arm (ringed: chosen)")
        fig.tight_layout()
        return Image(name, _png(fig), f"{metric} against {knob} per family on the tuning seeds, "
                                      "the chosen value ringed")
