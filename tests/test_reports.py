"""reports.build end to end: a fixture storage (tests/report_fixtures.py) -> summary.html, checked three ways:
the page has every section, its numbers equal the storage's, and it loads in a real headless browser.
"""

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.stats
from PIL import Image

from ablations.studies import REGISTRY, catalogue
from reports import build, sections, stats
from tests import report_fixtures as rf

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# ---- a small DOM, so that tests read the page the way a browser lays it out ------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return " ".join(" ".join(c.text() if isinstance(c, Node) else c for c in self.children).split())

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs) -> list["Node"]:
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k) == v if v is not True else k in n.attrs for k, v in want.items())]

    def find(self, tag: str | None = None, **attrs) -> "Node":
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs} on the page"
        return found[0]


class Dom(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.root = self.node = Node("#document", {})
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_endtag(self, tag):
        n = self.node
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.node = n.parent

    def handle_data(self, data):
        self.node.children.append(data)


def parse(html: str) -> Node:
    return Dom(html).root


# ---- fixtures ---------------------------------------------------------------------------------------------

# One xdist worker runs this module (the test command's --dist loadgroup): its report fixture, five studies trained at
# the smoke budget, takes about 20 s to build, and a module fixture is built once per worker that runs a test using it.
pytestmark = pytest.mark.xdist_group("report_fixture")

@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> rf.Fixture:
    return rf.build_fixture(tmp_path_factory.mktemp("report-fixture"))


@pytest.fixture(scope="module")
def page(fx, tmp_path_factory) -> tuple[Path, str, Node]:
    out = tmp_path_factory.mktemp("report") / "summary.html"
    path = build.build(storage=fx.storage, runs=str(fx.runs), benchmarks=[str(fx.benchmarks)], out=str(out),
                       png_dir=str(out.parent / "figures"), scores=str(fx.scores))
    html = path.read_text()
    return path, html, parse(html)


def storage_trials(fx: rf.Fixture, kind: str) -> tuple[optuna.Study, list]:
    """The study's result trials, read straight from Optuna: the reference the page is checked against."""
    study = optuna.load_study(study_name=fx.studies[kind], storage=fx.storage)
    return study, [t for t in study.trials if not t.user_attrs.get("spare") and not t.user_attrs.get("duplicate")]


def first_number(text: str) -> float:
    """The number a reader sees first in a cell: '80.7 [80.36, 81.04]' -> 80.7, '7/10' -> 7."""
    return float(text.split()[0].split("/")[0].replace(",", ""))


# ---- the fixture is honest --------------------------------------------------------------------------------

def test_fixture_metric_names_are_the_ones_gan_core_computes():
    import torch

    from gan_core.judging.features import FeatureSet
    from gan_core.judging.metrics import compare

    g = torch.Generator().manual_seed(0)
    gen = FeatureSet(torch.randn(40, 8, generator=g), torch.randn(40, 10, generator=g))
    real = FeatureSet(torch.randn(60, 8, generator=g), torch.randn(60, 10, generator=g))
    bookkeeping = {"extractor", "n_generated", "n_real", "real_set", "protocol"}
    assert set(rf.metrics(40, 1.0, 1.0, np.random.default_rng(0))) == set(compare(gen, real)) | bookkeeping


def test_fixture_memorization_names_are_the_ones_gan_core_computes():
    import torch

    from gan_core.judging import memorization as mem

    g = torch.Generator().manual_seed(0)
    gen = {mem.FEATURES: torch.randn(40, 8, generator=g), mem.PIXELS: torch.randint(0, 256, (40, 1, 4, 4),
                                                                                   dtype=torch.uint8, generator=g)}
    train = {mem.FEATURES: torch.randn(30, 8, generator=g), mem.PIXELS: torch.randint(0, 256, (30, 1, 4, 4),
                                                                                     dtype=torch.uint8, generator=g)}
    held = {space: torch.rand(50, generator=g) for space in mem.SPACES}
    assert set(rf.memorization_metrics(40, 0.5, np.random.default_rng(0))) == set(mem.memorization(gen, train, held))


def test_fixture_second_judge_names_are_the_ones_gan_core_computes():
    import torch

    from gan_core.judging.evaluation import SECOND_JUDGE_SUFFIX
    from gan_core.judging.features import FeatureSet
    from gan_core.judging.metrics import compare

    g = torch.Generator().manual_seed(0)
    gen, real = FeatureSet(torch.randn(40, 8, generator=g)), FeatureSet(torch.randn(60, 8, generator=g))
    names = set(rf.second_judge_metrics(40, 1.0, np.random.default_rng(0)))
    assert names == set(compare(gen, real, SECOND_JUDGE_SUFFIX)) | {f"extractor{SECOND_JUDGE_SUFFIX}"}


# ---- content ----------------------------------------------------------------------------------------------

def test_page_has_every_section(fx, page):
    _, html, dom = page
    assert dom.find("section", id="overview") and dom.find("table", id="provenance")
    for kind in ("step_ratio", "blog_quirks", "depth"):
        sec = dom.find("section", id="study-" + fx.studies[kind].replace("_", "-"))
        assert sec.attrs["data-kind"] == "grid"
        assert REGISTRY[kind].question in sec.text()
        captions = " ".join(f.text() for f in sec.find_all("figcaption"))
        for what in ("against FID and KID", "Share of generated samples", "Intermediate metrics"):
            assert what in captions, (kind, what)
        arms = [r.attrs["data-arm"] for r in sec.find("table", class_="arms").find_all("tr", data_arm=True)]
        assert arms == [a.label for a in REGISTRY[kind].arms]
        grids = sec.find("div", class_="grids").find_all("figure")
        assert [g.attrs["data-arm"] for g in grids] == arms and all(g.find_all("img") for g in grids)
        assert sec.find("div", data_role="verdict").text()
    joint = dom.find("section", id="study-joint-blog-quick")
    assert joint.find("table", class_="best") and joint.find("figure", data_role="importances").find("img")
    assert "no Pareto front" in joint.text() and "1 out of memory" in joint.text()
    not_run = dom.find("section", id="not-run")
    for name in ("optimizer", "width"):
        assert f"python -m ablations.run --study {name}" in not_run.find("tr", data_study=name).text()
    bench = dom.find("section", id="benchmarks")
    assert bench.find("table", id="bench-train") and bench.find("table", id="bench-eval") and bench.find_all("img")
    assert "No CUDA results yet" in bench.text() and "--benchmark-json benchmarks/results/" in bench.text()
    header = " ".join(b.text() for b in dom.find_all("div", data_role="shrunk"))
    assert "by 1/8, never below 8 channels" in header and "by 1/16" in header and "depth-blog-smoke" in header
    assert "81967625" in dom.find("table", id="studies").text()  # the extractor's weights hash
    assert rf.PROVENANCE["git_commit"] in dom.find("table", id="provenance").text()
    assert "4,000 train / 1,000 held-out" in dom.find("table", id="studies").text()


def test_verdicts_follow_the_data(fx, page):
    _, _, dom = page
    step = dom.find("section", id="study-step-ratio-blog-quick").find("div", data_role="verdict").text()
    assert step.startswith("1:1 is best on fid1k") and "beats every other arm after Holm correction" in step
    depth = dom.find("section", id="study-depth-blog-smoke").find("div", data_role="verdict").text()
    assert depth.startswith("only one seed: no verdict")
    sec = dom.find("section", id="study-blog-quirks-blog-quick")
    choice = sec.find("div", data_role="choice-verdict").text()
    assert "restoring “reused noise” alone (all else fixed) raises fid1k" in choice and "costs the most" in choice
    costs = {r.attrs["data-arm"]: r.find("td", data_col="costs").text() for r in
             sec.find("table", class_="choices").find_all("tr", data_arm=True)}
    assert {a for a, c in costs.items() if c == "yes"} == {"reused noise", "Adadelta lr=1e-3", "9-block stack"}
    assert list(costs)[:3] == ["reused noise", "Adadelta lr=1e-3", "9-block stack"]  # costliest first
    guesses = {li.attrs["data-guess"]: li.text() for li in sec.find("ol", class_="guesses").find_all("li")}
    assert list(guesses) == ["structure", "settings", "data"]  # the blog's order
    assert guesses["structure"].startswith("The network (a plain deep stack of CBR blocks) : Restoring “9-block stack”")
    assert "it clearly costs" in guesses["structure"]
    assert "depth-blog-smoke" in guesses["structure"]  # the depth study is on the page: linked
    assert "Restoring “900 images”" in guesses["data"] and "does not clearly cost" in guesses["data"]
    assert "did not guess , costliest first: “reused noise” 2." in sec.find("p", data_role="unguessed").text()


def test_numbers_on_the_page_equal_the_storage(fx, page):
    _, _, dom = page
    for kind in ("step_ratio", "blog_quirks", "depth"):
        study, trials = storage_trials(fx, kind)
        objective = study.user_attrs["objective"]
        tag = objective.removeprefix("fid")
        table = dom.find("table", class_="arms", data_study=fx.studies[kind])
        for row in table.find_all("tr", data_arm=True):
            arm = row.attrs["data-arm"]
            done = [t for t in trials if t.user_attrs["arm"] == arm and t.state.name == "COMPLETE"]
            cells = {c.attrs["data-col"]: c for c in row.find_all("td", data_col=True)}
            assert int(cells["seeds"].attrs["data-value"]) == len(done)
            for col, key in (("fid", objective), ("kid", f"kid{tag}_mean"), ("precision", f"precision{tag}"),
                             ("recall", f"recall{tag}"), ("modes", f"modes{tag}")):
                values = [t.user_attrs["metrics"][key] for t in done]
                mean = float(np.mean(values))
                assert float(cells[col].attrs["data-value"]) == pytest.approx(mean, rel=1e-12), (kind, arm, col)
                # shown with 4 significant digits: off by at most half a unit in the 4th digit
                assert first_number(cells[col].text()) == pytest.approx(mean, rel=5.01e-4), (kind, arm, col)
                if col in ("fid", "kid") and len(values) > 1:
                    lo, hi = float(cells[col].attrs["data-lo"]), float(cells[col].attrs["data-hi"])
                    # the t-interval of the mean, computed independently
                    want = scipy.stats.t.interval(0.95, len(values) - 1, loc=mean, scale=scipy.stats.sem(values))
                    assert (lo, hi) == pytest.approx(want, rel=1e-9), (kind, arm, col)
            ips = np.mean([t.user_attrs["spent"]["g_images_per_s"] for t in done])
            assert float(cells["images_per_s"].attrs["data-value"]) == pytest.approx(ips, rel=1e-12)
            # a failure is shown with its reason only when its arm x seed never finished
            final = [t for t in trials if t.user_attrs["arm"] == arm and t.state.name == "FAIL"
                     and not any(d.user_attrs["seed"] == t.user_attrs["seed"] for d in done)]
            failures = cells["failures"].text()
            for t in final:
                assert t.user_attrs["fail_reason"] in failures
            retried = [t for t in trials if t.user_attrs["arm"] == arm and t.state.name == "FAIL" and t not in final]
            assert (f"{len(retried)} earlier attempt" in failures) == bool(retried)
    step = dom.find("table", class_="arms", data_study=fx.studies["step_ratio"])
    assert "diverged at G step 37, D step 185" in step.find("tr", data_arm="5:1").text()
    assert "1 earlier attempt retried" in step.find("tr", data_arm="2:1").text()
    assert "pruned" not in step.text()  # the spare and duplicate trials of parallel workers are not results


def test_the_memorization_table_equals_the_storage_and_flags_only_the_copier(fx, page):
    _, _, dom = page
    for kind in ("step_ratio", "blog_quirks"):
        study, trials = storage_trials(fx, kind)
        tag = study.user_attrs["objective"].removeprefix("fid")
        section = dom.find("section", id=sections.study_anchor(fx.studies[kind]))
        table = section.find("table", class_="memorization")
        rows = table.find_all("tr", data_arm=True)
        assert [r.attrs["data-arm"] for r in rows] == [a.label for a in REGISTRY[kind].arms]
        for row in rows:
            arm = row.attrs["data-arm"]
            done = [t.user_attrs["metrics"] for t in trials
                    if t.user_attrs["arm"] == arm and t.state.name == "COMPLETE"]
            for col, key in (("copy", f"copy{tag}"), ("copy_pixels", f"copy{tag}_pixels")):
                values = [m[key] for m in done]
                cell = row.find("td", data_col=col)
                want = scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy.stats.sem(values))
                assert float(cell.attrs["data-value"]) == pytest.approx(np.mean(values), rel=1e-12), (kind, arm)
                assert (float(cell.attrs["data-lo"]), float(cell.attrs["data-hi"])) == pytest.approx(want, rel=1e-9)
            flagged = kind == "step_ratio" and arm == rf.COPYING_ARM
            assert ("possible copying" in row.find("td", data_col="flag").text()) == flagged, (kind, arm)
        pictures = section.find_all("figure", data_role="neighbours")
        assert len(pictures) == len(rows) and all(p.find_all("img") for p in pictures)
        assert "neighbours of" in pictures[0].find("img").attrs["alt"]
    depth = dom.find("section", id=sections.study_anchor(fx.studies["depth"]))  # run before the check existed
    assert not depth.find_all("table", class_="memorization") and not depth.find_all("figure", data_role="neighbours")
    assert "Memorization" not in depth.text()


