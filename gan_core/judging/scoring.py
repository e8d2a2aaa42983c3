"""Score any MNIST generator under the suite's protocol: the API behind ``python -m gan_core.evaluate --samples``.

>>> from gan_core.judging.scoring import score, compare
>>> mine = score("my_samples.npz")                          # a folder of PNG/JPEG, .npy/.npz, an array or tensor
>>> theirs = score(my_module.sample, latent_dim=64)         # a callable: latent batch [B, 64] -> images [B, ...]
>>> compare(mine, theirs)                                   # metric differences, only under the same protocol

The result is the dict a trial records (``Reference.score``: every metric named with its sample count, under both
judges (the second's with its suffix, ``fid1k_lenet``), the judges' names, the counts, ``protocol``),
plus ``input`` (what was read and how its pixels were converted, see gan_core.judging.samples) and ``floor``:
the same metrics for a class-balanced draw of real train digits, at the same count. Samples beyond ``n`` are not
scored (default n: the held-out size, 1,000 on the embedded set, the count trials use); a callable is called on
``n`` fixed N(0, 1) latent vectors (the trials' evaluation noise, ``EVAL_NOISE_SEED``), batch by batch under
``torch.no_grad()``, in whatever mode the caller left it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from gan_core.errors import UserError
from gan_core.judging import samples as user_samples
from gan_core.judging.evaluation import EVAL_NOISE_SEED, Reference, check_n, default_n
from gan_core.judging.metrics import MIN_SAMPLES
from gan_core.judging.protocol import check_comparable
from gan_core.training import data, sampling
from gan_core.training.config import DataConfig, ModelConfig
from gan_core.training.run_folder import METRICS, RunFolder

DEFAULT_LATENT_DIM = ModelConfig().latent_dim  # the suite's own generators' latent size (100)


def _split(source) -> data.Split:
    if isinstance(source, data.Split):
        return source
    return data.load(source if isinstance(source, DataConfig) else DataConfig(source=source))


def _given(samples) -> tuple[torch.Tensor, dict]:
    """Images (all of them) and the input's description, for anything but a callable."""
    if isinstance(samples, (str, os.PathLike)):
        images, pixels, read = user_samples.read_path(Path(samples))
        kind = "folder" if Path(samples).is_dir() else "array file"
        source = str(samples)
    elif isinstance(samples, (np.ndarray, torch.Tensor)):
        images, pixels = user_samples.from_array(samples, "the samples")
        kind, source, read = "array", type(samples).__name__, f"{samples.dtype} {list(samples.shape)}"
    else:
        raise UserError(f"cannot score a {type(samples).__name__}; give a folder, an .npy/.npz path, an array or a "
                        "callable")
    return images, {"kind": kind, "source": source, "read": read, "pixels": pixels, "n_given": len(images)}


def _generated(fn, n: int, latent_dim: int | None, device: torch.device, seed: int, batch_size: int,
               name: str) -> tuple[torch.Tensor, dict]:
    latent_dim = latent_dim or getattr(fn, "latent_dim", None) or DEFAULT_LATENT_DIM
    z = sampling.noise(n, latent_dim, seed, device)
    images, pixels = user_samples.from_callable(fn, z, name, batch_size)
    return images, {"kind": "generator", "source": name, "pixels": pixels, "n_given": n,
                    "read": f"{n} x N(0, 1) latent vectors of size {latent_dim} (seed {seed}), batches of {batch_size}"}


def take(images: torch.Tensor, n: int | None, split: data.Split, what: str) -> torch.Tensor:
    """The first n images (default: as many as trials score, or all there are when fewer)."""
    if len(images) < MIN_SAMPLES:
        raise UserError(f"{what} holds {len(images)} images; the metrics need at least {MIN_SAMPLES}")
    if n is not None and len(images) < n:
        raise UserError(f"{what} holds {len(images)} images, fewer than --n {n}; give more or a smaller --n")
    return images[: check_n(n if n is not None else min(len(images), default_n(split)))]


def score(samples, *, n: int | None = None, latent_dim: int | None = None, data_source="embedded",
          device: torch.device | str | None = "auto", cache_dir: str | os.PathLike | None = None,
          with_floor: bool = True, seed: int = EVAL_NOISE_SEED, batch_size: int = 500, name: str | None = None,
          out: str | os.PathLike | None = None, inception: bool = False,
          inception_weights: str | os.PathLike | None = None, reference: Reference | None = None) -> dict:
    """Metrics of a generator's samples against the held-out set (see the module doc for what ``samples`` may be).

    ``latent_dim`` (callables only): default the callable's ``latent_dim`` attribute, else 100. ``data_source``:
    "embedded", "mnist", a DataConfig or a Split: whose held-out set judges. ``name`` labels a callable in the
    result (``--generator`` passes its module:callable). ``out``: a results folder that receives metrics.json and
    samples.png (the first 64 scored images), written only once everything is scored. ``inception``: Inception-v3
    metrics too (see Reference). Bad input raises UserError (one line), and then nothing is written.
    """
    t0 = time.perf_counter()
    split = reference.split if reference else _split(data_source)

    def judge() -> Reference:
        return reference or Reference(split, device=device, cache_dir=cache_dir, inception=inception,
                                      inception_weights=inception_weights)

    if callable(samples) and not isinstance(samples, torch.Tensor):
        ref = judge()
        count = check_n(n if n is not None else default_n(split))
        label = name or getattr(samples, "__qualname__", type(samples).__name__)
        images, given = _generated(samples, count, latent_dim, ref.device, seed, batch_size, label)
    else:  # read (and refuse) the samples before building the judge
        images, given = _given(samples)
        images = take(images, n, split, given["source"])
        ref = judge()
    # No memorization check (copy1k): it needs the digits the generator trained on, and a user's generator's training
    # set is unknown here; judged against digits it never saw, the statistic would mean nothing.
    result = {**ref.score(images), "input": {**given, "n_scored": len(images)}}
    if with_floor:
        result["floor"] = ref.floor(len(images))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        folder = RunFolder(out)
        folder.save_samples(images[:64])
        folder.write_json(METRICS, result)
    return result


def compare(a: dict, b: dict) -> dict[str, float]:
    """b's metric minus a's, for every metric both have, only when their protocols match (else ProtocolMismatch,
    a UserError naming each part that differs). The protocol names the first judge; a metric of another judge
    (``fid1k_lenet``, ``fid1k_inception``) is left out unless both results name the same ``extractor<suffix>``."""
    check_comparable(a, b)
    differ = tuple(k.removeprefix("extractor") for k in {*a, *b} if k.startswith("extractor_") and a.get(k) != b.get(k))
    return {k: b[k] - a[k] for k, v in a.items()
            if isinstance(v, float) and isinstance(b.get(k), float) and k != "seconds" and not k.endswith(differ)}
