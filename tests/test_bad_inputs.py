"""Every user mistake, across the five CLIs, in one table: one line naming what is wrong, exit status 2, no
traceback, and nothing written (the working folder is byte-for-byte what it was before the command).

T = python -m gan_core.train, E = python -m gan_core.evaluate, A = python -m ablations.run,
R = python -m reports.build, X = python -m gan_core.train_extractor. Placeholders in the arguments name things each
row sets up in its working folder: {FILE} a plain file, {DIR} an empty folder, {RUN} a trained run folder, {TRUNC}
one whose checkpoint is cut short, {BADCFG} one whose config.json is not JSON, {BADIMG} an image folder holding a
text file named .png, {BENCH} a benchmark file that is not JSON, {BADSCORES} a results folder whose metrics.json
is not JSON, {PAGE} an existing report page, {STUDIES} a SQLite storage of studies that are not the depth study's
at the smoke budget (see make_studies); the names in SAMPLE_FILES are samples a user brings to --samples, each
wrong in its own way, and those in DAMAGED are run folders, data and files made by damaging something.
Damaged inputs (issue 22): {FLIPPED} a run folder whose checkpoint has 64 bytes of tensor data flipped, {EDITED}
one whose config.json's head was edited after training, {FLOATIMG} an image folder holding a float image in 0..200.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ablations import run as ablations_run
from gan_core import evaluate, files, train_extractor
from gan_core import train as train_cli
from gan_core.training import loop
from gan_core.training.config import HEADS
from gan_core.training.run_folder import CHECKPOINT, CHECKSUM, CONFIG, EVALS, STATS, RunFolder
from reports import build
from tests.conftest import flip_tensor_bytes, tiny_config
from tests.metric_helpers import embedded_split

ROOT = Path(__file__).resolve().parents[1]
GEN = "tests.plugins.generators"  # the callables of --generator rows
MLP = "tests.plugins.mlp_gan"  # the builders of --arch rows
T_BASE = ["--preset", "dcgan", "--device", "cpu", "--steps", "2"]
E_BASE = ["--device", "cpu", "--no-floor"]
A_BASE = ["--budget", "smoke", "--device", "cpu"]
X_BASE = ["--epochs", "1", "--train-limit", "50", "--quiet"]
TINY = ["--width", "0.0625", "--optim-args", "{}", "--batch-size", "8", "--steps", "3"]  # T_BASE + TINY = {RUN}'s
CLIS = {  # main, program name, arguments every row of that CLI starts with
    "X": (train_extractor.main, train_extractor.PROG, X_BASE),
    "T": (train_cli.main, train_cli.PROG, T_BASE),
    "E": (evaluate.main, evaluate.PROG, E_BASE),
    "A": (ablations_run.main, ablations_run.PROG, A_BASE),
    "R": (build.main, build.PROG, []),
}

ROWS = [
    # ---- train
    ("T", ["--arch", "resnet"], "arch 'resnet' is not valid; choose one of: blog, dcgan, or module:function"),
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
    ("T", ["--preset", "nope"], "unknown preset 'nope'; choose one of: default, blog, dcgan, dcgan-cpu"),
    ("T", ["--preset", "seed"], "preset 'seed' is now 'blog': use --preset blog (or --base blog)"),
    ("T", ["--arch", "seed"], "arch 'seed' is now 'blog'"),
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
    ("A", ["--study", "nope"], "unknown study 'nope'; choose one of: step_ratio, optimizer, depth, width, blog_quirks"),
    ("A", ["--study", "seed_quirks"], "study 'seed_quirks' is now 'blog_quirks': run --study blog_quirks"),
    ("A", ["--study", "blog_quirks", "--base", "dcgan"], "blog_quirks restores the blog's own choices into its "
                                                         "preset 'blog'; another base ('dcgan') would restore"),
    ("A", ["--study", "blog_quirks", "--arch", f"{MLP}:build"], "the blog_quirks study's arms change the network "
                                                                "itself (model.arch), so --arch cannot replace it"),
    ("A", ["--study", "depth", "--base", "nope"], "unknown preset 'nope'; choose one of: default, blog, dcgan"),
    ("A", ["--study", "depth", "--base", "seed"], "preset 'seed' is now 'blog': use --preset blog (or --base blog)"),
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
    *[("A", ["--study", "depth", "--storage", "sqlite:///{STUDIES}", "--study-name", name], message)
      for name, message in [
        ("kind", "holds another experiment: its study is 'width', this run's 'depth'; give this run another "
                 "--study-name (or run the one it holds)"),
        ("base", "its base is 'seed', this run's 'dcgan-cpu'; give this run another --study-name"),
        ("budget", "its budget is 'quick', this run's 'smoke'; give this run another --study-name"),
        ("redefined", "its budget 'smoke' differs in g_steps (8 there, 4 here); give this run another --study-name"),
        ("objective", "its objective is 'fid1k', this run's 'fid100'; give this run another --study-name"),
        ("judge2", "its second_judge is 'mnist-lenet-v1-00000000', this run's 'mnist-lenet-v1-"),
        ("multi", "is a study to minimize, minimize (2 objective(s)); python -m ablations.run minimises one, fid100: "
                  "give this run another --study-name"),
        ("max", "is a study to maximize (1 objective(s))"),
        ("plain", "was not created by python -m ablations.run (it has no 'study' user attr: another program made it, "
                  "or the command that made it stopped before marking it); give this run another --study-name"),
        ("empty", "was not created by python -m ablations.run"),
        ("attr", "study 'attr': user attr 'seeds' is a string, not an integer; the study was not written by python "
                 "-m ablations.run (edited by hand, or another program's); give this run another --study-name"),
        ("trial", "study 'trial' trial #0: user attr 'metrics' is a string, not an object"),
    ]],
    # a study trained in fp32, recorded as such or from before the record said: not one to add bf16 trials to
    *[("A", ["--study", "depth", "--amp", "--storage", "sqlite:///{STUDIES}", "--study-name", name],
       "holds another experiment: its precision is 'fp32', this run's 'bf16 autocast'; give this run another "
       "--study-name (or run the one it holds: --no-amp trains in fp32, --amp in bf16 autocast)")
      for name in ("fp32", "unrecorded")],
    ("T", ["--out", "/proc/none/run"], "/proc/none: No such file or directory; the folder vanished while the "
                                        "command ran, or cannot be made there: check the path"),
    ("T", ["--out", "{DIR}/" + "a" * 300], "is 300 bytes long, more than the 255 its file system allows; choose a "
                                          "shorter one for the run (--out DIR)"),
    ("T", ["--latent-dim", "100000000000"], "model parameters 307,200,000,743,137 needs about 4,915.2 TB of cpu "
                                            "memory"),
    ("T", ["--optim-args", '{"capturable": true}'], "the generator's optimizer Adam with {'capturable': True} cannot "
                                                    "step on cpu: If capturable=True"),
    ("T", [*TINY, "--resume", "--out", "{BINSTATS}"], "stats.jsonl line 2 is not JSON (UnicodeDecodeError"),
    ("T", [*TINY, "--resume", "--out", "{NULLSTATS}"], "stats.jsonl line 1: 'g_step' is null, not an integer >= 0; "
                                                      "the file is damaged: remove that line, or the run folder"),
    ("T", [*TINY, "--resume", "--out", "{TYPEEVALS}"], "evals.jsonl line 1: 'fid100' is \"x\", not a number or null"),
    ("T", [*TINY, "--resume", "--out", "{OTHERARCH}"], "does not hold the model its config describes (g.net.0.weight:"),
    ("T", ["--data", "mnist", "--data-root", "{IDXCOUNT}"], "train-images-idx3-ubyte holds 3 images but "
                                                            "train-labels-idx1-ubyte 2 labels"),
    ("T", ["--data", "mnist", "--data-root", "{IDX1D}"], "train-images-idx3-ubyte has shape [3] and"),
    ("T", ["--data", "folder", "--data-root", "{BOMB}"], "huge.png is too large to read safely (Image size"),
    ("E", ["{OTHERKEYS}"], "checkpoint.pt is not a checkpoint of this project"),
    ("E", ["{OTHERARCH}"], "does not hold the model its config describes (g.net.0.weight: [3, 3] where dcgan depth 4"),
    ("E", ["{RUN}", "--cache-dir", "{FILE}"], "is a file, not a folder; choose a folder for the cache (--cache-dir)"),
    ("X", ["--out", "{DIR}"], "is a folder; give a file name for the extractor's weights (--out)"),
    ("X", ["--out", "{FILE}/w.pt"], "is a file, not a folder; choose a folder for the extractor's weights (--out)"),
    ("X", ["--out", "{DIR}/" + "b" * 260 + ".pt"], "is 263 bytes long, more than the 255 its file system allows"),
    ("X", ["--judge", "inception"], "unknown judge 'inception'; choose one of: cnn, lenet"),
    ("X", ["--judge", "LeNet"], "unknown judge 'LeNet'; choose one of: cnn, lenet"),
    ("A", ["--study", "depth", "--seeds", "1000000000"], "--seeds 1,000,000,000 makes 6,000,000,000 trials (6 arms "
                                                         "x 1,000,000,000 seeds), more than the 10,000 a study may "
                                                         "queue"),
    ("A", ["--study", "depth", "--workers", "1000"], "--workers 1,000 needs about 500.0 GB of cpu memory"),
    ("A", ["--study", "depth", "--storage", "sqlite:///:memory:", "--workers", "2"], "lives in this process's memory, "
                                                                                   "which worker processes cannot"),
    ("A", ["--study", "depth", "--storage", "journal:{GARBAGE}"], "garbage (Expecting value: line 1 column 1 (char "
                                                                  "0)): not an Optuna journal file"),
    ("A", ["--study", "depth", "--storage", "journal:{NOOP}"], "noop (line 1 has no op code): not an Optuna journal "
                                                               "file"),
    ("R", ["--storage", "journal:{NOOP}"], "noop (line 1 has no op code): not an Optuna journal file"),
    ("R", ["--storage", "sqlite:///{DIR}/x.db", "--benchmarks", "{BENCHTYPES}"], "the value at ['machine_info'] is a "
                                                                                 "string, not an object; write it"),
    ("R", ["--storage", "sqlite:///{STUDIES}"], "study 'attr': user attr 'seeds' is a string, not an integer"),
    ("R", ["--storage", "sqlite:///{CURVES}"], "evals.jsonl line 1: 'fid100' is \"x\", not a number or null"),
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
def shared_cache(tmp_path_factory):
    """One digit and feature cache for the table's rows: it is not a command's output, and filling it afresh for
    every row would cost a second of features each."""
    return tmp_path_factory.mktemp("cache")


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
    elif name == "STUDIES":
        path = work / "studies.db"
        shutil.copy(studies_template(), path)
    elif name == "BENCH":
        path = work / "bench.json"
        path.write_text("{broken")
    elif name in DAMAGED:
        DAMAGED[name](path, trained)
    return path


def damaged_run(damage):
    """A maker of a copy of the trained run, then damaged."""
    def make_it(path: Path, trained: Path) -> None:
        shutil.copytree(trained, path, ignore=shutil.ignore_patterns(".lock"))
        damage(path)
    return make_it


def edited_checkpoint(edit):
    """A run whose checkpoint was edited and saved again whole, its checksum made anew (by another program, or
    another version of this one): what it holds is wrong, not its bytes."""
    def damage(path: Path) -> None:
        import torch

        ckpt = torch.load(path / CHECKPOINT, weights_only=False)
        ckpt.pop(CHECKSUM, None)
        edit(ckpt)
        RunFolder(path).save_checkpoint(ckpt)
    return damaged_run(damage)


def idx_files(images_dims: tuple, labels: int):
    """MNIST raw files whose train images have ``images_dims`` and train labels ``labels`` entries."""
    def make_it(path: Path, _trained) -> None:
        raw = path / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name, dims in [("train-images-idx3-ubyte", images_dims), ("train-labels-idx1-ubyte", (labels,)),
                           ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))]:
            header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
            (raw / name).write_bytes(header + bytes(int(np.prod(dims))))
    return make_it


def bomb(path: Path, _trained) -> None:
    """An image folder with a PNG whose header claims 20,000 x 20,000 pixels: over PIL's decompression-bomb limit
    (2 x 89,478,485 pixels), refused by PIL when it opens the file, before any pixel is decoded."""
    for cls in ("0", "1"):
        (path / cls).mkdir(parents=True)
        Image.new("L", (28, 28)).save(path / cls / "ok.png")
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0))  # 8-bit grey
    (path / "0" / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b""))
                                           + chunk(b"IEND", b""))


def text_file(text: str):
    return lambda path, _trained: path.write_text(text)


def other_architecture(ckpt: dict) -> None:
    import torch

    ckpt["g"]["net.0.weight"] = torch.zeros(3, 3)


def study_with_bad_curves(path: Path, trained: Path) -> None:
    """A storage of one finished width trial whose run folder's evals.jsonl holds text where a metric goes."""
    import optuna

    runs = path.with_name("curves-runs")
    run = runs / "width-dcgan-cpu-smoke" / "1" / "seed0"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".lock"))
    (run / EVALS).write_text('{"g_step": 0, "fid100": "x"}\n')
    study = optuna.create_study(study_name="width-dcgan-cpu-smoke", storage=f"sqlite:///{path}")
    study.set_user_attr("study", "width")
    study.set_user_attr("objective", "fid100")
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"arm": "1", "seed": 0, "run_dir": str(run),
                                                                     "metrics": {"fid100": 1.0}}))


