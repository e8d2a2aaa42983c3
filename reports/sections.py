"""From loaded frames to what the template shows: tables, verdicts and figures per section.

Everything here is plain data (dicts, lists, reports.stats summaries, reports.figures images); the
template only lays it out. Numbers are computed once, here, and the figures use the same functions.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pandas as pd

from gan_core.errors import first_line
from gan_core.training.run_folder import NEIGHBOURS, SAMPLES
from reports import figures, record, stats
from reports.load import SECOND_JUDGE_COLUMNS, SECOND_JUDGE_NAME, StudyData, second_judge_names

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_STUDY = "python -m ablations.run --study {name}"
RUN_BENCHMARKS = "pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/{device}.json"
PENDING = ("RUNNING", "WAITING")
TOP_CONFIGS = 5


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def study_anchor(name: str) -> str:
    """A study section's id: prefixed, so that a study called "overview" cannot take the header's id."""
    return "study-" + anchor(name)


def fraction(x: float) -> str:
    f = Fraction(x).limit_denominator(64)
    return str(f) if float(f) == x else f"{x:g}"


def _mean(series: pd.Series) -> float | None:
    x = pd.to_numeric(series, errors="coerce").dropna()
    return float(x.mean()) if len(x) else None


# ---- header ------------------------------------------------------------------------------------------

def budget_text(study: StudyData) -> str:
    b = study.attrs.get("budget") or {}
    if not b:
        return "budget not recorded"
    split = study.attrs.get("split") or [None, None]
    n_real = split[1] if len(split) > 1 else None
    batch = b.get("batch_size") or _first(study.trials["batch_size"])
    steps = b.get("g_steps")
    parts = [f"{steps:,} G steps per trial" if isinstance(steps, int) else f"{steps or '?'} G steps per trial"]
    if batch:
        parts.append(f"batch {batch}")
    n = b.get("eval_n") or n_real
    parts.append(f"final metrics on {n} generated vs {n_real} held-out images")
    if b.get("eval_every"):
        parts.append(f"anytime metrics every {b['eval_every']} G steps on {b.get('eval_n_intermediate')} samples")
    if study.attrs.get("shrink", 1) != 1:
        parts.append(f"channels \u00d7{fraction(study.attrs['shrink'])} (never below 8)")
    if b.get("seeds"):
        parts.append(f"{study.attrs.get('seeds', b['seeds'])} seed(s) per arm")
    return "; ".join(parts)


def _first(series: pd.Series):
    x = series.dropna()
    return x.iloc[0] if len(x) else None


def shrunk(study: StudyData, name: str | None = None) -> str | None:
    """The note for a budget that shrank the models (shrink < 1), or None."""
    b = study.attrs.get("budget") or {}
    scale = study.attrs.get("shrink")
    if scale is None or scale >= 1:
        return None
    return (f"{name or study.name}: the \u201c{b.get('name', '?')}\u201d budget multiplied every layer's channels "
            f"by {fraction(scale)}, never below 8 channels; each arm's actual channel lists are in its table.")


def shrunk_banners(studies: list[StudyData]) -> list[str]:
    """One warning per shrinking budget, naming every study run with it."""
    by_budget: dict[tuple, list[StudyData]] = {}
    for s in studies:
        if shrunk(s):
            by_budget.setdefault((s.attrs["budget"].get("name"), s.attrs.get("shrink")), []).append(s)
    return [shrunk(group[0], ", ".join(s.name for s in group)) for group in by_budget.values()]


def split_extractor(name: str | None) -> tuple[str, str]:
    """``mnist-cnn-v1-81967625`` -> (``mnist-cnn-v1``, ``81967625``): the network and its weights hash."""
    if not name:
        return "not recorded", "–"
    head, _, tail = name.rpartition("-")
    return (head, tail) if head and re.fullmatch(r"[0-9a-f]{6,64}", tail) else (name, "–")


def counts(trials: pd.DataFrame) -> dict[str, int]:
    c = Counter(trials["state"])
    return {"complete": c["COMPLETE"], "failed": c["FAIL"], "pruned": c["PRUNED"],
            "running": c["RUNNING"], "queued": c["WAITING"]}


def overview(studies: list[StudyData]) -> dict:
    rows, floors = [], []
    all_trials = pd.concat([s.trials for s in studies], ignore_index=True) if studies else pd.DataFrame()
    for s in studies:
        split = s.attrs.get("split") or []
        ex_name, ex_hash = split_extractor(s.attrs.get("extractor"))
        rows.append({
            "anchor": study_anchor(s.name), "name": s.name, "kind": s.kind or "not from ablations.run",
            "base": s.attrs.get("base", "–"), "budget": (s.attrs.get("budget") or {}).get("name", "–"),
            "budget_text": budget_text(s), "counts": counts(s.trials),
            "data": s.attrs.get("data", "–"),
            "split": f"{split[0]:,} train / {split[1]:,} held-out" if len(split) == 2 else "–",
            "devices": (", ".join(sorted(set(s.trials["device"].dropna()))) or "–")
                       + f" ({s.attrs.get('precision', record.BEFORE_RECORDED['precision'])})",
            "extractor": ex_name, "weights": ex_hash, "objective": s.attrs.get("objective", "–"),
        })
        floor = s.attrs.get("floor") or {}
        if s.names and floor:
            k = s.names
            floors.append({"name": s.name, "n": floor.get("n_generated"), "n_real": floor.get("n_real"),
                           "fid_label": k.fid, "fid": floor.get(k.fid), "kid_label": k.kid, "kid": floor.get(k.kid),
                           "precision": floor.get(k.precision), "recall": floor.get(k.recall),
                           "modes": floor.get(k.modes)})
    commits = Counter(all_trials["git_commit"].dropna()) if len(all_trials) else Counter()
    versions = []
    if len(all_trials):
        cols = ["python", "torch", "optuna", "torch_fidelity"]
        done = all_trials.dropna(subset=["python"])
        for combo, n in Counter(tuple(r) for r in done[cols].itertuples(index=False)).most_common():
            versions.append({**dict(zip(cols, combo, strict=True)), "trials": n})
    hosts = Counter(all_trials["host"].dropna()) if len(all_trials) else Counter()
    return {"studies": rows, "floors": floors, "commits": commits.most_common(), "versions": versions,
            "hosts": hosts.most_common(), "shrunk": shrunk_banners(studies)}


# ---- a grid study --------------------------------------------------------------------------------------

def arm_order(study: StudyData) -> list[str]:
    known = study.arms
    seen = list(dict.fromkeys(study.trials["arm"].dropna()))
    return [a for a in known if a in seen] + [a for a in seen if a not in known]


def failure_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed trials that are results: their arm x seed has no complete, running or queued trial.

    A failure whose arm x seed finished later (a worker was killed and the trial retried) was an
    accident, not an outcome, and is counted as a retry instead.
    """
    fails = trials[trials["state"] == "FAIL"]
    if fails.empty:
        return fails.assign(final=pd.Series(dtype=bool))
    settled = trials[trials["state"].isin(("COMPLETE", *PENDING))]
    done = set(zip(settled["arm"], settled["seed"], strict=True))
    final = [(a, s) not in done for a, s in zip(fails["arm"], fails["seed"], strict=True)]
    return fails.assign(final=final)