def judges_tau(trials: list, tag: str) -> float:
    """Kendall's tau between the two judges' arm rankings, from the storage: each arm's mean log FID over its
    complete trials under each judge (step_ratio's one diverged trial is 5:1's, last under both judges either way)."""
    arms = sorted({t.user_attrs["arm"] for t in trials})
    means = [[np.mean([np.log(t.user_attrs["metrics"][key]) for t in trials
                       if t.user_attrs["arm"] == arm and t.state.name == "COMPLETE"]) for arm in arms]
             for key in (f"fid{tag}", f"fid{tag}_lenet")]
    return float(scipy.stats.kendalltau(*means).statistic)


def test_the_second_judge_flips_a_verdict_with_a_visible_flag_and_the_right_tau(fx, page):
    _, _, dom = page
    study, trials = storage_trials(fx, "step_ratio")
    tag = study.user_attrs["objective"].removeprefix("fid")
    section = dom.find("section", id=sections.study_anchor(fx.studies["step_ratio"]))
    box = section.find("div", data_role="second-judge")
    assert rf.EXTRACTOR_SECOND in box.text()
    assert box.find("div", data_role="second-verdict").text().startswith(f"2:1 is best on fid{tag}_lenet")
    flip = box.find("div", data_role="judge-flip").text()
    assert "flips" in flip and "the best arm differs: 1:1 under the first judge, 2:1 under the second judge" in flip
    assert not box.find_all(data_role="judge-agrees")
    tau = float(box.find("p", data_role="kendall-tau").find("b").attrs["data-value"])
    assert tau == pytest.approx(judges_tau(trials, tag), abs=1e-12) == pytest.approx(rf.STEP_RATIO_TAU, abs=1e-12)
    rows = {r.attrs["data-arm"]: r for r in box.find("table", class_="second-judge").find_all("tr", data_arm=True)}
    assert list(rows) == [a.label for a in REGISTRY["step_ratio"].arms]
    for arm, row in rows.items():
        values = [t.user_attrs["metrics"][f"fid{tag}_lenet"] for t in trials
                  if t.user_attrs["arm"] == arm and t.state.name == "COMPLETE"]
        assert float(row.find("td", data_col="fid_second").attrs["data-value"]) == pytest.approx(np.mean(values))
    assert rows["2:1"].find("td", data_col="rank_fid_second").text() == "1"
    assert rows["1:1"].find("td", data_col="rank_fid").text() == "1"


