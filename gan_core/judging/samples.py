"""A user's samples -> uint8 grey images [N, 1, 32, 32], prepared the way the held-out digits are.

The rules (``python -m gan_core.evaluate --help`` and the README state them too):
- Image files (a folder's *.png, *.jpg, *.jpeg, sorted by name, sub-folders and other files ignored): any PIL
  mode, converted to 8-bit grey by gan_core.training.data.to_gray_uint8, the rule a --data folder tree is read by
  (16-bit grey scaled, not clipped; RGB by luma, so grey saved as RGB comes back unchanged; alpha on black).
- Arrays (.npy, .npz, a numpy array or torch tensor, a generator's output): [N, H, W], [N, C, H, W] or
  [N, H, W, C] with C = 1, or 3 (averaged to grey, as the suite does for its own 3-channel generators).
  Pixels: uint8 (or any integer type) 0-255 as they are; float in [-1, 1] when any value is negative,
  else in [0, 1], mapped to 0-255 and rounded exactly like the suite's own generated images
  (gan_core.training.sampling.to_uint8). NaN, inf or values outside those ranges are refused.
- Size: square, any size; other than 32x32 it is resized with gan_core.training.data.resize, the rule that
  makes the held-out set's 32x32 digits from MNIST's 28x28 (so real digits saved as 28x28 PNGs score exactly
  like the held-out images in memory); 32x32 passes unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gan_core.errors import UserError
from gan_core.training import data, sampling
from gan_core.training.models import IMAGE_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
NPZ_KEYS = ("images", "samples")  # the array an .npz with several arrays is read from
UINT8 = "uint8 0-255"
RANGES = {"float in [0, 1]": "sigmoid", "float in [-1, 1]": "tanh"}  # detected range -> the head that has it


def read_folder(folder: Path) -> tuple[torch.Tensor, str]:
    """uint8 [N, 1, 32, 32] from a folder's image files, and what was read."""

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{folder} holds no {', '.join(IMAGE_SUFFIXES)} files; save the samples there, one image a "
                        "file")
    by_size: dict[tuple, list[int]] = {}
    arrays = []
    for i, path in enumerate(paths):
        arrays.append(data.read_gray(path))
        _check_square(arrays[-1].shape, str(path))
        by_size.setdefault(arrays[-1].shape, []).append(i)
    images = torch.empty(len(paths), 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for idx in by_size.values():  # one resize per size: a batch resizes each image on its own
        images[idx] = data.resize(torch.from_numpy(np.stack([arrays[i] for i in idx]))[:, None])
    sizes = ", ".join(f"{h}x{w}" for h, w in sorted(by_size))
    return images, f"{len(paths)} image files ({sizes}), grey by data.to_gray_uint8"


def _check_square(shape: tuple, what: str) -> None:
    if shape[-1] != shape[-2]:
        raise UserError(f"{what}: images must be square (they are resized to 32x32), got {shape[-2]}x{shape[-1]}")


def read_array_file(path: Path) -> np.ndarray:
    """The samples array of an .npy, or of an .npz holding one array (or one named images or samples)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # ValueError: pickled objects, which are never loaded
        raise UserError(f"{path} cannot be read as {path.suffix} ({type(e).__name__}: {e})".splitlines()[0]) \
            from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        keys = list(loaded.keys())
        key = keys[0] if len(keys) == 1 else next((k for k in NPZ_KEYS if k in keys), None)
        if key is None:
            raise UserError(f"{path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); save one, or name it "
                            f"{' or '.join(NPZ_KEYS)}")
        try:
            return loaded[key]
        except ValueError as e:
            raise UserError(f"{path}: array {key!r} cannot be read ({e})") from None


def as_nchw(x: torch.Tensor, what: str) -> torch.Tensor:
    """[N, H, W], [N, C, H, W] or [N, H, W, C] (C = 1 or 3) -> [N, C, H, W]; one line for any other shape."""
    if x.dim() == 3:
        x = x[:, None]
    elif x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise UserError(f"{what} has shape {list(x.shape)}; give N x H x W, N x 1 x H x W or N x H x W x 1 images "
                        "(N >= 1; 3 channels are averaged to grey)")
    _check_square(tuple(x.shape), what)
    return x


def pixel_range(x: torch.Tensor, what: str) -> str:
    """Which convention x's pixels follow (UINT8 or a RANGES key); one line for NaN, inf or values in none."""
    if x.dtype == torch.bool or x.is_complex():
        raise UserError(f"{what} has {x.dtype} pixels; give uint8 0-255 or float in [0, 1] or [-1, 1]")
    if not x.is_floating_point():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise UserError(f"{what}: integer pixels must lie in 0-255, got {lo} to {hi}")
        return UINT8
    if nan := int(torch.isnan(x).sum()):
        first = int(torch.isnan(x.flatten(1)).any(dim=1).nonzero()[0])
        raise UserError(f"{what} has {nan} NaN pixels (the first in image {first}); every pixel must be a number")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 or hi > 1:
        hint = " (0-255 values: store them as uint8)" if lo >= 0 and hi <= 255 else ""
        raise UserError(f"{what}: float pixels span {lo:g} to {hi:g}, a mixed or unknown range; give float in "
                        f"[0, 1] or [-1, 1]{hint}")
    return "float in [-1, 1]" if lo < 0 else "float in [0, 1]"


def to_images(x: torch.Tensor, pixels: str) -> torch.Tensor:
    """[N, C, H, W] in the ``pixels`` convention -> uint8 [N, 1, 32, 32] (grey, resized by data.resize)."""
    if pixels == UINT8:
        grey = x.to(torch.uint8) if x.shape[1] == 1 else x.double().mean(dim=1, keepdim=True).round().to(torch.uint8)
    else:
        grey = sampling.to_uint8(x, RANGES[pixels])
    return data.resize(grey)


def from_array(x, what: str) -> tuple[torch.Tensor, str]:
    """A numpy array or tensor of samples -> uint8 [N, 1, 32, 32] and the detected pixel convention."""
    try:
        t = torch.as_tensor(x).detach().cpu()
    except (TypeError, RuntimeError) as e:
        raise UserError(f"{what} is not an array of numbers ({type(x).__name__}: {e})".splitlines()[0]) from None
    t = as_nchw(t, what)
    pixels = pixel_range(t, what)
    return to_images(t, pixels), pixels


@torch.no_grad()
def from_callable(fn: Callable, z: torch.Tensor, what: str, batch_size: int = 500) -> tuple[torch.Tensor, str]:
    """uint8 [len(z), 1, 32, 32] from ``fn(z_batch)``, batch by batch, in memory; every batch must follow the
    same pixel convention (a mix is refused)."""
    out, seen = [], set()
    for i in range(0, len(z), batch_size):
        zb = z[i:i + batch_size]
        try:
            batch = fn(zb)
        except Exception as e:  # noqa: BLE001 - the user's code failing on our input is their mistake to see
            first = (str(e).splitlines() or [""])[0]
            raise UserError(f"{what} failed on latent vectors {list(zb.shape)} ({type(e).__name__}: {first}); "
                            "check --latent-dim") from None
        if not isinstance(batch, (torch.Tensor, np.ndarray)):
            raise UserError(f"{what} returned a {type(batch).__name__}; return a torch tensor or numpy array")
        t = as_nchw(torch.as_tensor(batch).detach().cpu(), f"{what}'s output for {len(zb)} latent vectors")
        if len(t) != len(zb):
            raise UserError(f"{what} returned {len(t)} images for {len(zb)} latent vectors; return one per vector")
        pixels = pixel_range(t, f"{what}'s output")
        seen.add(pixels)
        if len(seen) > 1:
            raise UserError(f"{what} returned batches in mixed ranges ({', '.join(sorted(seen))}); return one range")
        out.append(to_images(t, pixels))
    return torch.cat(out), seen.pop()


def read_path(path: Path) -> tuple[torch.Tensor, str, str]:
    """(images, pixel convention, what was read) from a folder of images or an .npy/.npz file."""
    if path.is_dir():
        images, what = read_folder(path)
        return images, UINT8, what
    if not path.exists():
        raise UserError(f"{path} does not exist; give a folder of images or an .npy/.npz file")
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise UserError(f"{path} is not a folder, .npy or .npz; give a folder of images or an array file")
    array = read_array_file(path)
    images, pixels = from_array(array, str(path))
    return images, pixels, f"{array.dtype} {list(array.shape)}"