def seed_groups(study: StudyData, order: list[str], column: str) -> dict[str, dict[int, float | None]]:
    """{arm: {seed: value}} for the paired statistics: complete trials give their value, a seed whose trial
    failed as a result (diverged, out of memory: failure_rows) gives None, which counts as that pair's worst."""
    fails = failure_rows(study.trials)
    final = fails[fails["final"]]
    groups: dict[str, dict[int, float | None]] = {}
    for arm in order:
        done = study.complete[study.complete["arm"] == arm]
        values = {int(s): (None if pd.isna(v) else float(v)) for s, v in zip(done["seed"], done[column], strict=True)}
        values.update({int(s): None for s in final.loc[final["arm"] == arm, "seed"] if int(s) not in values})
        groups[arm] = values
    return groups


def learning(study: StudyData, order: list[str], final: dict[str, dict]) -> dict[str, stats.Learning]:
    """Per arm: did it learn? Its final FID (``final``: seed_groups of "fid") against the untrained generator's
    (step 0), paired over seeds."""
    step0 = seed_groups(study, order, "fid_step0")
    return {arm: stats.learned(step0[arm], final[arm], metric=study.names.fid) for arm in order
            if any(v is not None for v in step0[arm].values())}


def arm_table(study: StudyData, order: list[str], learned: dict[str, stats.Learning] | None = None) -> list[dict]:
    fails = failure_rows(study.trials)
    learned = learned or {}
    rows = []
    for arm in order:
        t = study.trials[study.trials["arm"] == arm]
        done = t[t["state"] == "COMPLETE"]
        f = fails[fails["arm"] == arm]
        final = f[f["final"]]
        reasons = Counter((k or "error", r or "no reason recorded") for k, r in
                          zip(final["fail_kind"], final["fail_reason"], strict=True))
        rows.append({
            "arm": arm, "blog_arm": arm == study.blog_arm, "seeds": len(done),
            "seed_list": ", ".join(str(s) for s in sorted(done["seed"].dropna())),
            "fid": stats.summarise(done["fid"].tolist()), "kid": stats.summarise(done["kid"].tolist()),
            "fid_flops": stats.summarise(done["fid_flops"].dropna().tolist()),
            "g_steps_flops": int(done["g_steps_flops"].median()) if done["g_steps_flops"].notna().any() else None,
            "learned": learned.get(arm), "base_arm": arm == study.base_arm,
            "channels": _first(done["channels"]) if len(done) else None,
            "precision": _mean(done["precision"]), "recall": _mean(done["recall"]), "modes": _mean(done["modes"]),
            "images_per_s": _mean(done["g_images_per_s"]), "wall_s": _mean(done["wall_s"]),
            "failures": [{"kind": k, "reason": r, "count": n} for (k, r), n in reasons.items()],
            "retried": int((~f["final"]).sum()), "pruned": int((t["state"] == "PRUNED").sum()),
            "pending": int(t["state"].isin(PENDING).sum()),
        })
    return rows