def test_a_second_judge_that_agrees_shows_no_flag_and_a_study_without_one_says_so_in_one_line(fx, page):
    _, _, dom = page
    study, trials = storage_trials(fx, "blog_quirks")
    section = dom.find("section", id=sections.study_anchor(fx.studies["blog_quirks"]))
    box = section.find("div", data_role="second-judge")
    assert not box.find_all(data_role="judge-flip") and box.find("p", data_role="judge-agrees")
    tau = float(box.find("p", data_role="kendall-tau").find("b").attrs["data-value"])
    assert tau == pytest.approx(judges_tau(trials, study.user_attrs["objective"].removeprefix("fid"))) == 1.0
    depth = dom.find("section", id=sections.study_anchor(fx.studies["depth"]))  # run before the second judge
    assert not depth.find_all(data_role="second-judge") and not depth.find_all(data_role="judge-flip")
    (line,) = depth.find_all("p", data_role="second-judge-missing")
    assert line.text().startswith("no second judge in this study")


def test_floor_joint_and_benchmark_numbers_equal_their_sources(fx, page):
    _, _, dom = page
    for name in fx.studies.values():
        study = optuna.load_study(study_name=name, storage=fx.storage)
        floor = study.user_attrs["floor"]
        cells = dom.find("table", id="floors").find("tr", data_study=name).find_all("td", data_value=True)
        assert [float(c.attrs["data-value"]) for c in cells] == \
            [floor[study.user_attrs["objective"]], floor[study.user_attrs["objective"].replace("fid", "kid") + "_mean"]]
    study, trials = storage_trials(fx, "joint")
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    first = dom.find("table", class_="best").find("tr", data_trial=True)
    assert int(first.attrs["data-trial"]) == best.number
    assert float(first.find("td", data_col="value").attrs["data-value"]) == best.value
    doc = json.loads(fx.benchmarks.read_text())
    table = dom.find("table", id="bench-train")
    for b in doc["benchmarks"]:
        if not (b["group"] or "").startswith("train"):
            continue
        row = table.find("tr", data_name=b["name"])
        for key in ("g_images_per_s", "utilisation", "speedup_vs_blog", "speedup_vs_example"):
            cell = row.find("td", data_col=key)
            expected = b["extra_info"].get(key)
            assert (float(cell.attrs["data-value"]) if cell.attrs["data-value"] else None) == expected, (b["name"], key)
    project = table.find("tr", data_name="test_train_iteration[cpu-dcgan-b64-project-fp32]")
    assert "2.50×" in project.text() and "12.5%" in project.text() and "700 MB" in project.text()


