"""Every user mistake, across the four CLIs, in one table: one line naming what is wrong, exit status 2, no
traceback, and nothing written (the working folder is byte-for-byte what it was before the command).

T = python -m gan_core.train, E = python -m gan_core.evaluate, A = python -m ablations.run,
R = python -m reports.build. Placeholders in the arguments name things each row sets up in its working
folder: {FILE} a plain file, {DIR} an empty folder, {RUN} a trained run folder, {TRUNC} one whose
checkpoint is cut short, {BADCFG} one whose config.json is not JSON, {BADIMG} an image folder holding a
text file named .png, {BENCH} a benchmark file that is not JSON, {BADSCORES} a results folder whose metrics.json
is not JSON, {PAGE} an existing report page; the names in
SAMPLE_FILES are samples a user brings to --samples, each wrong in its own way.
Damaged inputs (issue 22): {FLIPPED} a run folder whose checkpoint has 64 bytes of tensor data flipped, {EDITED}
one whose config.json's head was edited after training, {FLOATIMG} an image folder holding a float image in 0..200.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ablations import run as ablations_run
from gan_core import evaluate, files
from gan_core import train as train_cli
from gan_core.training import loop
from gan_core.training.config import HEADS
from gan_core.training.run_folder import CHECKPOINT, CONFIG
from reports import build
from tests.conftest import flip_tensor_bytes, tiny_config
from tests.metric_helpers import embedded_split

ROOT = Path(__file__).resolve().parents[1]
GEN = "tests.plugins.generators"  # the callables of --generator rows
MLP = "tests.plugins.mlp_gan"  # the builders of --arch rows
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
    ("T", ["--arch", "resnet"], "arch 'resnet' is not valid; choose one of: seed, dcgan, or module:function"),
    ("T", ["--arch", "nosuchmodule_xyz:build"], "--arch nosuchmodule_xyz:build: cannot import nosuchmodule_xyz"),
    ("T", ["--arch", f"{MLP}:wrong_size"], "the generator maps noise [2, 100] to [2, 1, 28, 28]; it must give "
                                           "[2, 1, 32, 32]"),
    ("T", ["--arch", f"{MLP}:two_logits"], "the discriminator maps images [2, 1, 32, 32] to [2, 2]; it must give one "
                                           "logit per image"),
    ("T", ["--arch", f"{MLP}:not_a_pair"], "returned MLPGenerator; return (generator, discriminator)"),
    ("T", ["--arch", f"{MLP}:build", "--depth", "6"], "the flags vary depth, which --arch tests.plugins.mlp_gan:build "
                                                      "does not take (it takes: width, channels, head, latent_dim)"),
    ("T", ["--arch", f"{MLP}:build", "--seeds", "0,1"], "its generator cannot train packed seeds (cannot pack a "
                                                        "MLPGenerator"),
    ("T", ["--optim", "Adamx"], "not in torch.optim; choose one of:"),
    ("T", ["--optim", "LBFGS", "--optim-args", "{}"], "optimizer LBFGS cannot train a GAN here (its step() needs"),
    ("T", ["--optim", "SparseAdam"], "optimizer SparseAdam cannot train a GAN here (it takes only sparse"),
    ("T", ["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    ("T", ["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    ("T", ["--ratio", "0:1"], "ratio '0:1' is not valid; write D:G with positive integers"),
    ("T", ["--ratio", "abc"], "ratio 'abc' is not valid"),
    ("T", ["--order", "shuffled"], "data order 'shuffled' is not valid; choose one of: sampled, blog_epochs"),
    ("T", ["--order", "blog_epochs", "--train-limit", "50", "--batch-size", "64"],
     "data order blog_epochs needs at least one full batch: the train set has 50 images, the batch size is 64"),
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
    ("T", ["--data", "folder", "--data-root", "{FLOATIMG}"], "float.tif is a float image with values 0..200; float "
                                                             "digits are read in 0..1: scale it to 0..1"),
    ("T", ["--data", "mnist", "--data-root", "/nonexistent/mnist"], "MNIST raw files not found"),
    ("T", ["--resume"], "--resume needs --out"),
    ("T", ["--resume", "--out", "{DIR}/missing"], "nothing to resume: "),
    ("T", ["--resume", "--out", "{TRUNC}"], "checkpoint.pt cannot be read"),
    ("T", ["--resume", "--out", "{FLIPPED}"], "checkpoint.pt cannot be read (its content does not match its checksum)"),
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
    ("E", ["{FLIPPED}"], "checkpoint.pt cannot be read (its content does not match its checksum)"),
    ("E", ["{EDITED}"], "config.json disagrees with checkpoint.pt in model.head; restore the config the run was"),
    ("E", ["{BADCFG}"], "config.json is not valid JSON (Expecting"),
    ("E", ["{RUN}", "--n", "1000000000"], "the number of samples 1,000,000,000 needs about"),
    ("E", ["{RUN}", "--samples", "{NPY_20}"], "exactly one"),
    ("E", ["{RUN}", "--out", "{DIR}/res"], "--out and --latent-dim go with --samples or --generator"),
    ("E", ["--samples", "{DIR}/missing.npy"], "does not exist; give a folder of images or an .npy/.npz file"),
    ("E", ["--samples", "{FILE}"], "is not a folder, .npy or .npz"),
    ("E", ["--samples", "{DIR}", "--out", "{DIR}/res"], "holds no .png, .jpg, .jpeg files"),
    ("E", ["--samples", "{BADIMG}/0", "--out", "{DIR}/res"], "fake.png is not a readable image"),
    ("E", ["--samples", "{PNG_WIDE}"], "images must be square (they are resized to 32x32), got 28x40"),
    ("E", ["--samples", "{NPY_NAN}", "--out", "{DIR}/res"], "has 3 NaN pixels (the first in image 2)"),
    ("E", ["--samples", "{NPY_255}"], "float pixels span 0 to 255, a mixed or unknown range; give float in [0, 1] or "
                                      "[-1, 1] (0-255 values: store them as uint8)"),
    ("E", ["--samples", "{NPY_MIXED}"], "float pixels span -1 to 255, a mixed or unknown range"),
    ("E", ["--samples", "{NPY_INT}"], "integer pixels must lie in 0-255, got 0 to 300"),
    ("E", ["--samples", "{NPY_SHAPE}"], "has shape [20, 5]; give N x H x W, N x 1 x H x W or N x H x W x 1"),
    ("E", ["--samples", "{NPY_FEW}"], "holds 5 images; the metrics need at least 10"),
    ("E", ["--samples", "{NPY_20}", "--n", "100"], "holds 20 images, fewer than --n 100"),
    ("E", ["--samples", "{NPZ_TWO}"], "holds 2 arrays (a, b); save one, or name it images or samples"),
    ("E", ["--samples", "{NPY_BROKEN}"], "cannot be read as .npy"),
    ("E", ["--samples", "{NPY_20}", "--latent-dim", "8"], "--latent-dim goes with --generator"),
    ("E", ["--generator", "nosuchmodule_xyz:sample"], "--generator nosuchmodule_xyz:sample: cannot import "
                                                     "nosuchmodule_xyz (ModuleNotFoundError"),
    ("E", ["--generator", "sample.py"], "--generator must be module:callable, e.g. mypkg.gan:build, got 'sample.py'"),
    ("E", ["--generator", f"{GEN}:nope"], "has no attribute 'nope'"),
    ("E", ["--generator", f"{GEN}:NOT_CALLABLE"], "NOT_CALLABLE is a int, not a callable"),
    ("E", ["--generator", f"{GEN}:wrong_shape", "--out", "{DIR}/res"], "output for 500 latent vectors has shape "
                                                                        "[500, 7]"),
    ("E", ["--generator", f"{GEN}:too_few", "--n", "20"], "returned 19 images for 20 latent vectors"),
    ("E", ["--generator", f"{GEN}:mixed", "--n", "600"], "returned batches in mixed ranges (float in [-1, 1], float"),
    ("E", ["--generator", f"{GEN}:fails", "--n", "20"], "failed on latent vectors [20, 100] (RuntimeError: mat1 and "
                                                        "mat2 shapes cannot be multiplied"),
    ("E", ["--generator", f"{GEN}:not_an_array", "--n", "20"], "returned a list; return a torch tensor or numpy"),
    ("E", ["--generator", f"{GEN}:replay", "--out", "{FILE}/res"], "is a file, not a folder; choose a folder for "
                                                                   "the results (--out DIR)"),
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
    ("A", ["--study", "depth", "--arch", f"{MLP}:build"], "the depth study's arms vary depth, which --arch"),
    ("A", ["--study", "width", "--arch", f"{MLP}:wrong_size"], "it must give [2, 1, 32, 32]"),
    ("A", ["--study", "joint", "--arch", f"{MLP}:build"], "the joint study's trials vary depth, which --arch"),
    ("A", ["--study", "depth", "--device", "cuda:0,cuda:1"], "device 'cuda:0' was asked for but CUDA is not "
                                                             "available here"),
    ("A", ["--study", "depth", "--device", "cpu,cuda:0"], "a list names GPUs only, each once, e.g. cuda:0,cuda:2"),
    ("A", ["--study", "depth", "--artifacts", "{FILE}"], "is a file, not a folder; choose a folder for the artifact "
                                                         "store (--artifacts)"),
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
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--scores", "{FILE}"], "is not a folder; give the folder whose "
                                                                      "sub-folders hold metrics.json"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--scores", "{BADSCORES}"], "mine/metrics.json cannot be read: "
                                                                           "Expecting property name"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--artifacts", "{DIR}/missing"], "missing does not exist; give the "
                                                                                  "folder the study's runner used"),
]

# Rows on a host that torch says has two GPUs (faked: this one has none)
TWO_GPU_ROWS = [
    ("A", ["--study", "depth", "--device", "cuda:7"], "device 'cuda:7': this machine has 2 CUDA device(s)"),
    ("A", ["--study", "depth", "--device", "cuda:0,cuda:7"], "device 'cuda:7': this machine has 2 CUDA device(s)"),
    ("A", ["--study", "depth", "--device", "cuda:1,cuda:1"], "names a GPU twice; name each once, e.g. cuda:0,cuda:2"),
    ("A", ["--study", "depth", "--device", "cuda:0,cpu"], "a list names GPUs only"),
    ("A", ["--study", "depth", "--device", "cuda,cuda:1"], "a list names GPUs only"),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    loop.train(tiny_config(steps=2), out, split=embedded_split())
    return out


def _npz_two(path: Path) -> None:
    np.savez(path, a=np.zeros((20, 28, 28), np.uint8), b=np.zeros(3))


def _npy_nan(path: Path) -> None:
    x = np.zeros((20, 28, 28), np.float32)
    x[2, 0, :3] = np.nan
    np.save(path, x)


SAMPLE_FILES = {  # samples a user might bring, each wrong in its own way (--samples rows)
    "PNG_WIDE": lambda p: (p.mkdir(), Image.new("L", (40, 28)).save(p / "a.png")),
    "NPY_NAN": lambda p: _npy_nan(p.with_suffix(".npy")),
    "NPY_255": lambda p: np.save(p.with_suffix(".npy"), np.linspace(0, 255, 20 * 784).reshape(20, 28, 28)),
    "NPY_MIXED": lambda p: np.save(p.with_suffix(".npy"), np.linspace(-1, 255, 20 * 784).reshape(20, 28, 28)),
    "NPY_INT": lambda p: np.save(p.with_suffix(".npy"), np.linspace(0, 300, 20 * 784).astype(int).reshape(20, 28, 28)),
    "NPY_SHAPE": lambda p: np.save(p.with_suffix(".npy"), np.zeros((20, 5), np.uint8)),
    "NPY_20": lambda p: np.save(p.with_suffix(".npy"), np.zeros((20, 28, 28), np.uint8)),  # fine, but 20 only
    "NPY_FEW": lambda p: np.save(p.with_suffix(".npy"), np.zeros((5, 28, 28), np.uint8)),
    "NPZ_TWO": lambda p: _npz_two(p.with_suffix(".npz")),
    "NPY_BROKEN": lambda p: p.with_suffix(".npy").write_bytes(b"\x93NUMPY garbage"),
}


def _sample_file(name: str, work: Path) -> Path:
    path = work / name.lower()
    SAMPLE_FILES[name](path)
    return next(work.glob(name.lower() + "*"))


def make(name: str, work: Path, trained: Path) -> Path:
    """What a placeholder names, made in the working folder."""
    path = work / name.lower()
    if name in SAMPLE_FILES:
        return _sample_file(name, work)
    if name == "FILE":
        path.write_text("not a folder")
    elif name == "DIR":
        path.mkdir()
    elif name in ("RUN", "TRUNC", "BADCFG", "FLIPPED", "EDITED"):
        shutil.copytree(trained, path, ignore=shutil.ignore_patterns(".lock"))
        if name == "TRUNC":
            ckpt = path / CHECKPOINT
            ckpt.write_bytes(ckpt.read_bytes()[:1000])
        if name == "BADCFG":
            (path / CONFIG).write_text('{"model": {"arch": "dcgan",')
        if name == "FLIPPED":
            flip_tensor_bytes(path / CHECKPOINT)
        if name == "EDITED":
            cfg = json.loads((path / CONFIG).read_text())
            cfg["model"]["head"] = next(h for h in HEADS if h != cfg["model"]["head"])
            (path / CONFIG).write_text(json.dumps(cfg))
    elif name == "BADIMG":
        for cls in ("0", "1"):
            (path / cls).mkdir(parents=True)
            Image.new("L", (28, 28)).save(path / cls / "ok.png")
        (path / "0" / "fake.png").write_text("this is text, not a PNG")
    elif name == "BADSCORES":  # a results folder whose metrics.json is cut short
        (path / "mine").mkdir(parents=True)
        (path / "mine" / "metrics.json").write_text("{broken")
    elif name == "FLOATIMG":
        for cls in ("0", "1"):
            (path / cls).mkdir(parents=True)
            Image.new("L", (28, 28)).save(path / cls / "ok.png")
        Image.fromarray(np.linspace(0, 200, 28 * 28, dtype=np.float32).reshape(28, 28)).save(path / "0" / "float.tif")
    elif name == "BENCH":
        path = work / "bench.json"
        path.write_text("{broken")
    return path


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def expand(args: list[str], work: Path, trained: Path) -> list[str]:
    made = {}
    out = []
    for a in args:
        for name in ("FILE", "DIR", "RUN", "TRUNC", "BADCFG", "BADIMG", "FLOATIMG", "BENCH", "FLIPPED", "EDITED",
                     "BADSCORES", *SAMPLE_FILES):
            if "{" + name + "}" in a:
                if name not in made:
                    made[name] = make(name, work, trained)
                a = a.replace("{" + name + "}", str(made[name]))
        out.append(a)
    return out


@pytest.mark.parametrize("cli, args, message", [pytest.param(*r, id=f"{r[0]} {' '.join(r[1])}") for r in ROWS])
def test_a_bad_input_is_one_line_exit_2_and_writes_nothing(cli, args, message, tmp_path, monkeypatch, capsys,
                                                          trained_run):
    check_one_line(cli, args, message, tmp_path, monkeypatch, capsys, trained_run)


@pytest.mark.parametrize("cli, args, message", [pytest.param(*r, id=f"{r[0]} {' '.join(r[1])}")
                                                for r in TWO_GPU_ROWS])
def test_a_bad_device_list_on_a_two_gpu_host_is_one_line(cli, args, message, tmp_path, monkeypatch, capsys,
                                                         trained_run):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_one_line(cli, args, message, tmp_path, monkeypatch, capsys, trained_run)


def check_one_line(cli, args, message, tmp_path, monkeypatch, capsys, trained_run):
    main, prog, base = CLIS[cli]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default outputs (runs/, reports/summary.html) would land here
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path / "cache"))  # the digit cache is not the command's output
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