def sample_grids(study: StudyData, order: list[str]) -> list[dict]:
    """Per arm, the samples.png of its best seed (lowest FID): fixed noise, generator in eval mode."""
    return best_seed_pictures(study, order, "samples", SAMPLES)


def best_seed_pictures(study: StudyData, order: list[str], column: str, file: str) -> list[dict]:
    """Per arm, the picture in ``column`` (a trial frame's path column, the run folder's ``file``) of its best seed
    (lowest FID), or why it is missing."""
    out = []
    for arm in order:
        done = study.complete[study.complete["arm"] == arm]
        if done.empty:
            out.append({"arm": arm, "missing": "no finished trial"})
            continue
        best = best_seed(done)
        data = _read_png(best[column])
        if data is None:
            why = ("run folder not found (pass --runs, or --artifacts for another host's)" if best["run_dir"] is None
                   else f"{file} missing")
            out.append({"arm": arm, "missing": why, "seed": best["seed"]})
            continue
        out.append({"arm": arm, "seed": best["seed"], "trial": int(best["number"]), "fid": best["fid"],
                    **picture_point(best, study),
                    "image": figures.Image(f"{column}-{anchor(arm)}", data, f"{column} of {arm}, seed {best['seed']}")})
    return out


def best_seed(done: pd.DataFrame) -> pd.Series:
    """An arm's best finished trial (lowest FID, then objective): whose pictures the page and the scoreboard show."""
    return done.sort_values(["fid", "value"], na_position="last").iloc[0]


def picture_point(trial: pd.Series, study: StudyData) -> dict:
    """Where a run folder's pictures were drawn: at the end of its training, which for an arm that trained on to
    equal FLOPs is past the study's G-step budget; with the FID at that point, not at the budget (``fid``)."""
    budget = (study.attrs.get("budget") or {}).get("g_steps")
    end, flops_at = trial["g_steps"], trial["g_steps_flops"]
    past = not (pd.isna(end) or pd.isna(flops_at) or pd.isna(trial["fid_flops"]) or budget is None) \
        and int(flops_at) == int(end) > budget
    return {"drawn_at": None if pd.isna(end) else int(end), "past_budget": past,
            "fid_drawn": trial["fid_flops"] if past else trial["fid"]}


COPY_FLAG = "closer to training digits than held-out digits are: possible copying"


def memorization_section(study: StudyData, order: list[str]) -> dict:
    """The memorization check per arm (gan_core.judging.memorization): the mean copy statistic over seeds with its
    t-interval, in features and in pixels, flagged when the feature-space interval lies wholly above 0.5; and each
    arm's best-seed neighbours.png. ``{"memorization": None}`` for a study run before the check (no values)."""
    done = study.complete
    if study.names is None or pd.to_numeric(done["copy"], errors="coerce").notna().sum() == 0:
        return {"memorization": None}
    rows = []
    for arm in order:
        t = done[done["arm"] == arm]
        feats, pixels = stats.summarise(t["copy"].tolist()), stats.summarise(t["copy_pixels"].tolist())
        rows.append({"arm": arm, "features": feats, "pixels": pixels,  # not "copy": a dict's method to Jinja
                     "flagged": _below(t["copy_p"]), "flagged_pixels": _below(t["copy_pixels_p"]),
                     "flag": COPY_FLAG if feats.has_ci and feats.lo > 0.5 else None})
    return {"memorization": {"rows": rows, "alpha": stats.ALPHA,
                             "neighbours": best_seed_pictures(study, order, "neighbours", NEIGHBOURS)}}


NO_SECOND_JUDGE = "no second judge in this study (it was run before final evaluations were judged twice)"
JUDGE_WORDS = ("first judge", "second judge")


def second_judge(study: StudyData, order: list[str]) -> dict:
    """The study re-judged by the second judge (gan_core.judging.extractor.SECOND): the same ``stats.verdict`` over
    its FID per arm x seed, paired by seed; Kendall's tau between the two judges' arm rankings (mean log FID over
    seeds); and the flip (``stats.agreement``): the best arm differs, or the verdict is significant under one judge
    only. ``{"second_judge": None}`` without an objective; its ``missing`` line for a study run before the second
    judge (no values)."""
    k, k2 = study.names, second_judge_names(study.names)
    if k is None:
        return {"second_judge": None}
    done = study.complete
    column = SECOND_JUDGE_COLUMNS[0]  # its FID
    if pd.to_numeric(done[column], errors="coerce").notna().sum() == 0:
        return {"second_judge": {"missing": NO_SECOND_JUDGE}}
    first_groups, groups = seed_groups(study, order, "fid"), seed_groups(study, order, column)
    first, second = stats.verdict(first_groups, k.fid), stats.verdict(groups, k2.fid)
    agree = stats.agreement(first_groups, groups, first, second, JUDGE_WORDS)
    ranks = [{arm: i + 1 for i, arm in enumerate(sorted(logs, key=logs.get))}
             for logs in (stats.mean_logs(first_groups), stats.mean_logs(groups))]
    rows = [{"arm": arm, "first": stats.summarise(done.loc[done["arm"] == arm, "fid"].tolist()),
             "second": stats.summarise(done.loc[done["arm"] == arm, column].tolist()),
             "rank_first": ranks[0].get(arm), "rank_second": ranks[1].get(arm)} for arm in order]
    names = done[SECOND_JUDGE_NAME].dropna()
    return {"second_judge": {"verdict": second, "agreement": agree, "rows": rows, "metric": k2.fid,
                             "judge": names.iloc[0] if len(names) else "not recorded"}}