def test_the_scoreboard_ranks_each_protocol_apart_with_the_sources_numbers(fx, page):
    _, _, dom = page
    sec = dom.find("section", id="scoreboard")
    tables = sec.find_all("table", class_="scoreboard")
    rows = {t.attrs["id"]: {r.attrs["data-row"]: r for r in t.find_all("tr", data_row=True)} for t in tables}
    first = rows["scoreboard-1"]  # 1,000 samples: the quick studies' arms and two scored generators
    study, trials = storage_trials(fx, "step_ratio")
    for arm in rf.STEP_RATIO_FID:
        best = min((t for t in trials if t.user_attrs["arm"] == arm and t.state.name == "COMPLETE"),
                   key=lambda t: t.user_attrs["metrics"]["fid1k"])
        cells = first[f"{study.study_name}: {arm}"]
        assert f"seed {best.params['seed']}" in cells.find_all("td")[1].text()  # the best seed, named
        for col, key in (("fid", "fid1k"), ("kid", "kid1k_mean"), ("recall", "recall1k"), ("modes", "modes1k")):
            assert float(cells.find("td", data_col=col).attrs["data-value"]) == best.user_attrs["metrics"][key]
    for name in ("my-gan", "my-vae"):
        saved = json.loads((fx.scores / name / "metrics.json").read_text())
        assert float(first[name].find("td", data_col="precision").attrs["data-value"]) == saved["precision1k"]
        assert first[name].find("img", class_="thumb")
    fids = [float(r.find("td", data_col="fid").attrs["data-value"]) for r in first.values()]
    assert fids == sorted(fids) and len(first) == len(rf.STEP_RATIO_FID) + len(rf.QUIRK_FID) + 2
    alone = next(r for r in rows.values() if "my-gan-500" in r)
    assert list(alone) == ["my-gan-500"] and "my-gan-500" not in first  # never ranked with the 1,000-sample scores
    notes = [n.text() for n in sec.find_all("p", data_role="protocol-differs")]
    assert len(notes) == len(tables) - 1 and any("n_generated 1000 vs 500" in n for n in notes)


