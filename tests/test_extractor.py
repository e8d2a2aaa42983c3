"""The MNIST feature extractors (both judges): preprocessing, registration, shipped weights, deterministic training."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from gan_core import train_extractor
from gan_core.errors import UserError
from gan_core.judging import extractor, extractor_training
from gan_core.judging.evaluation import generate_for_eval
from gan_core.judging.features import mnist_extractor
from gan_core.training import data, sampling
from tests.metric_helpers import ReplayGenerator

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def embedded(split):
    return split


@pytest.fixture(scope="module")
def ex():
    return mnist_extractor()


def test_preprocess_takes_uint8_only():
    # A float batch in [0, 1] read as 0..255 would give plausible but wrong features: refuse, don't guess.
    with pytest.raises(TypeError, match="uint8"):
        extractor.preprocess(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="32"):
        extractor.preprocess(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    x = extractor.preprocess(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 32, 32))
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1


@pytest.mark.parametrize("head", ["tanh", "bn_sigmoid"])
@pytest.mark.parametrize("channels", [1, 3])
def test_real_images_through_the_generated_path_give_the_same_features(embedded, ex, head, channels):
    real = embedded.heldout[:300]
    direct = ex(real)
    # What a generator of this head/channel count emits for these digits, then the evaluation's own sampling path.
    g = ReplayGenerator(real, head, channels)
    generated = generate_for_eval(g, head, len(real))
    assert torch.equal(generated, real)
    via_generator = ex(generated)
    assert torch.equal(via_generator.features, direct.features)
    assert torch.equal(via_generator.logits, direct.logits)
    # RGB copies of grey digits (the blog's 3-channel models) meet the network as the same grey.
    rgb = sampling.to_uint8(sampling.to_float(real, head, 3), head).expand(-1, 3, -1, -1)
    assert torch.equal(extractor.load_model()(rgb.contiguous())[0], extractor.load_model()(real)[0])


def test_features_are_deterministic_and_batch_size_independent(embedded, ex):
    images = embedded.heldout[:400]
    a, b = ex(images), ex(images)
    assert torch.equal(a.features, b.features) and torch.equal(a.logits, b.logits)
    for batch_size in (1, 7, 400):
        other = mnist_extractor(batch_size=batch_size)(images)
        torch.testing.assert_close(other.features, a.features, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(other.logits, a.logits, rtol=1e-5, atol=1e-5)
    assert a.features.shape == (400, extractor.FEATURE_DIM) and a.logits.shape == (400, 10)


JUDGES = pytest.mark.parametrize("judge", list(extractor.JUDGES.values()), ids=list(extractor.JUDGES))


@JUDGES
def test_registered_once_under_a_name_with_the_weights_sha(judge):
    info = extractor.load_info(judge.weights)
    sha = extractor.sha256_file(judge.weights)
    assert info["sha256"] == sha and info["version"] == judge.version
    name = extractor.register(judge=judge)
    assert name == f"mnist-{judge.arch}-{judge.version}-{sha[:8]}"
    assert extractor.register(judge=judge) == name  # a second registration is a no-op, not torch-fidelity's ValueError
    assert FEATURE_EXTRACTORS_REGISTRY[name] is extractor.FidelityMnistCNN
    assert isinstance(mnist_extractor(judge=judge).module.net, judge.network)  # the name picks the network too


@JUDGES
def test_shipped_weights_are_small_and_reach_the_stated_heldout_accuracy(embedded, judge):
    info = extractor.load_info(judge.weights)
    assert judge.weights.stat().st_size < 1_000_000
    model = extractor.load_model(judge=judge)
    assert isinstance(model, judge.network)
    acc = extractor_training.accuracy(model, embedded.heldout, embedded.heldout_labels)  # computed, not read
    assert acc >= 0.97
    assert abs(acc - info["heldout_accuracy"]) <= 0.005
    assert info["heldout_fingerprint"] == embedded.fingerprint()  # measured on this very held-out set
    assert info["train_images"] == len(embedded.train) and info["heldout_images"] == len(embedded.heldout)


def test_the_two_judges_are_independent_networks(embedded):
    # Another architecture (a judge that only re-ran the first's code with another seed would share its taste),
    # another seed, other weights, another feature width; and features that are not a copy of the first's.
    first, second = extractor.FIRST, extractor.SECOND
    assert first.network is not second.network and first.suffix != second.suffix and second.suffix
    assert extractor.load_info(first.weights)["seed"] != extractor.load_info(second.weights)["seed"]
    assert extractor.extractor_name(judge=first) != extractor.extractor_name(judge=second)
    a, b = (mnist_extractor(judge=j)(embedded.heldout[:200]) for j in (first, second))
    assert a.features.shape == (200, extractor.FEATURE_DIM) and b.features.shape == (200, extractor.LENET_FEATURE_DIM)
    assert a.features.shape[1] != b.features.shape[1]
    # The second judge's metrics use its features only: the classifier metrics stay the first judge's.
    assert b.logits is None and a.logits is not None


def test_tampered_weights_are_refused(tmp_path):
    weights = tmp_path / "w.pt"
    shutil.copy(extractor.WEIGHTS, weights)
    shutil.copy(extractor.info_path(extractor.WEIGHTS), extractor.info_path(weights))
    assert extractor.extractor_name(weights) == extractor.extractor_name()
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="SHA-256"):
        extractor.load_model(weights)
    with pytest.raises(UserError, match="not found"):
        extractor.load_model(tmp_path / "missing.pt")


def test_training_is_deterministic_and_never_touches_the_heldout_set(embedded):
    # Held-out tensors replaced by None: any use of them during training would raise.
    train_only = dataclasses.replace(embedded, heldout=None, heldout_labels=None)
    rng_before, deterministic_before = torch.get_rng_state(), torch.are_deterministic_algorithms_enabled()

    def digest(seed: int) -> str:
        model = extractor_training.train_extractor(train_only, epochs=1, seed=seed, train_limit=256)
        return hashlib.sha256(extractor.state_bytes(model)).hexdigest()

    first, second = digest(0), digest(0)
    assert first == second
    assert digest(1) != first  # the hash does depend on the training (a constant would pass the check above)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's global RNG is left alone
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before


def test_training_cli_writes_weights_whose_hash_does_not_depend_on_the_path(tmp_path, capsys, monkeypatch, embedded):
    monkeypatch.setattr(data, "load", lambda cfg: embedded)  # the data is tested elsewhere; save 2 s per run
    args = ["--epochs", "1", "--train-limit", "200", "--quiet"]
    assert train_extractor.main([*args, "--out", str(tmp_path / "a" / "w.pt")]) == 0
    assert train_extractor.main([*args, "--out", str(tmp_path / "b.pt")]) == 0
    a, b = json.loads((tmp_path / "a" / "w.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a["sha256"] == b["sha256"] == extractor.sha256_file(tmp_path / "b.pt")
    assert a["train_images"] == 200 and a["epochs"] == 1 and 0 <= a["heldout_accuracy"] <= 1
    name = extractor.register(tmp_path / "b.pt")
    assert name != extractor.register() and name.endswith(a["sha256"][:8])
    assert "held-out accuracy" in capsys.readouterr().out


def test_training_cli_trains_the_second_judge_with_its_own_recipe(tmp_path, monkeypatch, embedded):
    monkeypatch.setattr(data, "load", lambda cfg: embedded)
    out = tmp_path / "lenet.pt"
    assert train_extractor.main(["--judge", "lenet", "--epochs", "1", "--train-limit", "200", "--quiet",
                                 "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["judge"] == "lenet" and info["seed"] == extractor_training.RECIPES["lenet"].seed
    assert isinstance(extractor.load_model(out, judge=extractor.SECOND), extractor.MnistLeNet)
    assert extractor.register(out, extractor.SECOND).startswith(f"mnist-lenet-{extractor.LENET_VERSION}-")


def test_training_cli_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit) as e:
        train_extractor.main(["--epochs", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err


@pytest.mark.slow
@JUDGES
def test_retraining_reproduces_the_shipped_accuracy(embedded, judge):
    # The full recipe (~30 s on one core here for the first judge, ~8 s for the second): the shipped weights must
    # be what the script makes.
    info = extractor.load_info(judge.weights)
    model = extractor_training.train_extractor(embedded, epochs=info["epochs"], seed=info["seed"], judge=judge)
    acc = extractor_training.accuracy(model, embedded.heldout, embedded.heldout_labels)
    assert abs(acc - info["heldout_accuracy"]) <= 0.005