def _below(p_values: pd.Series) -> tuple[int, int]:
    """(seeds whose p-value is below ALPHA, seeds with a p-value)."""
    p = pd.to_numeric(p_values, errors="coerce").dropna()
    return int((p < stats.ALPHA).sum()), len(p)


def _read_png(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_SIGNATURE) else None


def grid_section(study: StudyData) -> dict:
    k = study.names
    order = arm_order(study)
    floor = study.attrs.get("floor") or {}
    sid = anchor(study.name)
    complete = study.complete
    section = base_section(study, "grid")
    section.update(memorization_section(study, order))
    section.update(second_judge(study, order))
    if k is None:
        section.update(order=order, table=arm_table(study, order), samples=sample_grids(study, order))
        section["verdict"] = stats.Verdict("the study records no objective: no verdict")
        section["answer"] = section["verdict"].text
        return section
    fid_groups = seed_groups(study, order, "fid")
    learned = learning(study, order, fid_groups)
    section.update(order=order, table=arm_table(study, order, learned), samples=sample_grids(study, order))
    section["verdict"] = stats.verdict(fid_groups, k.fid)
    kid_verdict = stats.verdict(seed_groups(study, order, "kid"), k.kid)
    if section["verdict"].best and kid_verdict.best and kid_verdict.best != section["verdict"].best:
        section["kid_note"] = f"KID ranks differently: {kid_verdict.text}"
    elif section["verdict"].significant:
        section["kid_note"] = f"KID agrees: {kid_verdict.text}"
    if study.attrs.get("verdict") == "leave_one_out":
        section["choices"] = choices_answer(study, fid_groups, learned)
    section["tuning"] = tuning_section(study) if study.attrs.get("tuning") else None
    section["compute"] = equal_compute(study, order, section["verdict"], learned, section["choices"])
    section["answer"] = answer(study, section["verdict"], learned, section["choices"], section["compute"])
    knob = study.knob or "arm"
    fig_list = [
        figures.knob_figure(f"{sid}-knob", complete, order, knob,
                            [("fid", f"{k.fid} at equal G steps" if section["compute"] else k.fid, floor.get(k.fid)),
                             *([("fid_flops", f"{k.fid} at equal FLOPs", floor.get(k.fid))] if section["compute"]
                               else []),
                             ("kid", k.kid, floor.get(k.kid))]),
        figures.anytime_figure(f"{sid}-anytime", study.curves, order, _curve_columns(study)),
        figures.coverage_figure(f"{sid}-coverage", complete, order),
    ]
    section["figures"] = {f.name.removeprefix(f"{sid}-"): f for f in fig_list if f is not None}
    section["curves_note"] = None if "anytime" in section["figures"] else \
        "no evals.jsonl found for this study's trials (run folders missing, or no intermediate evaluations)"
    return section


def tuning_section(study: StudyData) -> dict:
    """A study's tuning phase (its record's "tuning"): each family's swept values with their tuning results (a seed
    whose trial failed as a result: None), the one its tuned arm won with (the record's "tuned", the runner's
    choice: not made again here), one sentence, and the figure of the sweep."""
    tuning, chosen = study.attrs["tuning"], study.attrs.get("tuned") or {}
    metric = study.names.fid
    candidates = [c for f in tuning["families"] for c in f["candidates"]]
    fids = seed_groups(dataclasses.replace(study, trials=study.tuning), candidates, "fid")  # failed seeds: None
    rows = []
    for family in tuning["families"]:
        for label, value in zip(family["candidates"], family["values"], strict=True):
            seeds = fids[label]
            rows.append({"family": family["arm"], "candidate": label, "value": value,
                         "chosen": chosen.get(family["arm"]) == label, "fid": stats.summarise(seeds),
                         "failed": sum(v is None for v in seeds.values()), "seeds": len(seeds)})
    seeds = ", ".join(map(str, tuning.get("seeds") or []))
    how = (f"Each family trained at {len(tuning['families'][0]['candidates'])} values of the {tuning['knob']} on "
           f"tuning seed(s) {seeds}, which the verdict above never uses; each tuned arm trains the value with the "
           f"lowest {metric} there (a failed tuning trial counts as worst)")
    if chosen:
        sentence = f"{how}: " + "; ".join(f"{arm} won with {candidate}" for arm, candidate in chosen.items()) + "."
        if edges := sweep_edges(tuning["families"], chosen):
            sentence += (" At the edge of its sweep: " + "; ".join(f"{arm} (the {side} value tried)"
                                                                   for arm, side in edges.items())
                         + ". Its best value may lie beyond the sweep, so such a family may do better than its tuned"
                           " arm: a wider sweep would tell.")
    else:
        sentence = f"{how}. The tuning phase has not finished: no value is chosen yet, and no tuned arm has trained."
    points = pd.DataFrame([{"family": r["family"], "value": r["value"], "fid": v, "chosen": r["chosen"]}
                           for r in rows for v in fids[r["candidate"]].values() if v is not None],
                          columns=["family", "value", "fid", "chosen"])
    figure = figures.tuning_figure(f"{anchor(study.name)}-tuning", points, tuning["knob"], metric)
    return {"rows": rows, "sentence": sentence, "knob": tuning["knob"], "figure": figure, "chosen": chosen}


