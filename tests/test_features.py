"""gan_core.judging.features: the judges' features and their disk cache."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from gan_core import files
from gan_core.judging import evaluation, extractor, features

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the real-feature cache ---------------------------------------------------------------------------


def test_real_features_come_from_the_disk_cache(embedded, cache_dir, heldout, monkeypatch):
    fresh = evaluation.Reference(embedded, cache_dir=cache_dir)

    def no_compute(self, images):
        raise AssertionError("held-out features were recomputed instead of read from the cache")

    monkeypatch.setattr(features.Extractor, "__call__", no_compute)
    again = fresh.heldout()
    assert torch.equal(again.features, heldout.features) and torch.equal(again.logits, heldout.logits)


def test_changed_data_under_the_same_name_is_not_served_stale(embedded, cache_dir, heldout, ref):
    # torch-fidelity's trap: its cache key is a name. Ours is the content: flipped digits, same split name.
    changed = dataclasses.replace(embedded, heldout=embedded.heldout.flip(-1))
    assert changed.name == embedded.name
    new = evaluation.Reference(changed, cache_dir=cache_dir).heldout()
    assert not torch.allclose(new.features, heldout.features)
    assert torch.equal(new.features, ref.extractors[""](changed.heldout).features)


def test_cache_key_covers_weights_preprocessing_and_device(ref, embedded):
    ex, images = ref.extractors[""], embedded.heldout[:20]
    base = features.cache_key(ex, images, {})
    for field, value in (("weights_sha256", "0" * 64), ("preprocess", "something else")):
        other = copy.copy(ex)
        other.key = {**ex.key, field: value}
        assert features.cache_key(other, images, {}) != base, field
    other = copy.copy(ex)
    other.device = torch.device("meta")
    assert features.cache_key(other, images, {}) != base
    assert features.cache_key(ex, images, {"heldout_fingerprint": "x"}) != base


def test_a_damaged_cache_entry_is_recomputed(embedded, tmp_path, heldout):
    ref = evaluation.Reference(embedded, cache_dir=tmp_path)
    ref.heldout()
    (entry,) = (tmp_path / "features").glob("*.pt")
    entry.write_bytes(b"not a torch file")
    again = evaluation.Reference(embedded, cache_dir=tmp_path).heldout()
    assert torch.equal(again.features, heldout.features)
    assert not list((tmp_path / "features").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_flipped_bytes_in_the_feature_cache_give_the_numbers_of_an_undisturbed_run(embedded, tmp_path, monkeypatch,
                                                                                    caplog):
    """Seen: 64 flipped bytes inside a cached feature file made evaluate print fid1k 1.8e47 instead of 281.6,
    precision 1.0 instead of 0, exit 0: the cache checked its key, not its content."""
    from gan_core.training import data, loop
    from tests.conftest import flip_tensor_bytes, tiny_config

    run = tmp_path / "run"
    loop.train(tiny_config(steps=1), run, split=embedded)
    monkeypatch.setattr(data, "load", lambda cfg: embedded)
    undisturbed = evaluation.evaluate_run(run, n=100, device="cpu", cache_dir=tmp_path / "cache")
    entries = sorted((tmp_path / "cache" / "features").glob("*.pt"))
    # the held-out set's features and the floor draw's under each judge, and the training digits' (memorization)
    assert len(entries) == 5
    for entry in entries:
        flip_tensor_bytes(entry)
    again = evaluation.evaluate_run(run, n=100, device="cpu", cache_dir=tmp_path / "cache")
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in undisturbed.items()
                                                                   if k != "seconds"}
    assert "is damaged" in caplog.text
    for entry in entries:  # and the entries are whole again
        saved = torch.load(entry, weights_only=True)
        assert saved["sha256"] == files.content_sha256({"features": saved["features"], "logits": saved["logits"]})


def test_torch_fidelity_cache_is_never_written(embedded, tmp_path, monkeypatch, floor_draw):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    evaluation.Reference(embedded, cache_dir=tmp_path / "ours").score(floor_draw[:100])
    assert not (tmp_path / "torch-home" / "fidelity_cache").exists()


def test_one_judges_cached_features_are_never_read_as_the_others(embedded, tmp_path):
    # One cache folder, the same images and tags: the key holds the judge's name (its architecture and weights
    # hash), so each judge reads back its own features, never the other's.
    first = evaluation.Reference(embedded, cache_dir=tmp_path)
    a, b = first.heldout(), first.heldout(evaluation.SECOND_JUDGE_SUFFIX)
    ex1, ex2 = first.extractors[""], first.extractors[evaluation.SECOND_JUDGE_SUFFIX]
    assert features.cache_key(ex1, embedded.heldout, first.tags) != features.cache_key(ex2, embedded.heldout,
                                                                                        first.tags)
    again = evaluation.Reference(embedded, cache_dir=tmp_path)
    assert torch.equal(again.heldout(evaluation.SECOND_JUDGE_SUFFIX).features, b.features)
    assert torch.equal(again.heldout().features, a.features)
    assert b.features.shape[1] == extractor.LENET_FEATURE_DIM != a.features.shape[1]
    assert torch.equal(b.features, ex2(embedded.heldout).features)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2
