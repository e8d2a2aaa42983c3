"""What the benchmark suites share: device names, the measured matmul peak, peak memory, round plans,
and the bookkeeping that turns pytest-benchmark's timings into images/s, utilisation and speed-ups.

pytest-benchmark times calls (``ops`` is calls/s) on the host clock; everything per image or per
FLOP is computed here from the best call time (see ``best_s``) and written into
``benchmark.extra_info``, which ``--benchmark-json`` saves next to the timings.

``python -m benchmarks.harness slug cpu|cuda`` prints the results file name for this machine.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gan_core import devices
from gan_core.devices import name as device_name

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here; run benchmarks/gpu_run.sh on a GPU")

# Round plans. The CPU is slow and shared (2 cores here): a case gets about CPU_CASE_BUDGET_S of timed
# rounds, predicted from its FLOPs at a fixed CPU_ASSUMED_FLOPS (not a measured rate, so that every
# loop of one model gets the same number of rounds on every run), and at least one.
# A GPU iteration takes milliseconds: many rounds cost little.
CPU_CASE_BUDGET_S = 3.0
CPU_COMPARISON_BUDGET_S = 8.0  # a model with baseline loops: a ratio of a few percent needs more rounds
CPU_ASSUMED_FLOPS = 40e9  # about what the 2 shared cores sustain on these models under load
CPU_MAX_ROUNDS = 20
CUDA_ROUNDS = 50
CUDA_WARMUP_ROUNDS = 3
CUDA_COMPILE_WARMUP_ROUNDS = 6  # torch.compile compiles on the first calls; CUDA graphs record after warm-up


def slug(device_type: str) -> str:
    """Results file stem: ``cpu-amd-epyc-2c``, ``cuda-nvidia-h100-80gb-hbm3``."""
    if device_type == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{devices.cpu_model()} {os.cpu_count()}c"
    return f"{device_type}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """The timer is host-side: on CUDA the timed call must wait for the queued kernels."""
    if device.type != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


def peak_dtype(device: torch.device, amp: bool) -> str:
    """The precision the model's convolutions really run in, which the peak must be measured in too."""
    if amp:
        return "bfloat16"
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"  # cuDNN convolutions use TF32 for fp32 by default; a plain fp32 matmul would not
    return "float32"


class MatmulPeak:
    """The best FLOP/s a large square matmul reaches on a device in a precision, over the whole session.

    Measured briefly at the start of every case and kept as the session's best: on a shared machine a
    single measurement can land in a busy moment and make utilisation look better than 100%.
    ``track`` registers a case's extra_info; its ``utilisation`` and ``peak_flops`` are rewritten
    whenever a later measurement raises the best (pytest-benchmark saves extra_info at session end).
    """

    def __init__(self):
        self.best: dict[tuple[str, str], float] = {}
        self.tracked: dict[tuple[str, str], list[tuple[dict, float]]] = {}

    @staticmethod
    def size(device: torch.device) -> int:
        return 8192 if device.type == "cuda" else 2048

    def measure(self, device: torch.device, precision: str) -> dict:
        key = (str(device), precision)
        n = self.size(device)
        reps = 10 if key not in self.best else 4  # the first measurement of a session is longer
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        old_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        try:
            fastest = float("inf")
            for i in range(reps + 1):  # the first call is a warm-up
                t0 = time.perf_counter()
                torch.mm(a, b)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    fastest = min(fastest, time.perf_counter() - t0)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
        if 2 * n**3 / fastest > self.best.get(key, 0.0):
            self.best[key] = 2 * n**3 / fastest
            for info, achieved in self.tracked.get(key, []):
                self._fill(info, key, achieved)
        return {"peak_flops": self.best[key], "peak_dtype": precision, "peak_matmul_n": n}

    def _fill(self, info: dict, key: tuple[str, str], achieved: float) -> None:
        info["peak_flops"] = self.best[key]
        info["utilisation"] = achieved / self.best[key]

    def track(self, info: dict, device: torch.device, precision: str, achieved_flops: float) -> None:
        key = (str(device), precision)
        self.tracked.setdefault(key, []).append((info, achieved_flops))
        self._fill(info, key, achieved_flops)