def sweep_edges(families: list[dict], chosen: dict[str, str]) -> dict[str, str]:
    """The tuned arms whose winning value is the lowest or the highest of their family's sweep ("lowest"/"highest"):
    tuning did not bracket their best value."""
    edges = {}
    for family in families:
        pick, values = chosen.get(family["arm"]), dict(zip(family["candidates"], family["values"], strict=True))
        if pick not in values or len(values) < 2:
            continue
        if values[pick] == min(values.values()):
            edges[family["arm"]] = "lowest"
        elif values[pick] == max(values.values()):
            edges[family["arm"]] = "highest"
    return edges


def _budget_words(study: StudyData) -> str:
    steps = (study.attrs.get("budget") or {}).get("g_steps")
    return f"{steps:,} G steps" if isinstance(steps, int) else "this budget"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def choices_answer(study: StudyData, fid_groups: dict, learned: dict[str, stats.Learning]) -> dict:
    """A leave-one-out study's answer (its record names the reference arm, the choices and the blog's guesses): which
    restored choice costs most, what each costs, and one sentence per guess the blog made, then the choices it did
    not guess, costliest first."""
    a = study.attrs
    reference, metric = a["reference"], study.names.fid
    declared = {c["label"]: c for c in a.get("choices") or []}
    result = stats.costliest_choice(fid_groups, reference, list(declared), metric)
    verdict = result.verdict
    ref = learned.get(reference)
    if ref is not None and not ref.learned:  # nothing learned to restore a choice into: no ranking means anything
        verdict = stats.Verdict(f"even with every choice fixed, \u201c{reference}\u201d did not learn in "
                                f"{_budget_words(study)} ({ref.text}), so restoring one choice cannot show its cost")
    costly = set(result.costly()) if verdict is result.verdict else set()
    rows = [{"choice": c.a, "cmp": c, "p_holm": p, "costs": c.a in costly, "guess": declared[c.a].get("guess", ""),
             "see_also": declared[c.a].get("see_also", "")} for c, p in zip(result.costs, result.p_holm, strict=True)]
    guesses = [{"key": key, "text": text, "rows": [r for r in rows if r["guess"] == key]}
               for key, text in (a.get("guesses") or {}).items()]
    for g in guesses:
        g["sentence"] = " ".join(_cost_sentence(r, reference, metric) for r in g["rows"]) or \
            "no arm of this study tests it."
    unguessed = [r for r in rows if not r["guess"]]
    blog = study.blog_arm
    whole = stats.compare(fid_groups[blog], fid_groups[reference], names=(blog, reference)) \
        if blog in fid_groups and reference in fid_groups else None
    unguessed_text = "; ".join(f"\u201c{r['choice']}\u201d {stats.ratio_text(r['cmp'].ratio)}"
                               f"{' (costs)' if r['costs'] else ''}" for r in unguessed)
    return {"verdict": verdict, "blog_vs_reference": whole, "rows": rows, "guesses": guesses, "reference": reference,
            "heading": a.get("heading"), "unguessed": unguessed, "unguessed_text": unguessed_text}


def _cost_sentence(row: dict, reference: str, metric: str) -> str:
    c = row["cmp"]
    verb = "it clearly costs" if row["costs"] else "it does not clearly cost at this budget"
    return (f"Restoring \u201c{row['choice']}\u201d with every other choice fixed gives {stats.ratio_text(c.ratio)} "
            f"the {metric} of \u201c{reference}\u201d ({c.detail(row['p_holm'], 'p_holm')}): {verb}.")


def link_see_also(sections: list[dict]) -> None:
    """Point each choice that another study also asks about (its record's ``see_also``) at that study's section."""
    by_kind = {s["study"]: s for s in sections if s.get("study")}
    for s in sections:
        for row in (s.get("choices") or {}).get("rows", []):
            other = by_kind.get(row["see_also"])
            row["also"] = {"anchor": other["anchor"], "name": other["name"], "answer": other["answer"]} \
                if other else None


