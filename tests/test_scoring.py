"""Scoring any generator (gan_core.judging.scoring, `python -m gan_core.evaluate --samples/--generator`): real
digits saved by a user score exactly the floor, every input layout and range meets the same images, and results
are compared only under one protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core import evaluate
from gan_core.judging import evaluation, samples, scoring
from gan_core.judging.protocol import Protocol, ProtocolMismatch
from gan_core.training import data
from gan_core.training.config import DataConfig
from tests.metric_helpers import embedded_split, one_thread
from tests.plugins import generators


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def reference(cache_dir):
    return evaluation.Reference(embedded_split(), device="cpu", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def floor(reference):
    return reference.floor(1000)


def values(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, float) and k != "seconds"}


def cli_json(argv: list[str], capsys) -> dict:
    assert evaluate.main([*argv, "--device", "cpu", "--no-floor", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_floor_draw_saved_as_pngs_and_as_npz_scores_the_floor_exactly(floor, reference, cache_dir, tmp_path,
                                                                           capsys):
    split = embedded_split()
    draw = evaluation.balanced_draw(split.train, split.train_labels, 1000)  # the floor's own draw
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(draw.numpy()):
        Image.fromarray(image[0]).save(folder / f"{i:05d}.png")
    np.savez(tmp_path / "draw.npz", images=draw.numpy())
    out = tmp_path / "results" / "real"
    from_pngs = cli_json(["--samples", str(folder), "--cache-dir", str(cache_dir), "--out", str(out)], capsys)
    from_npz = scoring.score(tmp_path / "draw.npz", reference=reference, with_floor=False)  # the Python API
    assert values(floor) and values(from_pngs) == values(floor) == values(from_npz)
    assert from_pngs["protocol"] == floor["protocol"] == from_npz["protocol"]
    assert from_pngs["input"]["pixels"] == "uint8 0-255" and from_npz["input"]["n_scored"] == 1000
    assert json.loads((out / "metrics.json").read_text()) == from_pngs
    assert Image.open(out / "samples.png").size == (274, 274)  # 8 x 8 digits, like a run's grid


def test_mnist_28x28_digits_saved_as_png_come_back_as_the_heldout_images(tmp_path):
    """The reader's resize is the rule that made the held-out set: real 28x28 files meet the judge unchanged, in
    whichever mode they were saved (16-bit grey is scaled back, not clipped)."""
    raw, labels = data._embedded()  # MNIST's own 28x28 uint8 digits, before the split resizes them
    _, held_idx = data.stratified_split(labels, DataConfig().heldout_per_class)
    picked = held_idx[:12]
    for i, idx in enumerate(picked):
        img = Image.fromarray(raw[idx, 0])
        if i % 3 == 1:  # 16-bit grey, v * 257: reads back as v
            img = Image.fromarray(raw[idx, 0].astype(np.uint16) * 257)
        (img.convert("RGB") if i % 3 == 0 else img).save(tmp_path / f"{i:03d}.png")  # grey saved as RGB reads back
    images, what = samples.read_folder(tmp_path)
    assert torch.equal(images, embedded_split().heldout[:12]) and "28x28" in what


@pytest.mark.parametrize("layout", ["N,H,W", "N,1,H,W", "N,H,W,1", "N,3,H,W"])
@pytest.mark.parametrize("pixels", ["uint8 0-255", "float in [0, 1]", "float in [-1, 1]"])
def test_every_layout_and_range_gives_the_same_images(layout, pixels):
    real = embedded_split().heldout[:10]  # uint8 [10, 1, 32, 32]
    x = real.float() / 255 if pixels == "float in [0, 1]" else real.float() / 127.5 - 1 if "-1" in pixels else real
    x = {"N,H,W": x[:, 0], "N,1,H,W": x, "N,H,W,1": x.permute(0, 2, 3, 1), "N,3,H,W": x.expand(-1, 3, -1, -1)}[layout]
    images, detected = samples.from_array(x.numpy(), "x")
    assert detected == pixels and torch.equal(images, real)


def test_a_generator_callable_is_scored_in_memory_on_the_trials_noise(reference, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(generators, "SEEN", [])
    monkeypatch.chdir(tmp_path)  # scoring in memory writes nothing
    result = cli_json(["--generator", "tests.plugins.generators:replay", "--n", "1000", "--latent-dim", "16",
                       "--cache-dir", str(reference.cache_dir)], capsys)
    direct = scoring.score(embedded_split().heldout, reference=reference, with_floor=False)
    assert values(result) == values(direct) and result["protocol"] == direct["protocol"]
    assert result["input"]["pixels"] == "float in [-1, 1]" and result["input"]["kind"] == "generator"
    z = torch.cat(generators.SEEN)
    assert [len(b) for b in generators.SEEN] == [500, 500]
    assert torch.equal(z, evaluation.sampling.noise(1000, 16, evaluation.EVAL_NOISE_SEED))
    assert list(tmp_path.iterdir()) == []


def test_results_are_compared_only_under_one_protocol(floor, reference):
    real = embedded_split().heldout
    same_count = scoring.score(real[:1000], reference=reference, with_floor=False)
    diff = scoring.compare(floor, same_count)
    assert diff["fid1k"] == same_count["fid1k"] - floor["fid1k"] and diff["fid1k"] < 0  # held-out vs itself
    assert diff["fid1k_lenet"] == same_count["fid1k_lenet"] - floor["fid1k_lenet"]  # a user's samples: both judges
    # the second judge with other weights: its numbers are left out, the first judge's still compared
    retrained = {**same_count, "extractor_lenet": "mnist-lenet-v1-00000000"}
    assert "fid1k_lenet" not in scoring.compare(floor, retrained) and "fid1k" in scoring.compare(floor, retrained)
    fewer = scoring.score(real[:20], reference=reference, with_floor=False)
    with pytest.raises(ProtocolMismatch, match="n_generated 1000 vs 20"):
        scoring.compare(floor, fewer)
    other_judge = {**same_count, "protocol": {**same_count["protocol"], "weights_sha256": "0" * 64}}
    with pytest.raises(ProtocolMismatch, match="weights_sha256"):
        scoring.compare(other_judge, same_count)
    with pytest.raises(ProtocolMismatch.__mro__[1], match="carries no protocol"):
        scoring.compare({"fid1k": 1.0}, same_count)
    assert Protocol.of(same_count).n_real == len(real)
