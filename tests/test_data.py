import hashlib
import struct

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