def equal_compute(study: StudyData, order: list[str], at_steps: stats.Verdict, learned: dict[str, stats.Learning],
                  choices: dict | None) -> dict | None:
    """The study's answer at equal compute: every arm judged where it had spent the model FLOPs its reference (the
    base, or the verdict's reference arm) spends in the budget's G steps (ablations.trial.equal_points). The same
    statistics as at equal G steps, on those FIDs; ``changes`` says in words when the two units disagree. None for a
    study run before arms were judged there."""
    done = study.complete
    if study.names is None or pd.to_numeric(done["fid_flops"], errors="coerce").notna().sum() == 0:
        return None
    groups = seed_groups(study, order, "fid_flops")
    verdict = stats.verdict(groups, study.names.fid)
    at_flops = choices_answer(study, groups, learned) if choices is not None else None
    steps = {arm: int(done.loc[done["arm"] == arm, "g_steps_flops"].median()) for arm in order
             if done.loc[done["arm"] == arm, "g_steps_flops"].notna().any()}
    budget = (study.attrs.get("budget") or {}).get("g_steps")
    trained_on = {arm: n for arm, n in steps.items() if n != budget}
    reference = _first(done["flops_reference"].dropna()) or "the base"
    tflops = float(done["reference_flops"].dropna().iloc[0]) / 1e12 if done["reference_flops"].notna().any() else None
    unit = (f"every arm judged where it had spent the {tflops:.3g} model TFLOPs that {reference} spends in "
            f"{_budget_words(study)}" if tflops is not None else "every arm judged at the same model FLOPs")
    if trained_on:
        unit += ": " + ", ".join(f"{arm} at {n:,} G steps" for arm, n in trained_on.items())
    # a reference that has not learned in the budget (the width study's narrowest arm) spends so little that no arm
    # has learned at its compute: the verdict there ranks untrained generators, and the page must say so
    there = learning(study, order, groups)
    unlearned = (f"No arm had learned by then (each arm's {study.names.fid} there is above half its step-0 value, "
                 f"paired over seeds): {reference} spends too little compute in {_budget_words(study)} for equal "
                 f"compute to rank the arms, so the verdict below compares untrained generators") \
        if there and not any(x.learned for x in there.values()) else None
    return {"verdict": verdict, "choices": at_flops, "steps": steps, "unit": unit, "reference": reference,
            "unlearned": unlearned, "changes": None if unlearned else _unit_change(at_steps, verdict, choices,
                                                                                  at_flops)}


def _unit_change(at_steps: stats.Verdict, at_flops: stats.Verdict, choices: dict | None,
                 choices_flops: dict | None) -> str | None:
    """In words, how the answer at equal FLOPs differs from the one at equal G steps; None when it does not."""
    if choices is not None and choices_flops is not None:  # leave-one-out: which choices clearly cost
        steps_costly = {r["choice"] for r in choices["rows"] if r["costs"]}
        flops_costly = {r["choice"] for r in choices_flops["rows"] if r["costs"]}
        if steps_costly == flops_costly:
            return None
        gained, lost = sorted(flops_costly - steps_costly), sorted(steps_costly - flops_costly)
        parts = ([f"{_quoted(gained)} clearly cost too"] if gained else []) + \
            ([f"{_quoted(lost)} no longer clearly cost"] if lost else [])
        return "The unit changes the answer: at equal FLOPs " + "; ".join(parts) + "."
    if at_steps.best is None or at_flops.best is None:
        return None
    if at_steps.best == at_flops.best and at_steps.significant == at_flops.significant:
        return None

    def said(v: stats.Verdict) -> str:
        return f"{v.best} is {'clearly ' if v.significant else ''}best{'' if v.significant else ' (not clearly)'}"

    return f"The unit changes the answer: at equal G steps {said(at_steps)}, at equal FLOPs {said(at_flops)}."


def _quoted(labels: list[str]) -> str:
    return ", ".join(f"\u201c{x}\u201d" for x in labels)


def answer(study: StudyData, verdict: stats.Verdict, learned: dict[str, stats.Learning], choices: dict | None,
           compute: dict | None = None) -> str:
    """The study's answer: first whether there is anything to compare (if no arm learned, that is the answer; if
    the base arm did not, that is said first), then the blog's own setting against the best arm, with the paired
    effect and its CI, at equal G steps and, where the study has it, at equal compute."""
    text = _answer_at(study, verdict, learned, choices)
    if compute is None or verdict.best is None or not learned or not any(x.learned for x in learned.values()):
        return text
    at_flops = compute["unlearned"] + "." if compute["unlearned"] else \
        _answer_at(study, compute["verdict"], learned, compute["choices"], with_notes=False)
    return (f"At equal G steps: {text} At equal compute ({compute['unit']}): {at_flops}"
            + (f" {compute['changes']}" if compute["changes"] else ""))


