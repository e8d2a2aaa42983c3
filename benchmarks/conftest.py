"""Fixtures shared by the benchmark suites (``pytest benchmarks/ --benchmark-only``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.harness import Comparisons, MatmulPeak
from gan_core import devices
from gan_core.training import data
from gan_core.training.config import DataConfig, RunConfig

THREADS_ENV = "MNIST_GAN_BENCH_THREADS"


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    """``MNIST_GAN_BENCH_THREADS=1``: pin torch's CPU threads (and numpy's BLAS, which KID uses). On a CPU
    shared with other work, a thread per core waits for descheduled peers at every parallel op; one
    thread gives steadier figures there. Unset: the libraries' defaults, what a user gets."""
    threads = os.environ.get(THREADS_ENV)
    if not threads:
        yield torch.get_num_threads()
        return
    if not threads.isdigit() or int(threads) < 1:
        raise pytest.UsageError(f"{THREADS_ENV} must be a whole number of threads >= 1, got {threads!r}")
    with devices.threads(int(threads)):
        yield torch.get_num_threads()


@pytest.fixture(scope="session")
def split() -> data.Split:
    return data.load(DataConfig())


@pytest.fixture(scope="session")
def comparisons() -> Comparisons:
    return Comparisons()


@pytest.fixture(scope="session")
def matmul_peak() -> MatmulPeak:
    return MatmulPeak()


@pytest.fixture(scope="session")
def image_folder(split, tmp_path_factory):
    """``image_folder(cfg)``: the PNG tree of cfg's training images, written once per session (setup, not timed)."""
    from benchmarks.reference_loops import write_image_folder

    folders: dict[tuple, Path] = {}

    def get(cfg: RunConfig) -> Path:
        key = (cfg.data.source, cfg.data.train_limit)
        if key not in folders:
            images = data.training_images(split, cfg.data)
            labels = split.train_labels[: len(images)]
            folders[key] = write_image_folder(images, labels, tmp_path_factory.mktemp("train_net_pic"))
        return folders[key]

    return get