DAMAGED = {  # placeholder -> maker(path, trained run)
    "OTHERKEYS": edited_checkpoint(lambda c: (c.clear(), c.update(a=1))),  # a torch file, but not a checkpoint
    "OTHERARCH": edited_checkpoint(other_architecture),
    "BINSTATS": damaged_run(lambda p: (p / STATS).write_bytes(b'{"g_step": 1}\n\x9b\xff\x00binary\n')),
    "NULLSTATS": damaged_run(lambda p: (p / STATS).write_text('{"g_step": null, "loss_d": 1.0}\n')),
    "TYPEEVALS": damaged_run(lambda p: (p / EVALS).write_text('{"g_step": 0, "fid100": "x"}\n')),
    "IDXCOUNT": idx_files((3, 28, 28), 2),
    "IDX1D": idx_files((3,), 3),
    "BOMB": bomb,
    "GARBAGE": text_file("garbage\n"),
    "NOOP": text_file('{"hello": 1}\n'),  # JSON, without Optuna's op code
    "BENCHTYPES": text_file('{"benchmarks": [], "machine_info": "a string"}'),
    "CURVES": study_with_bad_curves,
}


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
        ("judge2", {**ours, "budget": smoke, "objective": "fid100", "second_judge": "mnist-lenet-v1-00000000"},
         ["minimize"]),
        ("fp32", {**ours, "budget": smoke, "objective": "fid100", "precision": "fp32"}, ["minimize"]),
        ("unrecorded", {**ours, "budget": smoke, "objective": "fid100"}, ["minimize"]),
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
        for name in ("FILE", "DIR", "RUN", "TRUNC", "BADCFG", "BADIMG", "FLOATIMG", "BENCH", "FLIPPED", "EDITED",
                     "BADSCORES", "STUDIES", *SAMPLE_FILES, *DAMAGED):
            if "{" + name + "}" in a:
                if name not in made:
                    made[name] = make(name, work, trained)
                a = a.replace("{" + name + "}", str(made[name]))
        out.append(a)
    return out


