"""The report at a terminal: what ``python -m ablations.run`` prints when its study ends, the page's own arm table
(reports.sections.arm_table) as text, with the page's rules for failures, retries and intervals."""

from __future__ import annotations

from pathlib import Path

from reports import load, sections
from reports.stats import fmt


def summary_table(study, runs: str | Path, floor: dict | None) -> str:
    """The report's own arm table (reports.sections.arm_table), as text: per arm its finished seeds, FID and KID
    (mean and 95% t-interval over seeds) and its failures, by the report's rules (a retried failure is no result).
    A searched study, which has no arms, gets its best trial."""
    data = load.study_data(study, study.get_trials(deepcopy=False), Path(runs))
    k = data.names
    if k is None:  # nothing was judged yet
        return ""
    lines = []
    if data.is_grid:
        rows = sections.arm_table(data, sections.arm_order(data))
        w = max([len("real-data floor"), *(len(r["arm"]) for r in rows)])  # the widest arm label sets the column
        header = f"{'arm':<{w}} {'seeds':>5}  {k.fid + ' mean [95% CI]':<26} {k.kid + ' mean [95% CI]':<30} failed"
        lines = [header, "-" * len(header)]
        for r in rows:
            failed = [f"{f['count']} {f['kind']}" for f in r["failures"]] + \
                [f"{n} {what}" for n, what in ((r["retried"], "retried"), (r["pruned"], "pruned")) if n]
            lines.append(f"{r['arm']:<{w}} {r['seeds']:>5}  {_spread(r['fid']):<26} {_spread(r['kid']):<30} "
                         f"{', '.join(failed) or '-'}")
        if floor:
            lines.append(f"{'real-data floor':<{w}} {'':>5}  {floor[k.fid]:<26.4g} {floor[k.kid]:<30.4g}")
        if rows and not any(r["seeds"] for r in rows):
            lines.append("every trial of this study failed: see the reasons above and in the run folders")
    elif not data.complete.empty:
        best = data.complete.sort_values("value").iloc[0]
        lines.append(f"best trial #{best['number']}: {k.fid} {best['fid']:.4g} with {best['params']}")
    if floor and not data.is_grid:
        lines.append(f"real-data floor: {k.fid} {floor[k.fid]:.4g}")
    return "\n".join(lines)


def _spread(s) -> str:
    """A reports.stats.Summary as the page's arm table writes it (stats.fmt): mean [lo, hi], the mean alone for one
    seed, a dash for none."""
    return f"{fmt(s.mean)} [{fmt(s.lo)}, {fmt(s.hi)}]" if s.has_ci else fmt(s.mean)
