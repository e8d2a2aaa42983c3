import os

import pytest
import torch

from gan_core.training import data
from gan_core.training.config import DataConfig, RunConfig, override

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` gives each worker one of the two cores: a second torch or BLAS thread per worker only
    # oversubscribes them (tests.metric_helpers.one_thread measured 9-25x slower when two busy processes each
    # ran two threads). The environment reaches the CLIs the tests start as subprocesses too.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def split():
    return data.load(DataConfig())


@pytest.fixture(scope="module")
def single_thread():
    """One torch/BLAS thread for a module's tests (see tests.metric_helpers.one_thread for why)."""
    from tests.metric_helpers import one_thread

    with one_thread():
        yield


def tiny_config(**changes) -> RunConfig:
    """A DCGAN-style family member small enough to train for a few steps in well under a second."""
    base = {
        "model.arch": "dcgan", "model.depth": 4, "model.width": 1 / 16, "model.head": "tanh",
        "schedule.batch_size": 8, "schedule.d_steps": 1, "schedule.g_steps": 1, "schedule.loss": "bce_logits",
        "g_optim.name": "Adam", "g_optim.lr": 2e-4, "d_optim.name": "Adam", "d_optim.lr": 2e-4,
        "device.device": "cpu", "steps": 10, "log_every": 5, "checkpoint_every": 0,
    }
    base.update(changes)
    return override(RunConfig(), base)


@pytest.fixture
def tiny():
    return tiny_config


def trained_steps(monkeypatch, then=lambda steps: None) -> list:
    """The GanSteps objects train() makes, as it makes them (``then`` sees each before it trains)."""
    from gan_core.training import loop

    made = []
    real_init = loop.GanSteps.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)
        then(self)

    monkeypatch.setattr(loop.GanSteps, "__init__", init)
    return made


def timeline(schedule, at_tick, d_vals: torch.Tensor, g_vals: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """(networks, losses) as the loop records a member's steps since ``at_tick`` (its G and D counters): the k-th
    D loss of ``d_vals`` at the k-th D step the schedule's phases place after the tick, the same for G; steps past
    the end of either list get a finite loss."""
    from gan_core.training import order

    g_total = len(g_vals)
    while order.d_steps_in(schedule.phases(at_tick.g_step, g_total)) < len(d_vals):
        g_total += 1
    values = {order.D: iter(d_vals.tolist()), order.G: iter(g_vals.tolist())}
    nets = [phase.net for phase in schedule.phases(at_tick.g_step, g_total) for _ in range(phase.count)]
    return nets, torch.tensor([next(values[net], 0.0) for net in nets])


def flip_tensor_bytes(path, n: int = 64) -> None:
    """Flip ``n`` bytes in the middle of the largest array stored in a zip file (a torch checkpoint or cache entry,
    an .npz): damage that torch.load takes without a word, unlike a cut-short file."""
    import struct
    import zipfile
    from pathlib import Path

    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(Path(path).read_bytes())
    # the record's bytes follow its local header: 30 bytes, then its name and extra field (lengths at 26 and 28)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + (info.file_size - n) // 2
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size >= n
    data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
    Path(path).write_bytes(data)


# --- the judging tests' shared real side (test_metrics.py, test_features.py, test_evaluation.py), per module ---


@pytest.fixture(scope="module")
def embedded(split):
    return split


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def ref(embedded, cache_dir):
    from gan_core.judging import evaluation

    return evaluation.Reference(embedded, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def heldout(ref):
    return ref.heldout()


@pytest.fixture(scope="module")
def floor_draw(embedded):
    from gan_core.judging import evaluation

    return evaluation.balanced_draw(embedded.train, embedded.train_labels, 1000)


@pytest.fixture(scope="module")
def floor_features(ref, floor_draw):
    return ref.extractors[""](floor_draw)


@pytest.fixture(scope="module")
def floor1k(ref):
    return ref.floor(1000)


@pytest.fixture(scope="module")
def mild(embedded):
    """The held-out digits with a little pixel noise: the mildest degradation the metrics must see."""
    from tests.metric_helpers import add_noise

    return add_noise(embedded.heldout, 8)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(name)``: the study's run with its defaults at the smoke budget, one seed, in this process (as
    tests.study_helpers.in_process), made once per test process for the tests that only read it (one costs 8-40 s
    of the suite): (its folder, the tmp_path of in_process, and what the command printed). A test that changes the
    study copies its storage first."""
    import contextlib
    import io

    from ablations import run
    from tests.study_helpers import in_process

    made = {}

    def get(name: str):
        if name not in made:
            folder = tmp_path_factory.mktemp(f"smoke-{name}")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert run.main(["--study", name, *in_process(folder)]) == 0
            made[name] = folder, out.getvalue()
        return made[name]

    return get