@pytest.mark.parametrize("cli, args, message", [pytest.param(*r, id=f"{r[0]} {' '.join(r[1])}") for r in ROWS])
def test_a_bad_input_is_one_line_exit_2_and_writes_nothing(cli, args, message, tmp_path, monkeypatch, capsys,
                                                          trained_run, shared_cache):
    check_one_line(cli, args, message, tmp_path, monkeypatch, capsys, trained_run, shared_cache)


@pytest.mark.parametrize("cli, args, message", [pytest.param(*r, id=f"{r[0]} {' '.join(r[1])}")
                                                for r in TWO_GPU_ROWS])
def test_a_bad_device_list_on_a_two_gpu_host_is_one_line(cli, args, message, tmp_path, monkeypatch, capsys,
                                                         trained_run, shared_cache):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_one_line(cli, args, message, tmp_path, monkeypatch, capsys, trained_run, shared_cache)


def check_one_line(cli, args, message, tmp_path, monkeypatch, capsys, trained_run, shared_cache):
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


# ---- faults of the machine: one line naming the path and what to do, exit 2, no file left half-written ----------

FAULT_ROWS = {  # cli -> arguments; {OUT} is a folder on the faulty file system, {TMP} one beside it
    "T": [*T_BASE, *TINY, "--steps", "1", "--out", "{OUT}/run"],
    "E": [*E_BASE, "--n", "50", "{OUT}/run"],  # the trained run, copied there before the fault
    "X": [*X_BASE, "--out", "{OUT}/w.pt"],
    "R": ["--storage", "sqlite:///{TMP}/x.db", "--out", "{OUT}/summary.html"],
}


