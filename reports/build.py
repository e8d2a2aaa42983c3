"""`python -m reports.build`: one self-contained HTML page with every study and benchmark.

pandas reads the Optuna storage, the run folders and the pytest-benchmark JSON (reports.load);
reports.stats computes CIs and verdicts; seaborn draws (reports.figures); Jinja2 renders
templates/summary.html.j2. Figures are embedded as base64 PNG: the page fetches nothing and can be
mailed. Everything is read and rendered in memory first, then written atomically, so an error
leaves no half-written page (and no page from a half-read storage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import math
from pathlib import Path

import jinja2
import pandas as pd

from gan_core import cli, files
from gan_core.errors import UserError, mask_passwords, os_fault
from gan_core.storage import DEFAULT_URL
from gan_core.training.sampling import BN_SAMPLES
from reports import downloads, load, scoreboard, sections, stats

PROG = "python -m reports.build"
DEFAULT_OUT = "reports/summary.html"
TEMPLATE = "summary.html.j2"
BUILDER_PACKAGES = ("pandas", "seaborn", "matplotlib", "jinja2", "numpy", "optuna")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _as_float(x) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _tolerant(format_number):
    def apply(x) -> str:
        value = _as_float(x)
        if value is None:
            return "–" if x is None or isinstance(x, float) else str(x)
        return format_number(value)

    return apply


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,  # trial reasons and arm names are data: never markup
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the build (and the tests), not the reader
        trim_blocks=True, lstrip_blocks=True,
    )
    # Values from benchmark JSON are whatever a suite wrote: a number is formatted, anything else shown as is.
    env.filters["num"] = _tolerant(stats.fmt)
    env.filters["rate"] = _tolerant(lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}")
    env.filters["pct"] = _tolerant(lambda x: f"{100 * x:.1f}%")
    env.filters["ratio"] = _tolerant(lambda x: f"{x:.2f}\u00d7")
    env.filters["count"] = _tolerant(lambda x: f"{int(x):,}" if x.is_integer() else f"{x:g}")
    env.filters["full"] = lambda x: "" if _as_float(x) is None else repr(_as_float(x))  # data-value: every digit
    return env


def render(studies: list[load.StudyData], bench: pd.DataFrame, bench_files: list[Path], storage: str,
           runs: str, skipped: list[str] | None = None, catalogue: list[dict] | None = None,
           scores: list[load.Score] | None = None, scores_dir: str = load.DEFAULT_SCORES) -> tuple[str, list]:
    """(the page's HTML, the figures it embeds)."""
    study_sections, missing = sections.study_sections(studies, catalogue)
    bench_section = sections.benchmark_section(bench, bench_files)
    bench_section["skipped"] = skipped or []
    context = {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "storage": mask_passwords(storage), "runs": runs,
        "overview": sections.overview(studies), "sections": study_sections, "missing": missing,
        "bench": bench_section, "builder": {p: _version(p) for p in BUILDER_PACKAGES},
        "level": f"{stats.LEVEL:.0%}", "bn_samples": f"{BN_SAMPLES:,}",
        "board": scoreboard.scoreboard(studies, scores or []), "scores_dir": scores_dir,
    }
    html = downloads.add_csv_links(environment().get_template(TEMPLATE).render(**context))
    figs = [f for s in study_sections for f in s["figures"].values()] + list(bench_section.get("figures", []))
    figs += [s["tuning"]["figure"] for s in study_sections if (s.get("tuning") or {}).get("figure")]
    return html, figs


def build(storage: str | None = None, runs: str = "runs", benchmarks: list[str] | None = None,
          out: str = DEFAULT_OUT, png_dir: str | None = None, catalogue: list[dict] | None = None,
          scores: str | None = None, artifacts: str | None = None) -> Path:
    """Read everything, render the page, write it (and the figures as PNG into ``png_dir`` if given).

    ``catalogue``: every study the runner knows (``ablations.studies.catalogue()``), so that the page lists
    those not run yet; without it the page uses the catalogue stored with the studies. ``scores``: the folder of
    results folders for the scoreboard (default ``results``, which may be absent; a folder named must exist).
    ``artifacts``: the artifact store to read trials from whose run folders are not under ``runs`` (default: the
    one each study recorded).

    Raises UserError (nothing written) for an unreadable storage or benchmark file.
    """
    storage = storage or DEFAULT_URL
    files.check_writable_file(out, "the report")
    if png_dir is not None:
        files.check_writable(png_dir, "the figures (--png-dir)")
    explicit = benchmarks is not None
    bench_files = [Path(p) for p in benchmarks] if explicit else load.default_benchmark_files()
    studies = load.load_studies(storage, runs, artifacts)
    scored = load.load_scores(scores)
    skipped: list[str] = []
    # a file named by the user must be right (error); one found in benchmarks/results/ is skipped with a note
    bench = load.load_benchmarks(bench_files, None if explicit else skipped)
    html, figs = render(studies, bench, bench_files, storage, runs, skipped, catalogue, scored,
                        scores or load.DEFAULT_SCORES)
    out_path = Path(out)
    try:
        if png_dir is not None:
            for fig in figs:
                files.atomic_write(Path(png_dir) / f"{fig.name}.png", lambda p, d=fig.data: p.write_bytes(d))
        files.write_text(out_path, html)
    except OSError as e:  # a UserError, not the CLI's: ablations.run builds the page after a study and goes on
        raise UserError(os_fault(e) or f"cannot write {e.filename or out_path}: {e.strerror or e}") from None
    return out_path


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description="Write reports/summary.html: every study and benchmark on one "
                                                  "self-contained page.")
    p.add_argument("--storage", default=DEFAULT_URL,
                   help="Optuna storage: sqlite:///FILE, postgresql://..., journal:FILE (default: %(default)s)")
    p.add_argument("--runs", default="runs", help="folder of the trials' run folders (default: %(default)s)")
    p.add_argument("--artifacts", metavar="PATH",
                   help="artifact store for trials whose run folders are on other hosts (default: the one each "
                        "study's runner recorded, ablations.run --artifacts)")
    p.add_argument("--benchmarks", nargs="*", metavar="JSON",
                   help="pytest-benchmark JSON files (default: every benchmarks/results/*.json)")
    p.add_argument("--out", default=DEFAULT_OUT, help="the HTML file to write (default: %(default)s)")
    p.add_argument("--png-dir", help="also write every figure as a PNG file into this folder")
    p.add_argument("--scores", metavar="DIR", default=None,
                   help=f"results folders for the scoreboard: DIR/NAME/metrics.json, as python -m gan_core.evaluate "
                        f"--samples ... --out DIR/NAME writes them (default: {load.DEFAULT_SCORES}, if it exists)")
    return p


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    path = build(args.storage, args.runs, args.benchmarks, args.out, args.png_dir, scores=args.scores,
                 artifacts=args.artifacts)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, prog=PROG)


if __name__ == "__main__":
    raise SystemExit(main())
