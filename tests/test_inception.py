"""Inception-v3 stays offline: local weights or one clear line, never a download attempt or a hang."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from gan_core import evaluate
from gan_core.errors import UserError
from gan_core.judging import evaluation, inception
from tests.metric_helpers import embedded_split, one_thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any connection attempt fails the test; torch's hub cache points at an empty folder."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return attempts


@pytest.fixture(scope="module")
def small_split():
    """20 held-out images: Inception's 299x299 forward pass is slow on a CPU."""
    s = embedded_split()
    return dataclasses.replace(s, heldout=s.heldout[:20], heldout_labels=s.heldout_labels[:20])


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A file in the layout of torch-fidelity's Inception-v3 weights, randomly initialised (the real one is
    downloaded, 95 MB): it proves the plumbing, not the numbers."""

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pt")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Unloaded("inception-v3-compat", ["64"], feature_extractor_weights_path=str(folder / "empty.pt"))
    path = folder / "weights-inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


def test_without_weights_one_line_and_no_network(no_network, small_split):
    with pytest.raises(UserError) as e:
        evaluation.Reference(small_split, inception=True)
    message = str(e.value)
    assert "\n" not in message and "--inception-weights" in message and inception.hub_cache_path().name in message
    assert no_network == []


def test_cli_without_weights_exits_2_with_one_line(no_network, capsys, monkeypatch, small_split):
    from gan_core.training import data

    monkeypatch.setattr(data, "load", lambda cfg: small_split)
    assert evaluate.main(["--real-vs-real", "--inception", "--n", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{evaluate.PROG}: error: Inception-v3 weights")
    assert "Traceback" not in err and no_network == []


def test_missing_or_broken_weights_file_is_one_line(no_network, tmp_path):
    with pytest.raises(UserError, match="not found") as e:
        inception.inception_extractor(tmp_path / "nope.pth")
    assert "\n" not in str(e.value)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x00" * 100 + b"\nnot weights\n")
    with pytest.raises(UserError, match="not torch-fidelity Inception-v3 weights") as e:
        inception.inception_extractor(broken)
    assert "\n" not in str(e.value) and no_network == []


def test_weights_in_torch_hub_cache_are_found(no_network):
    assert not inception.hub_cache_path().exists()
    with pytest.raises(UserError):
        inception.resolve_weights()
    inception.hub_cache_path().parent.mkdir(parents=True)
    inception.hub_cache_path().write_bytes(b"placeholder")
    assert inception.resolve_weights() == inception.hub_cache_path()


def test_local_weights_give_inception_metrics_offline(no_network, random_weights, small_split, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(inception, "DEFAULT_LAYER", "64")  # pool3 (2048-d) works too but costs ~10 s of CPU here
    ref = evaluation.Reference(small_split, cache_dir=tmp_path, inception_weights=random_weights)
    sha = inception.extractor.sha256_file(random_weights)
    r = ref.score(embedded_split().train[:20])
    assert r["extractor_inception"] == f"inception-v3-compat-{sha[:8]}-pool64"
    assert {"fid20_inception", "kid20_mean_inception", "precision20_inception", "recall20_inception"} <= set(r)
    assert "modes20_inception" not in r  # ImageNet logits say nothing about digits
    assert "fid20" in r and r["extractor"].startswith("mnist-cnn-")
    assert no_network == []