def _answer_at(study: StudyData, verdict: stats.Verdict, learned: dict[str, stats.Learning], choices: dict | None,
               with_notes: bool = True) -> str:
    """``answer`` in one unit; ``with_notes``: say when the base arm or the blog's setting did not learn."""
    budget = _budget_words(study)
    base_arm, blog = study.base_arm, study.blog_arm
    if verdict.best is None or not learned:
        return verdict.text
    if not any(x.learned for x in learned.values()):
        return (f"No arm learned in {budget}: every arm's {study.names.fid} stayed near its untrained value "
                f"(e.g. {verdict.best}: {learned[verdict.best].text}), so the arms compare untrained generators.")
    notes, noted = [], set()  # said after the answer: the base arm (or the blog's setting) did not learn here
    for who, arm in (("the base arm", base_arm), ("the blog's setting", blog)):
        if arm in learned and not learned[arm].learned and arm not in noted:
            noted.add(arm)
            x = learned[arm]
            ci = f", {x.level:.0%} CI {stats.ratio_text(x.lo)}–{stats.ratio_text(x.hi)}" if x.has_ci else ""
            notes.append(f"Note: {who} {arm} did not learn in {budget} (its {study.names.fid} went to "
                         f"{stats.ratio_text(x.ratio)} its step-0 value{ci}).")
    said = "".join(" " + n for n in notes) if with_notes else ""
    if choices is not None:
        text = _sentence(choices["verdict"].text)
        whole = choices["blog_vs_reference"]
        if whole is not None and not math.isnan(whole.ratio):  # what the blog's own setting costs, all together
            text += (f" The blog's setting as a whole has {stats.ratio_text(whole.ratio)} the {study.names.fid} of "
                     f"\u201c{choices['reference']}\u201d ({whole.detail()}).")
        return text + said
    comparison = next((c for c in verdict.comparisons if c.b == blog), None)
    if blog == verdict.best or comparison is None:
        return _sentence(verdict.text) + said
    p = verdict.p_holm[verdict.comparisons.index(comparison)]
    against = comparison.inverse()  # the blog's setting against the best arm
    clear = p < stats.ALPHA and comparison.ratio < 1
    tail = (f"it clearly costs ({stats.ALPHA:.0%} level, Holm over {len(verdict.comparisons)} comparisons)" if clear
            else "the two cannot be told apart at this number of seeds")
    overall = f"{verdict.best} is clearly best overall." if verdict.significant else "No arm is clearly best overall."
    return (f"The blog's setting {blog} has {stats.ratio_text(against.ratio)} the {study.names.fid} of the best "
            f"arm, {verdict.best} ({against.detail(p, 'p_holm')}): {tail}. {overall}{said}")


def _curve_columns(study: StudyData) -> list[str | None]:
    names = study.curve_names
    return [names.fid, names.kid] if names is not None else [None, None]


def base_section(study: StudyData, kind: str) -> dict:
    return {
        "kind": kind, "name": study.name, "anchor": study_anchor(study.name), "study": study.kind,
        "question": study.question, "knob": study.knob,
        "budget_text": budget_text(study), "shrunk": shrunk(study), "counts": counts(study.trials),
        "names": study.names, "floor": study.attrs.get("floor") or {}, "figures": {}, "kid_note": None,
        "planned_seeds": study.attrs.get("seeds"), "choices": None, "curves_note": None, "order": [], "table": [],
        "samples": [], "memorization": None, "compute": None,
        "answer": "", "base_name": study.attrs.get("base", "–"), "base_why": study.attrs.get("base_why") or "",
    }


# ---- the joint (searched) study ------------------------------------------------------------------------

def importances(study: StudyData) -> tuple[dict[str, float], str | None]:
    """Optuna's parameter importances, or ({}, why not): they need 2+ complete trials whose params vary."""
    import warnings

    import optuna

    done = study.complete
    if len(study.directions) > 1:
        return {}, "importances are shown for single-objective studies only"
    if len(done) < 2:
        return {}, f"needs at least 2 complete trials, has {len(done)}"
    params = pd.DataFrame(list(done["params"]))
    varying = [c for c in params.columns if params[c].astype(str).nunique() > 1]
    if not varying:
        return {}, "no parameter varies across the complete trials"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for evaluator in (None, optuna.importance.FanovaImportanceEvaluator(seed=0)):
            try:
                imp = optuna.importance.get_param_importances(study.study, evaluator=evaluator, params=varying)
                return {k: float(v) for k, v in imp.items()}, None
            except Exception as e:  # noqa: BLE001 - too few trials for the evaluator: fall back, then explain
                why = f"{type(e).__name__}: {first_line(e)}"
    return {}, f"Optuna could not compute them ({why})"


