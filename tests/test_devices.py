"""gan_core.devices: a process's share of the cores."""

import json
import os
import subprocess
import sys

import pytest

SEVERAL_CORES = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every pool has one thread already")

POOLS = """
import json, scipy.linalg
from threadpoolctl import threadpool_info
from gan_core import devices
before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
devices.set_threads(1)
import torch
print(json.dumps({"before": before, "after": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"],
                  "torch": torch.get_num_threads()}))
"""

SCOPED = """
import json, scipy.linalg, torch
from threadpoolctl import threadpool_info
from gan_core import devices
blas = lambda: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
before = {"blas": blas(), "torch": torch.get_num_threads()}
with devices.threads(1):
    inside = {"blas": blas(), "torch": torch.get_num_threads()}
print(json.dumps({"before": before, "inside": inside, "after": {"blas": blas(), "torch": torch.get_num_threads()}}))
"""


def in_a_fresh_process(code: str) -> dict:
    """What ``code`` prints as JSON, run where the pools start at their defaults: the suite's own process is held to
    one thread by conftest's environment; a worker's is not."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@SEVERAL_CORES
def test_set_threads_holds_numpy_and_scipy_openblas_to_the_share_too():
    pools = in_a_fresh_process(POOLS)
    assert len(pools["before"]) >= 2 and max(pools["before"]) > 1  # numpy's and scipy's, on every core by default
    assert pools["after"] == [1] * len(pools["before"]) and pools["torch"] == 1


@SEVERAL_CORES
def test_threads_holds_every_pool_for_a_block_and_gives_the_counts_back_after_it():
    out = in_a_fresh_process(SCOPED)
    assert max(out["before"]["blas"]) > 1 and out["before"]["torch"] > 1
    assert out["inside"] == {"blas": [1] * len(out["before"]["blas"]), "torch": 1}
    assert out["after"] == out["before"]


@pytest.mark.parametrize("avx512_bf16, amx, expected",
                         [(True, False, True), (False, True, True), (False, False, False)])
def test_a_cpu_defaults_to_bf16_when_it_has_bf16_instructions_and_only_then(monkeypatch, avx512_bf16, amx, expected):
    import torch

    from gan_core import devices

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert devices.native_bf16(torch.device("cpu")) is expected
    assert devices.native_bf16(torch.device("cuda", 0)) is False  # no study measured under bf16 on a GPU: fp32


def test_a_torch_without_the_cpu_checks_counts_as_a_cpu_without_bf16(monkeypatch):
    import torch

    from gan_core import devices

    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert devices.native_bf16(torch.device("cpu")) is False