class PeakMemory:
    """Peak memory of the code inside the ``with`` block.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the process's peak RSS
    (``resource.getrusage``), reset first through ``/proc/self/clear_refs`` where Linux allows it
    (then it is this block's peak, else the process's peak so far); RSS includes the libraries.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.info: dict = {}

    @staticmethod
    def _rss_mb() -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.rss_before = self._rss_mb()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS to the current RSS
            self.scope = "case"
        except OSError:
            self.scope = "process"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.info = {"peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
                         "peak_memory_kind": "cuda max_memory_allocated"}
            return
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        self.info = {"peak_memory_mb": peak, "peak_memory_kind": f"cpu peak RSS ({self.scope})",
                     "rss_before_mb": self.rss_before}


def plan_rounds(device: torch.device, flops_per_call: float, compiled: bool = False, compared: bool = False
                ) -> tuple[int, int]:
    """(rounds, warmup_rounds) for one case, a function of its FLOPs only (and of whether loops are compared)."""
    if device.type == "cuda":
        return CUDA_ROUNDS, CUDA_COMPILE_WARMUP_ROUNDS if compiled else CUDA_WARMUP_ROUNDS
    predicted_s = flops_per_call / CPU_ASSUMED_FLOPS
    budget_s = CPU_COMPARISON_BUDGET_S if compared else CPU_CASE_BUDGET_S
    rounds = max(1, min(CPU_MAX_ROUNDS, int(budget_s / predicted_s)))
    return rounds, 1 if predicted_s < 1.0 else 0  # a costly case is warmed up by its loop's warm_up() only


def best_s(benchmark) -> float | None:
    """Fastest timed call in seconds, or None under --benchmark-disable (which leaves stats unset).

    The minimum, not the median: on a shared machine other work only ever adds time, so the best
    round is the least disturbed estimate (pytest-benchmark sorts and compares by it too).
    """
    if benchmark.stats is None:
        return None
    return float(benchmark.stats.stats.min)


def median_s(benchmark) -> float | None:
    return None if benchmark.stats is None else float(benchmark.stats.stats.median)


def environment(device: torch.device) -> dict:
    info = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "python": platform.python_version()}
    if device.type == "cpu":
        info["torch_threads"] = torch.get_num_threads()
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = os.getloadavg()[0]  # a shared machine's other work slows every number here
    return info


class Comparisons:
    """The project loop's speed-ups over the baseline loops, filled into the project cases' extra_info.

    ``speedup_vs_<loop>`` = the baseline's best iteration / this project case's best, both measured in
    this session. On a shared machine the load changes between cases, so a baseline's case also times
    the plain (fp32) project loop, one iteration before each of its own: ``speedup_vs_<loop>_paired`` =
    best baseline iteration / best paired project iteration, on the fp32 project case. The ratios land
    whichever case runs first (pytest-benchmark keeps extra_info dicts and saves them at session end).
    """

    PAIRED_VARIANT = "fp32"

    def __init__(self):
        self.baselines: dict[str, dict[str, tuple[float, float | None]]] = {}  # group -> loop -> (s, paired)
        self.projects: dict[str, list[tuple[dict, float, str]]] = {}  # group -> (extra_info, s, variant)

    def add_baseline(self, group: str, loop: str, baseline_s: float, paired_project_s: float | None = None
                     ) -> float | None:
        paired = baseline_s / paired_project_s if paired_project_s else None
        self.baselines.setdefault(group, {})[loop] = (baseline_s, paired)
        self._fill(group)
        return paired

    def add_project(self, group: str, info: dict, seconds: float, variant: str) -> None:
        self.projects.setdefault(group, []).append((info, seconds, variant))
        self._fill(group)

    def _fill(self, group: str) -> None:
        for info, seconds, variant in self.projects.get(group, []):
            for loop, (baseline_s, paired) in self.baselines.get(group, {}).items():
                info[f"{loop}_s_per_iteration"] = baseline_s
                info[f"speedup_vs_{loop}"] = baseline_s / seconds
                if variant == self.PAIRED_VARIANT and paired is not None:
                    info[f"speedup_vs_{loop}_paired"] = paired


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "slug" and sys.argv[2] in ("cpu", "cuda"):
        print(slug(sys.argv[2]))
    else:
        sys.exit("usage: python -m benchmarks.harness slug cpu|cuda")