def joint_section(study: StudyData) -> dict:
    k = study.names
    sid = anchor(study.name)
    section = base_section(study, "joint")
    done = study.complete.dropna(subset=["value"]).sort_values("value")
    section["best"] = [{"number": int(r.number), "params": r.params, "value": r.value, "fid": r.fid, "kid": r.kid,
                        "precision": r.precision, "recall": r.recall, "wall_s": r.wall_s}
                       for r in done.head(TOP_CONFIGS).itertuples()]
    section["param_names"] = sorted({p for r in section["best"] for p in r["params"]})
    imp, why = importances(study)
    section["importances"], section["importance_note"] = imp, why
    fails = study.trials[study.trials["state"] == "FAIL"]
    section["failures"] = [{"kind": k_, "reason": r, "count": n} for (k_, r), n in
                           Counter(zip(fails["fail_kind"], fails["fail_reason"], strict=True)).items()]
    if len(study.directions) > 1:
        pareto = [t for t in study.study.best_trials]
        section["pareto"] = [{"number": t.number, "values": t.values, "params": t.params} for t in pareto]
    else:
        section["pareto"] = None
    label = k.fid if k else "objective"
    curves = study.curves
    fig_list = [
        figures.history_figure(f"{sid}-history", study.trials, label),
        figures.importance_figure(f"{sid}-importance", imp),
        figures.anytime_figure(f"{sid}-anytime", curves, ["complete", "pruned", "fail"],
                               _curve_columns(study), hue="state",
                               units="trial") if len(curves) else None,
    ]
    section["figures"] = {f.name.removeprefix(f"{sid}-"): f for f in fig_list if f is not None}
    section["verdict"] = stats.Verdict(
        f"best configuration so far: trial {section['best'][0]['number']} with {label} "
        f"{stats.fmt(section['best'][0]['value'])}" if section["best"] else "no finished trials yet")
    section["answer"] = section["verdict"].text
    return section


def other_section(study: StudyData) -> dict:
    section = base_section(study, "other")
    done = study.complete.dropna(subset=["value"])
    section["verdict"] = stats.Verdict(
        f"best value {stats.fmt(done['value'].min())} (trial {int(done.loc[done['value'].idxmin(), 'number'])})"
        if len(done) else "no finished trials")
    section["answer"] = section["verdict"].text
    return section


def study_sections(studies: list[StudyData], catalogue: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """(a section per study in catalogue order, the catalogue's studies that have not been run).

    ``catalogue``: every study the runner knows (name, question), as ablations.run passes it; otherwise
    the one the runner stored with its studies.
    """
    catalogue = catalogue or next((s.attrs["catalogue"] for s in studies if s.attrs.get("catalogue")), [])
    order = {c["name"]: i for i, c in enumerate(catalogue)}
    ranked = sorted(studies, key=lambda s: (order.get(s.kind, len(order)), s.name))
    sections = []
    for s in ranked:
        if s.is_grid:
            sections.append(grid_section(s))
        elif s.kind is not None:
            sections.append(joint_section(s))
        else:
            sections.append(other_section(s))
    link_see_also(sections)
    ran = {s.kind for s in studies}
    missing = [{"name": c["name"], "question": c["question"], "command": RUN_STUDY.format(name=c["name"])}
               for c in catalogue if c["name"] not in ran]
    return sections, missing


# ---- benchmarks --------------------------------------------------------------------------------------

def benchmark_section(frame: pd.DataFrame, files: list[Path]) -> dict:
    missing_cmd = RUN_BENCHMARKS.format(device="$(python -m benchmarks.harness slug cpu)")
    if frame.empty:
        return {"ran": False, "command": missing_cmd, "files": [str(f) for f in files]}
    frame = frame.copy()
    for col in ("device", "device_name", "model", "loop", "variant"):
        if col not in frame:
            frame[col] = None
    frame["device_type"] = frame["device"].fillna("").astype(str).str.split(":").str[0]
    frame["case"] = [(f"project {v}" if v else "project") if lp == "project" else (lp or n)
                     for lp, v, n in zip(frame["loop"], frame["variant"], frame["name"], strict=True)]
    speedups = sorted(c for c in frame.columns if c.startswith("speedup_vs_"))
    train = frame[frame["group"].str.startswith("train")]
    evals = frame[frame["group"].str.startswith("eval")]
    other = frame[~frame.index.isin(train.index) & ~frame.index.isin(evals.index)]
    figs = []
    for (file, device), rows in train.groupby(["file", "device_type"], sort=True):
        if "g_images_per_s" in rows:
            fig = figures.throughput_figure(f"bench-{anchor(file)}-{device or 'unknown'}", rows, "g_images_per_s",
                                            f"generated images/s in training ({device or 'unknown device'})")
            if fig is not None:
                figs.append(fig)
    devices = sorted(set(frame["device_type"]) - {""})
    notes = []
    if "cuda" not in devices:
        notes.append("No CUDA results yet: on a machine with a GPU run "
                     + RUN_BENCHMARKS.format(device="$(python -m benchmarks.harness slug cuda)"))
    if "cpu" not in devices:
        notes.append("No CPU results yet: run " + missing_cmd)
    sources = frame.groupby("file").agg(host=("host", "first"), cpu=("cpu", "first"), datetime=("datetime", "first"),
                                        commit=("commit", "first"), cases=("name", "count")).reset_index()
    return {"ran": True, "train": _records(train), "evals": _records(evals), "other": _records(other),
            "speedups": speedups, "figures": figs, "notes": notes, "sources": sources.to_dict("records"),
            "command": missing_cmd}


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows for the template: NaN (a key a suite did not write) becomes None, shown as a dash."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]
