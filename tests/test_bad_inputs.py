"""Every user mistake, across the four CLIs, in one table: one line naming what is wrong, exit status 2, no
traceback, and nothing written (the working folder is byte-for-byte what it was before the command).

T = python -m gan_core.train, E = python -m gan_core.evaluate, A = python -m ablations.run,
R = python -m reports.build. Placeholders in the arguments name things each row sets up in its working
folder: {FILE} a plain file, {DIR} an empty folder, {RUN} a trained run folder, {TRUNC} one whose
checkpoint is cut short, {BADCFG} one whose config.json is not JSON, {BADIMG} an image folder holding a
text file named .png, {BENCH} a benchmark file that is not JSON, {PAGE} an existing report page, {STUDIES} a
SQLite storage of studies that are not the depth study's at the smoke budget (see make_studies).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from ablations import run as ablations_run
from gan_core import evaluate, files
from gan_core import train as train_cli
from gan_core.training import loop
from gan_core.training.run_folder import CHECKPOINT, CONFIG
from reports import build
from tests.conftest import tiny_config
from tests.metric_helpers import embedded_split

ROOT = Path(__file__).resolve().parents[1]
T_BASE = ["--preset", "dcgan", "--device", "cpu", "--steps", "2"]
E_BASE = ["--device", "cpu", "--no-floor"]
A_BASE = ["--budget", "smoke", "--device", "cpu"]
CLIS = {  # main, program name, arguments every row of that CLI starts with
    "T": (train_cli.main, train_cli.PROG, T_BASE),
    "E": (evaluate.main, evaluate.PROG, E_BASE),
    "A": (ablations_run.main, ablations_run.PROG, A_BASE),
    "R": (build.main, build.PROG, []),
}

ROWS = [
    # ---- train
    ("T", ["--arch", "resnet"], "invalid choice: 'resnet' (choose from 'seed', 'dcgan')"),
    ("T", ["--optim", "Adamx"], "not in torch.optim; choose one of:"),
    ("T", ["--optim", "LBFGS", "--optim-args", "{}"], "optimizer LBFGS cannot train a GAN here (its step() needs"),
    ("T", ["--optim", "SparseAdam"], "optimizer SparseAdam cannot train a GAN here (it takes only sparse"),
    ("T", ["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    ("T", ["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    ("T", ["--ratio", "0:1"], "ratio '0:1' is not valid; write D:G with positive integers"),
    ("T", ["--ratio", "abc"], "ratio 'abc' is not valid"),
    ("T", ["--steps", "-5"], "steps must be an integer >= 1, got -5"),
    ("T", ["--depth", "12"], "depth must be an integer from 4 to 9"),
    ("T", ["--preset", "blog"], "unknown preset 'blog'; choose one of: default, seed, dcgan, dcgan-cpu"),
    ("T", ["--batch-size", "1000000000"], "batch size 1,000,000,000 needs about"),
    ("T", ["--train-limit", "zero"], "--train-limit must be a positive integer or 'all'"),
    ("T", ["--train-limit", "100000"], "train limit 100,000 is more than the 4,000 training images"),
    ("T", ["--g-optim-args", "{betas"], "must be a JSON object"),
    ("T", ["--data", "folder"], "needs a root folder"),
    ("T", ["--data", "folder", "--data-root", "/nonexistent/pics"], "is not a folder"),
    ("T", ["--data", "folder", "--data-root", "{BADIMG}"], "fake.png is not a readable image"),
    ("T", ["--data", "mnist", "--data-root", "/nonexistent/mnist"], "MNIST raw files not found"),
    ("T", ["--resume"], "--resume needs --out"),
    ("T", ["--resume", "--out", "{DIR}/missing"], "nothing to resume: "),
    ("T", ["--resume", "--out", "{TRUNC}"], "checkpoint.pt cannot be read"),
    ("T", ["--out", "{RUN}"], "already holds a run; resume it (--resume)"),
    ("T", ["--out", "{FILE}"], "is a file, not a folder"),
    ("T", ["--out", "{FILE}/sub"], "is a file, not a folder"),
    ("T", ["--seeds", "0,0"], "--seeds must be distinct integers from 0 to 2,147,483,647 separated by commas, e.g. "
                              "0,1,2; got '0,0'"),
    ("T", ["--seeds", "0,a"], "--seeds must be distinct integers from 0"),
    ("T", ["--seeds", "0,\u00b2"], "--seeds must be distinct integers from 0"),  # isdigit() says yes, int() no
    ("T", ["--seeds", "0,18446744073709551616"], "--seeds must be distinct integers from 0 to 2,147,483,647"),
    ("T", ["--seed", "18446744073709551616"], "seed must be an integer from 0 to 2,147,483,647, got 18,446,744,"),
    ("T", ["--seeds", "0,1", "--seed", "3"], "give --seed or --seeds, not both"),
    ("T", ["--seeds", "0,1", "--optim", "Adafactor"], "Adafactor for the generator cannot train packed seeds"),
    ("T", ["--seeds", "0,1", "--resume", "--out", "{DIR}/missing"], "nothing to resume: "),
    # ---- evaluate
    ("E", [], "RUN_DIR"),
    ("E", ["{RUN}", "--real-vs-real"], "exactly one"),
    ("E", ["--real-vs-real", "--n", "0"], "--n"),
    ("E", ["--real-vs-real", "--n", "abc"], "--n"),
    ("E", ["--real-vs-real", "--n", "100000"], "smaller --n"),
    ("E", ["--real-vs-real", "--device", "tpu"], "device 'tpu' is not valid"),
    ("E", ["--real-vs-real", "--data", "imagenet"], "data source 'imagenet' is not valid; choose one of: embedded"),
    ("E", ["{DIR}/missing"], "does not exist"),
    ("E", ["{FILE}"], "is a file, not a run folder"),
    ("E", ["{DIR}"], "is not a run folder (no config.json)"),
    ("E", ["{TRUNC}"], "checkpoint.pt cannot be read"),
    ("E", ["{BADCFG}"], "config.json is not valid JSON (Expecting"),
    ("E", ["{RUN}", "--n", "1000000000"], "the number of samples 1,000,000,000 needs about"),
    # ---- ablations
    ("A", ["--study", "nope"], "unknown study 'nope'; choose one of: step_ratio, optimizer, depth, width, seed_quirks"),
    ("A", ["--study", "depth", "--base", "blog"], "unknown preset 'blog'; choose one of: default, seed, dcgan"),
    ("A", ["--study", "depth", "--budget", "huge"], "unknown budget 'huge'; choose one of: auto, smoke, quick"),
    ("A", ["--study", "joint", "--pack-seeds"], "--pack-seeds needs a grid study; joint is searched"),
    ("A", ["--study", "depth", "--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
    ("A", ["--study", "depth", "--workers", "0"], "--workers must be an integer >= 1"),
    ("A", ["--study", "depth", "--storage", "postgresql://nobody@127.0.0.1:9/none"], "cannot open storage"),
    ("A", ["--study", "depth", "--storage", "sqlite:////nonexistent/dir/x.db"], "folder /nonexistent/dir does not"),
    ("A", ["--study", "depth", "--storage", "not a url"], "is not a URL"),
    ("A", ["--study", "depth", "--data", "mnist", "--data-root", "/nonexistent"], "MNIST raw files not found"),
    ("A", ["--study", "depth", "--data", "folder", "--data-root", "{BADIMG}"], "fake.png is not a readable image"),
    ("A", ["--study", "depth", "--runs", "{FILE}"], "is a file, not a folder; choose a folder for the trials'"),
    ("A", ["--study", "depth", "--report", "{DIR}"], "is a folder; give a file name for the report (--report)"),
    ("A", [], "--study is required"),
    *[("A", ["--study", "depth", "--storage", "sqlite:///{STUDIES}", "--study-name", name], message)
      for name, message in [
        ("kind", "holds another experiment: its study is 'width', this run's 'depth'; give this run another "
                 "--study-name (or run the one it holds)"),
        ("base", "its base is 'seed', this run's 'dcgan-cpu'; give this run another --study-name"),
        ("budget", "its budget is 'quick', this run's 'smoke'; give this run another --study-name"),
        ("redefined", "its budget 'smoke' differs in g_steps (8 there, 4 here); give this run another --study-name"),
        ("objective", "its objective is 'fid1k', this run's 'fid100'; give this run another --study-name"),
        ("multi", "is a study to minimize, minimize (2 objective(s)); python -m ablations.run minimises one, fid100: "
                  "give this run another --study-name"),
        ("max", "is a study to maximize (1 objective(s))"),
        ("plain", "was not created by python -m ablations.run (it has no 'study' user attr); give this run another "
                  "--study-name"),
        ("empty", "was not created by python -m ablations.run"),
        ("attr", "study 'attr': user attr 'seeds' is a string, not an integer; the study was not written by python "
                 "-m ablations.run (edited by hand, or another program's); give this run another --study-name"),
        ("trial", "study 'trial' trial #0: user attr 'metrics' is a string, not an object"),
    ]],
    # ---- report
    ("R", ["--storage", "sqlite:///{DIR}/no/such/folder/s.db"], "does not exist"),
    ("R", ["--storage", "sqlite:///{FILE}"], "cannot"),
    ("R", ["--storage", "not-a-url"], "is not a URL"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--benchmarks", "{BENCH}"], "is not valid JSON: Expecting "
                                                                             "property name enclosed in double "
                                                                             "quotes: line 1 column 2 (char 1)"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--benchmarks", "{DIR}/missing.json"], "cannot read"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--out", "{FILE}/summary.html"], "is a file, not a folder"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--out", "{DIR}"], "is a folder; give a file name for the report"),
    ("R", ["--no-such-flag"], "unrecognized arguments"),
]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One digit and feature cache for the table's rows: it is not a command's output, and filling it afresh for
    every row would cost a second of features each."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    loop.train(tiny_config(steps=2), out, split=embedded_split())
    return out


def make(name: str, work: Path, trained: Path) -> Path:
    """What a placeholder names, made in the working folder."""
    path = work / name.lower()
    if name == "FILE":
        path.write_text("not a folder")
    elif name == "DIR":
        path.mkdir()
    elif name in ("RUN", "TRUNC", "BADCFG"):
        shutil.copytree(trained, path, ignore=shutil.ignore_patterns(".lock"))
        if name == "TRUNC":
            ckpt = path / CHECKPOINT
            ckpt.write_bytes(ckpt.read_bytes()[:1000])
        if name == "BADCFG":
            (path / CONFIG).write_text('{"model": {"arch": "dcgan",')
    elif name == "BADIMG":
        for cls in ("0", "1"):
            (path / cls).mkdir(parents=True)
            Image.new("L", (28, 28)).save(path / cls / "ok.png")
        (path / "0" / "fake.png").write_text("this is text, not a PNG")
    elif name == "STUDIES":
        path = work / "studies.db"
        shutil.copy(studies_template(), path)
    elif name == "BENCH":
        path = work / "bench.json"
        path.write_text("{broken")
    return path


@functools.cache
def studies_template() -> Path:
    """make_studies' storage, made once (an SQLite storage takes a second to create) and copied into each row."""
    path = Path(tempfile.mkdtemp()) / "studies.db"
    make_studies(f"sqlite:///{path}")
    return path