def run_fault(cli: str, out: Path, tmp: Path, capsys) -> str:
    """The row's command in this process; its one line of error (asserted: exit 2, no traceback)."""
    main, prog, _ = CLIS[cli]
    code = main([a.replace("{OUT}", str(out)).replace("{TMP}", str(tmp)) for a in FAULT_ROWS[cli]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return err


def no_temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".*.tmp")]


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    """A small tmpfs mounted at ``where`` (root only: the test is skipped where mount is refused)."""
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        yield disk


@pytest.mark.parametrize("cli", ["T", "X", "R"])
def test_a_read_only_file_system_is_refused_before_any_work(cli, tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        err = run_fault(cli, ro, tmp_path, capsys)
    assert f"{ro} is on a read-only file system; choose a folder on a writable one for the" in err


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the disk, then free ``leave`` bytes."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError:
            pass
    os.truncate(disk / "filler", max(0, (disk / "filler").stat().st_size - leave))


@pytest.mark.parametrize("cli", FAULT_ROWS)
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(cli, full_disk, tmp_path, capsys,
                                                                                 trained_run, shared_cache,
                                                                                 monkeypatch):
    """Seen before: OSError tracebacks, and torch's "unexpected pos 9728 vs 9622" from a checkpoint cut short."""
    monkeypatch.setenv(files.CACHE_ENV, str(shared_cache))
    if cli == "E":
        shutil.copytree(trained_run, full_disk / "run", ignore=shutil.ignore_patterns(".lock"))
    fill(full_disk, leave=400_000 if cli == "T" else 0)  # T: room for config.json and samples.png, not the checkpoint
    before = snapshot(full_disk)
    err = run_fault(cli, full_disk, tmp_path, capsys)
    written = {"T": "run/checkpoint.pt", "E": "run/metrics.json", "X": "w.pt", "R": "summary.html"}[cli]
    assert f"{full_disk}/{written}: No space left on device; free space on that disk, or write elsewhere" in err
    assert no_temporaries(full_disk) == []
    if cli == "E":  # the run folder is as it was: no metrics.json, torn or whole
        assert snapshot(full_disk / "run") == {k.removeprefix("run/"): v for k, v in before.items()
                                               if k.startswith("run/")}


def test_a_folder_that_turns_read_only_or_vanishes_mid_run_is_one_line_naming_the_file(tmp_path, capsys,
                                                                                       shared_cache, monkeypatch):
    import errno

    from gan_core.training.run_folder import RunFolder

    monkeypatch.setenv(files.CACHE_ENV, str(shared_cache))
    from gan_core.training import data
    from gan_core.training.config import DataConfig

    data.load(DataConfig())  # the shared digit cache filled first: the fault is the run folder's (whatever ran before)

    def read_only(_fd):  # the moment an atomic write commits: what a file system remounted read-only refuses
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(files.os, "fsync", read_only)
        err = run_fault("T", tmp_path / "ro", tmp_path, capsys)
    assert f"{tmp_path}/ro/run/config.json: Read-only file system; that file system is read-only" in err
    assert no_temporaries(tmp_path) == []

    append = RunFolder.append

    def vanish(self, name, row):  # the run folder deleted under a training run
        shutil.rmtree(self.path)
        append(self, name, row)

    monkeypatch.setattr(RunFolder, "append", vanish)
    err = run_fault("T", tmp_path / "gone", tmp_path, capsys)
    assert f"{tmp_path}/gone/run/stats.jsonl: No such file or directory; the folder vanished" in err


def test_a_fault_in_a_study_is_the_trials_failure_reason():
    import errno

    import optuna

    from ablations import trial as ablations_trial

    trial = optuna.create_study().ask()
    ablations_trial._record(trial, OSError(errno.ENOSPC, "No space left on device", "runs/x/seed0/checkpoint.pt"))
    assert trial.user_attrs["fail_kind"] == "error"  # not final: a rerun, with space freed, trains it again
    assert trial.user_attrs["fail_reason"] == ("runs/x/seed0/checkpoint.pt: No space left on device; free space on "
                                               "that disk, or write elsewhere, and run the command again")