def test_page_is_self_contained(page):
    path, html, dom = page
    scripts = dom.find_all("script")  # the scoreboard's sort, inline, nothing fetched
    assert len(scripts) == 1 and "src" not in scripts[0].attrs and "fetch" not in scripts[0].text()
    assert not dom.find_all("link") and not dom.find_all("iframe")
    style = " ".join(s.text() for s in dom.find_all("style"))
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    images = dom.find_all("img")
    assert len(images) > 20
    for img in images:
        src = img.attrs["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
        assert img.attrs.get("alt")
    ids = {n.attrs["id"] for n in dom.iter() if "id" in n.attrs}
    for a in dom.find_all("a"):
        href = a.attrs.get("href", "")
        if a.attrs.get("class") == "csv":  # a table's download, embedded
            assert href.startswith("data:text/csv;charset=utf-8;base64,") and a.attrs["download"].endswith(".csv")
            continue
        assert href.startswith("#") and href[1:] in ids, href  # only links within the page
    assert "http://" not in html and "https://" not in html


def csv_rows(link: Node) -> list[list[str]]:
    return list(csv.reader(io.StringIO(base64.b64decode(link.attrs["href"].split(",", 1)[1]).decode())))


def test_every_table_downloads_as_csv_with_every_digit(fx, page):
    _, html, dom = page
    tables, links = dom.find_all("table"), dom.find_all("a", class_="csv")
    assert len(links) == len(tables) >= 8 and html.count('<a class="csv"') == html.count("<table")
    assert len({a.attrs["download"] for a in links}) == len(links)  # no two downloads share a name
    for link, table in zip(links, tables, strict=True):  # in page order: each link, then its table's rows
        assert len(csv_rows(link)) == len(table.find_all("tr"))
    arms = dom.find("table", class_="arms", data_study=fx.studies["step_ratio"])
    link = links[tables.index(arms)]
    assert link.attrs["download"].endswith(f"{fx.studies['step_ratio']}-arms.csv")
    header, *rows = csv_rows(link)
    fid = next(i for i, h in enumerate(header) if h.startswith("fid1k mean [95% CI]"))
    assert header[fid + 1:fid + 3] == [f"{header[fid]} CI low", f"{header[fid]} CI high"]
    for row in arms.find_all("tr", data_arm=True):
        cell = row.find("td", data_col="fid")
        line = next(r for r in rows if r[0].startswith(row.attrs["data-arm"]))
        # every digit, not the page's 4 significant ones
        assert line[fid:fid + 3] == [cell.attrs["data-value"], cell.attrs["data-lo"], cell.attrs["data-hi"]]


def test_figures_are_also_written_as_png(page):
    path, _, dom = page
    written = sorted((path.parent / "figures").glob("*.png"))
    assert {p.stem for p in written} >= {"step-ratio-blog-quick-knob", "step-ratio-blog-quick-anytime",
                                         "step-ratio-blog-quick-coverage", "joint-blog-quick-importance"}
    embedded = {img.attrs["src"].split(",", 1)[1] for img in dom.find_all("img")}
    for p in written:
        assert base64.b64encode(p.read_bytes()).decode() in embedded  # the same pictures as on the page


# ---- empty storage and errors -----------------------------------------------------------------------------

def assert_empty_page(html: str) -> None:
    dom = parse(html)
    assert "No studies in this storage yet" in dom.find("div", data_role="empty-storage").text()
    not_run = dom.find("section", id="not-run").text()
    for name in REGISTRY:
        assert f"python -m ablations.run --study {name}" in not_run
    assert "pytest benchmarks/ --benchmark-only --benchmark-json" in dom.find("section", id="benchmarks").text()


def test_an_absent_storage_gives_a_page_that_says_so_and_creates_nothing(tmp_path):
    out = build.build(storage=f"sqlite:///{tmp_path}/nothing.db", benchmarks=[], out=str(tmp_path / "s.html"),
                      catalogue=catalogue())
    assert_empty_page(out.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.html"]  # no database file was created by reading


def test_an_empty_storage_gives_a_page_that_says_so(tmp_path):
    url = f"sqlite:///{tmp_path}/empty.db"
    optuna.storages.RDBStorage(url)  # the tables, no study
    assert_empty_page(build.build(storage=url, benchmarks=[], out=str(tmp_path / "s.html"),
                                  catalogue=catalogue()).read_text())


def test_the_cli_with_defaults_in_a_fresh_folder(tmp_path):
    """`python -m reports.build` where nothing ran yet: an empty page; benchmark JSON found by default."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    rf.benchmark_json(tmp_path / "benchmarks" / "results" / "cpu-fixture.json")
    (tmp_path / "benchmarks" / "results" / "broken.json").write_text("{")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "reports.build"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "reports" / "summary.html"
    assert proc.stdout.strip() == "reports/summary.html" and out.is_file()
    dom = parse(out.read_text())
    assert dom.find("div", data_role="empty-storage")
    assert "cpu-fixture.json" in dom.find("section", id="benchmarks").text()
    # a broken file found by the default glob is skipped with a note (a study's report must not fail on it)
    assert "broken.json is not valid JSON" in dom.find("p", data_role="benchmark-skipped").text()
    assert not (tmp_path / "runs").exists()


# ---- a real browser ---------------------------------------------------------------------------------------

# Injected into a copy of the page only (the page's own one script sorts the scoreboard): records uncaught errors,
# failed resource loads, console errors and warnings, images that did not decode, any resource fetched from
# outside the page, and the first scoreboard row after one and after two clicks on its first number column, into a
# <pre id="__check"> that --dump-dom prints.
CHECKER = """<script>
window.__check = {errors: [], console: []};
window.addEventListener('error', function (e) {
  window.__check.errors.push(e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?')));
}, true);
['error', 'warn'].forEach(function (level) {
  var orig = console[level];
  console[level] = function () { window.__check.console.push(level + ': ' + Array.from(arguments).join(' '));
                                 return orig.apply(console, arguments); };
});
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var out = window.__check;
  out.images = imgs.length;
  out.broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                   .map(function (i) { return i.alt || i.src.slice(0, 40); });
  out.fetched = performance.getEntriesByType('resource').map(function (r) { return r.name; })
                           .filter(function (n) { return n.indexOf('data:') !== 0; });
  var th = document.querySelector('#scoreboard-1 th[data-sort="num"]');
  out.sorted = [];
  for (var i = 0; th && i < 2; i++) {
    th.click();
    out.sorted.push(document.querySelector('#scoreboard-1 tr[data-row]').getAttribute('data-row'));
  }
  var pre = document.createElement('pre'); pre.id = '__check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed "
                                    "(Debian: apt-get install chromium); the browser check cannot run")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"  # a private profile: parallel runs do not share a lock
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=90)


def browser_check(html: str, tmp_path: Path) -> dict:
    """Load ``html`` in headless chromium; return what the checker recorded plus the page's console lines."""
    copy = tmp_path / "checked.html"
    copy.write_text(html.replace("<head>", "<head>" + CHECKER, 1))
    proc = chromium(tmp_path, "--dump-dom", copy.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    marker = '<pre id="__check">'
    assert marker in proc.stdout, "the page never fired its load event"
    raw = proc.stdout.split(marker, 1)[1].split("</pre>", 1)[0]
    result = json.loads(raw.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&"))
    result["log"] = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and copy.name in line]
    return result


@needs_chromium
def test_the_browser_check_catches_broken_images_and_errors(tmp_path):
    """The check below must be able to fail: a page with a broken image, a throwing script and a console error."""
    bad = ('<!doctype html><html><head><title>t</title></head><body><img alt="broken" src="data:image/png;base64,AAAA">'
           '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    result = browser_check(bad, tmp_path)
    assert result["broken"] == ["broken"]
    assert any("undefinedFunction" in e for e in result["errors"])
    assert any("boom" in c for c in result["console"]) and result["log"]


@needs_chromium
def test_the_page_loads_in_a_browser_without_errors_and_a_screenshot_is_kept(page, tmp_path):
    path, html, dom = page
    result = browser_check(html, tmp_path)
    assert result["images"] == len(dom.find_all("img"))
    assert result["broken"] == [] and result["errors"] == [] and result["console"] == [] and result["log"] == []
    assert result["fetched"] == []  # nothing but data: URIs
    board = {r.attrs["data-row"]: float(r.find("td", data_col="fid").attrs["data-value"])
             for r in dom.find("table", id="scoreboard-1").find_all("tr", data_row=True)}
    assert result["sorted"] == [min(board, key=board.get), max(board, key=board.get)]  # a click sorts, again reverses

    shot = tmp_path / "screenshot-top.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 10  # text and figures rendered, not a blank page (no pixel comparison)
    shutil.copy(shot, REPO / "reports" / "screenshot-top.png")  # for humans; git-ignored (*.png)


def test_a_multi_objective_joint_study_in_a_journal_storage_shows_its_pareto_front(tmp_path):
    url = f"journal:{tmp_path}/studies.log"
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.create_study(study_name="joint-mo", storage=JournalStorage(JournalFileBackend(url[8:])),
                                directions=["minimize", "minimize"])
    study.set_user_attr("study", "joint")
    study.set_user_attr("objective", "fid1k")
    dists = rf.joint_distributions()
    rng = np.random.default_rng(0)
    for fid, wall in ((50.0, 30.0), (40.0, 60.0), (60.0, 70.0)):  # the third is dominated
        params = {p: (d.choices[0] if hasattr(d, "choices") else d.low) for p, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(values=[fid, wall], params=params, distributions=dists,
                                                  user_attrs={"metrics": rf.metrics(1000, fid, 3.0, rng)}))
    dom = parse(build.build(storage=url, benchmarks=[], out=str(tmp_path / "s.html")).read_text())
    section = dom.find("section", id="study-joint-mo")
    pareto = [r.find("td").text() for r in section.find("table", class_="pareto").find_all("tr")[1:]]
    assert sorted(pareto) == ["0", "1"]
    assert "single-objective studies only" in section.find(data_role="importances").text()


def test_the_answers_at_the_top_repeat_each_study_answer(fx, page):
    _, _, dom = page
    answers = dom.find("section", id="answers")
    for name in fx.studies.values():
        section = dom.find("section", id="study-" + name.replace("_", "-"))
        answer = section.find("div", data_role="study-answer").text()
        assert answer and answer == answers.find("tr", data_study=name).find("td", data_role="answer").text()
    assert "reused noise" in answers.find("tr", data_study=fx.studies["blog_quirks"]).text()
    # the step ratio study answers its question with the blog's 1:5 against the best arm, paired, with a CI
    step = answers.find("tr", data_study=fx.studies["step_ratio"]).find("td", data_role="answer").text()
    at_steps, at_flops = step.split(" At equal compute (")
    assert at_steps.startswith("At equal G steps: The blog's setting 1:5 has ")
    assert "the fid1k of the best arm, 1:1 (95% CI " in at_steps and "paired over 5 seeds" in at_steps
    assert "it clearly costs" in at_steps and "1:1 is clearly best overall" in at_steps
    # at equal compute the cheap 1:2 trained on to 1,265 G steps and is best there (report_fixtures.STEP_RATIO_FLOPS)
    assert at_flops.startswith("every arm judged where it had spent the 1.71 model TFLOPs that the base spends in "
                               "900 G steps: 5:1 at 273 G steps, 2:1 at 571 G steps, 1:2 at 1,265 G steps, 1:5 at "
                               "1,671 G steps): The blog's setting 1:5 has ")
    assert "the fid1k of the best arm, 1:2 (95% CI" in at_flops and "1:2 is clearly best overall" in at_flops
    assert at_flops.endswith("The unit changes the answer: at equal G steps 1:1 is clearly best, at equal FLOPs 1:2 "
                             "is clearly best.")


def test_each_grid_study_answers_at_equal_flops_too_and_says_when_the_unit_changes_the_answer(fx, page):
    _, _, dom = page
    step = dom.find("section", id="study-" + fx.studies["step_ratio"].replace("_", "-"))
    assert "1:2 is best" in step.find("div", data_role="compute-verdict").text()  # rf.STEP_RATIO_FLOPS
    assert step.find("p", data_role="unit-change").text() == \
        "The unit changes the answer: at equal G steps 1:1 is clearly best, at equal FLOPs 1:2 is clearly best."
    arms = step.find("table", class_="arms")
    for arm, (fid, g_steps) in rf.STEP_RATIO_FLOPS.items():
        row = arms.find("tr", data_arm=arm)
        assert abs(float(row.find("td", data_col="fid_flops").attrs["data-value"]) - fid) < 3  # seeds' noise: sd 1
        assert row.find("td", data_col="g_steps_flops").attrs["data-value"] == str(g_steps)
    # the pictures are drawn at the end of training: past the budget for an arm that trained on to equal FLOPs
    for arm, (fid, g_steps) in rf.STEP_RATIO_FLOPS.items():
        caption = step.find("figure", data_arm=arm).find("figcaption").text()
        if g_steps > 900:
            assert f"after {g_steps:,} G steps, fid1k " in caption and " at the budget)" in caption, caption
            assert abs(float(caption.split("fid1k ")[1].split(" ")[0]) - fid) < 3, caption
        else:
            assert "after 900 G steps" in caption and "at the budget" not in caption, caption
        # so are the neighbours grids and the scoreboard's thumbnails, whose numbers are at the budget
        neighbours = step.find("figure", data_arm=arm, data_role="neighbours").find("figcaption").text()
        source = dom.find("tr", data_row=f"{fx.studies['step_ratio']}: {arm}").find_all("td")[1].text()
        for text in (neighbours, source):
            assert (f"after {g_steps:,} G steps, where its training ended" in text) == (g_steps > 900), text
    quirks = dom.find("section", id="study-" + fx.studies["blog_quirks"].replace("_", "-"))
    assert quirks.find("p", data_role="unit-change").text() == "The answer is the same in both units."
    assert "reused noise" in quirks.find("div", data_role="compute-verdict").text()
    depth = dom.find("section", id="study-" + fx.studies["depth"].replace("_", "-"))  # run before equal compute
    assert not depth.find_all("div", data_role="compute-verdict")
    assert "equal compute" not in depth.find("div", data_role="study-answer").text()
    assert not depth.find_all("td", data_col="fid_flops")


def test_equal_compute_where_no_arm_has_learned_says_it_cannot_rank_the_arms(fx):
    import dataclasses

    from reports import load

    (data,) = [d for d in load.load_studies(fx.storage) if d.name == fx.studies["step_ratio"]]
    order = sections.arm_order(data)
    at_steps = stats.verdict(sections.seed_groups(data, order, "fid"), data.names.fid)
    learned = sections.learning(data, order, sections.seed_groups(data, order, "fid"))
    compute = sections.equal_compute(data, order, at_steps, learned, None)
    assert compute["unlearned"] is None and compute["changes"]  # the fixture's arms learned at equal FLOPs
    # a reference that spends too little: every arm judged at 0.9x its step-0 FID, none learned there
    trials = data.trials.assign(fid_flops=data.trials["fid_step0"] * 0.9)
    untrained = dataclasses.replace(data, trials=trials)
    compute = sections.equal_compute(untrained, order, at_steps, learned, None)
    assert compute["unlearned"].startswith("No arm had learned by then (each arm's fid1k there is above half")
    assert compute["changes"] is None  # no "the unit changes the answer" drawn from untrained generators
    answer = sections.answer(untrained, at_steps, learned, None, compute)
    assert answer.endswith(compute["unlearned"] + ".") and answer.startswith("At equal G steps: ")


# ---- a study with a tuning phase (the optimizer study) ------------------------------------------------------

OPTIMIZER_FID = {"Adadelta lr=1e-3": 300.0, "Adadelta tuned": 20.0, "Adam tuned": 30.0, "Adam TTUR tuned": 40.0,
                 "RMSprop tuned": 25.0, "SGD m=0.9 tuned": 60.0}
# each family's best at another point of its sweep; SGD's three highest rates diverged on the tuning seed
TUNING_FID = {"Adadelta lr=0.33": 40.0, "Adadelta lr=1": 22.0, "Adadelta lr=3": 90.0, "Adadelta lr=9": 95.0,
              "Adadelta lr=27": 99.0,
              "Adam lr=6.7e-5": 50.0, "Adam lr=2e-4": 35.0, "Adam lr=6e-4": 31.0, "Adam lr=1.8e-3": 30.5,
              "Adam lr=5.4e-3": 30.0,
              "Adam TTUR lr=3.3e-5/1.3e-4": 45.0, "Adam TTUR lr=1e-4/4e-4": 60.0, "Adam TTUR lr=3e-4/1.2e-3": 70.0,
              "Adam TTUR lr=9e-4/3.6e-3": 75.0, "Adam TTUR lr=2.7e-3/0.011": 76.0,
              "RMSprop lr=6.7e-5": 27.0, "RMSprop lr=2e-4": 29.0, "RMSprop lr=6e-4": 80.0, "RMSprop lr=1.8e-3": 85.0,
              "RMSprop lr=5.4e-3": 86.0,
              "SGD m=0.9 lr=3.3e-3": 200.0, "SGD m=0.9 lr=0.01": 65.0, "SGD m=0.9 lr=0.03": None,
              "SGD m=0.9 lr=0.09": None, "SGD m=0.9 lr=0.27": None}
TUNED = {"Adadelta tuned": "Adadelta lr=1", "Adam tuned": "Adam lr=5.4e-3",
         "Adam TTUR tuned": "Adam TTUR lr=3.3e-5/1.3e-4", "RMSprop tuned": "RMSprop lr=6.7e-5",
         "SGD m=0.9 tuned": "SGD m=0.9 lr=0.01"}


@pytest.fixture(scope="module")
def tuned_page(tmp_path_factory) -> tuple[rf.Fixture, Path, Node]:
    tmp = tmp_path_factory.mktemp("tuned")
    fx = rf.Fixture(f"sqlite:///{tmp}/studies.db", tmp / "runs", tmp / "bench.json", tmp / "results")
    rf.tuned_study(fx, "optimizer", "quick", 3, OPTIMIZER_FID, TUNING_FID)
    out = build.build(storage=fx.storage, runs=str(fx.runs), benchmarks=[], out=str(tmp / "s.html"),
                      png_dir=str(tmp / "figures"))
    return fx, tmp, parse(out.read_text())


def test_the_page_says_which_learning_rate_each_family_won_with_and_shows_the_sweep(tuned_page):
    fx, tmp, dom = tuned_page
    section = dom.find("section", id=sections.study_anchor(fx.studies["optimizer"]))
    said = section.find("p", data_role="tuning").text()
    assert "5 values of the learning rate on tuning seed(s) 10000" in said
    for arm, candidate in TUNED.items():
        assert f"{arm} won with {candidate}" in said
    # Adadelta and SGD won inside their sweeps; the others at an edge, which the page says
    edges = said.split("At the edge of its sweep: ")[1].split(". Its best value may lie beyond")[0]
    assert edges == ("Adam tuned (the highest value tried); Adam TTUR tuned (the lowest value tried); "
                     "RMSprop tuned (the lowest value tried)")
    rows = section.find("table", class_="tuning").find_all("tr", data_arm=True)
    assert [r.attrs["data-arm"] for r in rows] == list(TUNING_FID)
    _, trials = storage_trials(fx, "optimizer")
    tuning = {t.user_attrs["arm"]: t for t in trials if t.user_attrs.get("phase") == "tuning"}
    for row in rows:
        arm = row.attrs["data-arm"]
        assert (row.find("td", data_col="chosen").text() == "yes") == (arm in TUNED.values())
        fid = row.find("td", data_col="fid")
        if TUNING_FID[arm] is None:
            assert fid.text() == "–" and row.find("td", data_col="failed").text() == "1 of 1"
        else:
            assert float(fid.attrs["data-value"]) == tuning[arm].value == TUNING_FID[arm]
    figure = section.find("figure", data_role="tuning")
    assert figure.find("img").attrs["src"].startswith("data:image/png;base64,")
    assert (tmp / "figures" / f"{sections.anchor(fx.studies['optimizer'])}-tuning.png").is_file()


def test_only_the_blogs_own_arm_is_marked_as_the_blogs_and_a_chosen_candidate_as_chosen(tuned_page):
    """The page's CSS writes " (blog)" after the first cell of a row of class blog-arm. Until 2026-12-03 a chosen
    tuning candidate's row borrowed that class, so its family's cell read "Adam tuned (blog)"."""
    fx, _, dom = tuned_page
    section = dom.find("section", id=sections.study_anchor(fx.studies["optimizer"]))
    assert [r.attrs["data-arm"] for r in section.find_all("tr", class_="blog-arm")] == ["Adadelta lr=1e-3"]
    assert [r.attrs["data-arm"] for r in section.find_all("tr", class_="chosen")] == list(TUNED.values())
    assert 'tr.blog-arm td:first-child::after { content: " (blog)"' in dom.find("style").text()


def test_tuning_trials_are_no_arm_of_the_verdict(tuned_page):
    fx, _, dom = tuned_page
    section = dom.find("section", id=sections.study_anchor(fx.studies["optimizer"]))
    arms = section.find("table", class_="arms").find_all("tr", data_arm=True)
    assert [r.attrs["data-arm"] for r in arms] == [a.label for a in REGISTRY["optimizer"].arms]
    assert all(r.find("td", data_col="seeds").attrs["data-value"] == "3" for r in arms)  # not the tuning seed
    assert section.find("div", data_role="verdict").text().startswith("Adadelta tuned is best on fid1k")


def test_a_study_without_a_tuning_phase_has_no_tuning_block(fx, page):
    _, _, dom = page
    assert not dom.find_all("table", class_="tuning") and not dom.find_all(data_role="tuning")