def make_studies(url: str) -> None:
    """Studies that ``--study depth --budget smoke`` must not train into, each named for what differs."""
    import optuna

    from ablations.budgets import BUDGETS

    smoke, redefined = BUDGETS["smoke"].to_dict(), {**BUDGETS["smoke"].to_dict(), "g_steps": 8}
    ours = {"study": "depth", "base": "dcgan-cpu"}
    for name, attrs, directions in [
        ("kind", {"study": "width"}, ["minimize"]),
        ("base", {**ours, "base": "seed"}, ["minimize"]),
        ("budget", {**ours, "budget": BUDGETS["quick"].to_dict()}, ["minimize"]),
        ("redefined", {**ours, "budget": redefined}, ["minimize"]),
        ("objective", {**ours, "budget": smoke, "objective": "fid1k"}, ["minimize"]),
        ("multi", {}, ["minimize", "minimize"]), ("max", {}, ["maximize"]), ("plain", {}, ["minimize"]),
        ("empty", {}, ["minimize"]), ("attr", {**ours, "seeds": "5"}, ["minimize"]), ("trial", ours, ["minimize"]),
    ]:
        study = optuna.create_study(study_name=name, storage=url, directions=directions)
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        if name == "plain":  # plain Optuna: a study with a trial of its own
            study.enqueue_trial({"x": 1})
        if name == "trial":
            study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"metrics": "12"}))


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def expand(args: list[str], work: Path, trained: Path) -> list[str]:
    made = {}
    out = []
    for a in args:
        for name in ("FILE", "DIR", "RUN", "TRUNC", "BADCFG", "BADIMG", "BENCH", "STUDIES"):
            if "{" + name + "}" in a:
                if name not in made:
                    made[name] = make(name, work, trained)
                a = a.replace("{" + name + "}", str(made[name]))
        out.append(a)
    return out


