"""Which device a run uses, and its name for the record."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from gan_core.errors import UserError


def resolve(device: torch.device | str | None) -> torch.device:
    """'auto' (or None) = CUDA when available, else the CPU; asking for CUDA without it is a UserError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} was asked for but CUDA is not available here; "
                        "use --device cpu or auto")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise UserError(f"device {str(device)!r} is not valid; choose one of: auto, cpu, cuda, cuda:N") from None
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise UserError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return d


def worker_devices(spec: str) -> list[torch.device]:
    """The devices a study's workers are spread over, from ``--device``: 'auto' or 'cuda' is every visible GPU
    (torch.cuda.device_count honours CUDA_VISIBLE_DEVICES), else the CPU; 'cuda:N' that one GPU; a list
    'cuda:0,cuda:2' those GPUs. Each name is checked as ``resolve`` checks one; a list of anything else, or with a
    GPU twice, is a UserError."""
    names = [n.strip() for n in str(spec).split(",")]
    if len(names) == 1:
        d = resolve(names[0])
        if d.type == "cuda" and d.index is None:
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [d]
    if not all(n.startswith("cuda:") for n in names):
        raise UserError(f"--device {spec!r}: a list names GPUs only, each once, e.g. cuda:0,cuda:2 "
                        "(or one of: auto, cpu, cuda, cuda:N)")
    found = [resolve(n) for n in names]
    if len(set(found)) < len(found):
        raise UserError(f"--device {spec!r} names a GPU twice; name each once, e.g. cuda:0,cuda:2")
    return found


def set_threads(n: int) -> None:
    """n threads for every thread pool this process computes with: torch's, and the OpenBLAS that numpy and scipy
    each bring (the metrics' FID and KID run on them). A worker that shares the cores with others must not start
    more threads than its share: on the 2-core AMD EPYC, with a second worker busy, torch-fidelity's KID of 200
    against 1,000 digits took 1.18 s on OpenBLAS's default 2 threads and 0.23 s on 1; FID 0.058 s and 0.010 s."""
    import scipy.linalg  # noqa: F401 - scipy's own OpenBLAS: threadpoolctl limits only the libraries loaded
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def threads(n: int):
    """set_threads(n) for a block (tests, benchmarks); torch's and the BLAS libraries' counts come back after it."""
    import scipy.linalg  # noqa: F401 - loaded before the counts are noted, so that its own come back too
    from threadpoolctl import threadpool_limits

    was = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None, user_api="blas"):  # the limits as they are now, restored on leaving
            set_threads(n)
            yield
    finally:  # with torch's MKL (this machine's build) threadpoolctl's restore gives torch its count back too;
        torch.set_num_threads(was)  # a torch on another BLAS relies on this line


def pin(name: str) -> torch.device:
    """Make ``name``'s GPU this process's current CUDA device (what a bare 'cuda' and libraries that take no device
    then use); the CPU needs nothing. Returns the device."""
    device = resolve(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether a study trains under bf16 autocast by default here: on a CPU that computes bf16 in hardware
    (avx512_bf16 or AMX), where it is faster and learns as well (README: the main job took 1.22x less time on
    the AMD EPYC, 1.47x less on the Intel Xeon with AMX, with the same answer). Not on a CPU without them,
    which would emulate bf16, nor on CUDA, where no study has been measured under it: fp32 there."""
    # torch.cpu's checks are private but the only ones torch has; a torch without them counts as without bf16
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return device.type == "cpu" and any(check() for check in checks if check is not None)


def memory_bytes(device: torch.device) -> int:
    """All the memory a device has: the GPU's, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def size_text(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1000
    raise AssertionError  # unreachable: the loop returns at TB


def check_fits(what: str, count: int, bytes_each: float, device: torch.device, flag: str,
               advice: str | None = None) -> None:
    """Refuse, before any allocation, a size that cannot fit the device even alone: ``count`` things (a batch,
    samples) of about ``bytes_each`` bytes, asked for with ``flag`` (or, where no one flag sets the count, what
    ``advice`` says). An estimate, so it only catches sizes that are off by a lot (a mistyped batch of 10^9); a size
    near the limit still fails at its first allocation."""
    total = memory_bytes(device)
    if count * bytes_each > total:
        raise UserError(f"{what} {count:,} needs about {size_text(count * bytes_each)} of {device.type} memory, more "
                        f"than the {size_text(total)} here; "
                        + (advice or f"use {flag} {max(1, int(total // bytes_each)):,} or less"))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'AMD EPYC (2 cores, 2 torch threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
