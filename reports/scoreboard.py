"""The scoreboard: every scored generator on one board, one table per protocol.

Entries: each grid study arm's best seed (lowest FID among its finished trials) and every results folder under
``--scores DIR`` (``python -m gan_core.evaluate --samples ... --out DIR/NAME``). Scores are ranked together only
when their protocols (gan_core.judging.protocol) are equal: each protocol gets its own table, and the page says
in which parts every other protocol differs from the first one's.
"""

from __future__ import annotations

import json
import math
import numbers

from gan_core.errors import UserError
from gan_core.judging.metrics import MetricNames
from gan_core.judging.protocol import Protocol
from reports import figures
from reports.load import Score, StudyData
from reports.sections import _read_png, anchor, best_seed, picture_point

COLUMNS = ("fid", "kid", "precision", "recall", "modes")  # MetricNames properties, in the table's order
SCORE_COMMAND = "python -m gan_core.evaluate --samples PATH --out results/NAME"


def _protocol(saved) -> Protocol | None:
    try:
        return Protocol.of({"protocol": saved})
    except UserError:  # scored before protocols were recorded
        return None


def _number(x) -> float | None:
    # numbers.Real: a frame's numpy.int64 is no int (a seed read as "?" on the first real page); NaN: no value
    return float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) else None


def _entry(name: str, source: str, metrics: dict, protocol, samples, names: MetricNames | None) -> dict:
    data = _read_png(samples)
    return {"name": name, "source": source, "protocol": _protocol(protocol),
            "values": {c: _number(metrics.get(getattr(names, c))) if names else None for c in COLUMNS},
            "image": figures.Image(f"score-{anchor(name)}", data, f"samples of {name}") if data else None}


def _arm_entries(study: StudyData) -> list[dict]:
    out = []
    for arm, done in study.complete.groupby("arm", sort=False):
        best = best_seed(done)
        metrics = {getattr(study.names, c): best[c] for c in COLUMNS} if study.names else {}
        seed = int(best["seed"]) if _number(best["seed"]) is not None else "?"
        source = f"study, best of {len(done)} seed(s): seed {seed}"
        drawn = picture_point(best, study)
        if drawn["past_budget"]:  # it trained on to equal compute: its samples are from there, its numbers are not
            source += (f"; samples after {drawn['drawn_at']:,} G steps, where its training ended, past the budget "
                       "these numbers are at")
        out.append(_entry(f"{study.name}: {arm}", source, metrics, best["protocol"], best["samples"], study.names))
    return out


def _score_entry(score: Score) -> dict:
    n = score.metrics.get("n_generated")
    names = MetricNames.for_count(n) if isinstance(n, int) else None
    given = score.metrics.get("input") or {}
    source = f"scored {given.get('kind', 'samples')} {given.get('source', '')}".strip()
    return _entry(score.name, source, score.metrics, score.metrics.get("protocol"), score.samples, names)


def scoreboard(studies: list[StudyData], scores: list[Score]) -> dict:
    """{"tables": one per protocol, the largest first, each {"protocol", "names", "rows", "differs"}, "count"}."""
    entries = [e for s in studies if s.is_grid and s.names for e in _arm_entries(s)]
    entries += [_score_entry(s) for s in scores]
    groups: dict[str, list[dict]] = {}
    for e in entries:
        key = json.dumps(e["protocol"].to_dict(), sort_keys=True) if e["protocol"] else ""
        groups.setdefault(key, []).append(e)
    ordered = sorted(groups.values(), key=lambda rows: (rows[0]["protocol"] is None, -len(rows)))
    first = ordered[0][0]["protocol"] if ordered else None
    tables = []
    for i, rows in enumerate(ordered):
        proto = rows[0]["protocol"]
        differs = None
        if proto is None:
            differs = "no protocol recorded (scored by an older version): not comparable with any other table"
        elif i > 0 and first is not None:
            differs = "differs from the first table's protocol in " + "; ".join(first.differences(proto))
        names = MetricNames.for_count(proto.n_generated) if proto else None
        rank = sorted(rows, key=lambda r: (r["values"]["fid"] is None, r["values"]["fid"] or 0.0))
        tables.append({"index": i + 1, "protocol": proto, "differs": differs, "rows": rank,
                       "names": {c: getattr(names, c) if names else c for c in COLUMNS}})
    return {"tables": tables, "count": len(entries), "command": SCORE_COMMAND}