@pytest.mark.parametrize("cli, args, message", [pytest.param(*r, id=f"{r[0]} {' '.join(r[1])}") for r in ROWS])
def test_a_bad_input_is_one_line_exit_2_and_writes_nothing(cli, args, message, tmp_path, monkeypatch, capsys,
                                                          trained_run, shared_cache):
    main, prog, base = CLIS[cli]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default outputs (runs/, reports/summary.html) would land here
    monkeypatch.setenv(files.CACHE_ENV, str(shared_cache))
    argv = [*base, *expand(args, work, trained_run)]
    before = snapshot(work)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse rejects some flags from inside parse_args: still one line, status 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and "Traceback" not in err, err
    assert message in err, err
    assert snapshot(work) == before


def unprivileged(cmd: list[str]) -> list[str]:
    """The command as a user who may not write a read-only folder: root drops the capabilities that let it
    (chmod alone does not stop root); anyone else is stopped by the mode bits."""
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]
    return cmd


@pytest.mark.parametrize("module, args, message", [
    ("gan_core.train", [*T_BASE, "--out", "{RO}/run"], "cannot write to {RO} (Permission denied)"),
    ("gan_core.evaluate", [*E_BASE, "{RO}"], "cannot write to {RO} (Permission denied)"),
    ("ablations.run", ["--study", "depth", *A_BASE, "--runs", "{RO}/runs"], "cannot write to {RO}"),
    ("ablations.run", ["--study", "depth", *A_BASE, "--report", "{RO}/r.html"], "cannot write to {RO}"),
    ("reports.build", ["--storage", "sqlite:///{TMP}/x.db", "--out", "{RO}/summary.html"], "cannot write to {RO}"),
], ids=["T", "E", "A --runs", "A --report", "R"])
def test_an_unwritable_folder_is_refused_before_any_work(module, args, message, tmp_path, trained_run):
    ro = tmp_path / "ro"
    shutil.copytree(trained_run, ro, ignore=shutil.ignore_patterns(".lock"))  # E reads it as its run folder
    before = snapshot(tmp_path)
    ro.chmod(0o555)
    try:
        argv = [a.replace("{RO}", str(ro)).replace("{TMP}", str(tmp_path)) for a in args]
        p = subprocess.run(unprivileged([sys.executable, "-m", module, *argv]), capture_output=True, text=True,
                           cwd=tmp_path, timeout=300, env={**os.environ, files.CACHE_ENV: str(tmp_path.parent)})
    finally:
        ro.chmod(0o755)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert message.replace("{RO}", str(ro)) in p.stderr
    assert snapshot(tmp_path) == before
