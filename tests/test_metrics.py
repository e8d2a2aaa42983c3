"""Metrics: agreement with independent numpy/scipy computations, behaviour on real data, the floor, the cache."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity

from gan_core import files
from gan_core.errors import UserError
from gan_core.judging import evaluation, extractor, features, metrics
from gan_core.judging.features import FeatureSet
from tests.metric_helpers import add_noise, blur, uniform_noise

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def embedded(split):
    return split


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def ref(embedded, cache_dir):
    return evaluation.Reference(embedded, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def heldout(ref):
    return ref.heldout()


@pytest.fixture(scope="module")
def floor_draw(embedded):
    return evaluation.balanced_draw(embedded.train, embedded.train_labels, 1000)


@pytest.fixture(scope="module")
def floor_features(ref, floor_draw):
    return ref.extractors[""](floor_draw)


@pytest.fixture(scope="module")
def floor1k(ref):
    return ref.floor(1000)


@pytest.fixture(scope="module")
def mild(embedded):
    """The held-out digits with a little pixel noise: the mildest degradation the metrics must see."""
    return add_noise(embedded.heldout, 8)


# --- independent reference implementations (numpy/scipy, not torch-fidelity) ----------------------


def fid_reference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = (a - mu_a).T @ (a - mu_a) / (len(a) - 1)
    cov_b = (b - mu_b).T @ (b - mu_b) / (len(b) - 1)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al.'s KID estimator, cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    d, m = x.shape[1], len(x)
    k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())


def kid_reference(a: torch.Tensor, b: torch.Tensor, subsets: int, size: int) -> tuple[float, float]:
    a, b = a.double().numpy(), b.double().numpy()
    rng = np.random.RandomState(metrics.RNG_SEED)  # the same subsets torch-fidelity draws
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


# --- agreement ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degrade", ["none", "noise"])
def test_fid_agrees_with_scipy(floor_features, heldout, mild, ref, degrade):
    gen = floor_features if degrade == "none" else ref.extractors[""](mild)
    ours, expected = metrics.fid(gen.features, heldout.features), fid_reference(gen.features, heldout.features)
    assert ours > 0.05  # a non-trivial value, so the relative check means something
    assert ours == pytest.approx(expected, rel=1e-4)


def test_kid_agrees_with_numpy_on_full_sets(floor_features, heldout):
    # 1000 vs 1000 with subset size 1000: one subset is the whole of both sets (std 0).
    mean, std = metrics.kid(floor_features.features, heldout.features)
    expected = mmd2_unbiased(floor_features.features.double().numpy(), heldout.features.double().numpy())
    assert mean == pytest.approx(expected, rel=1e-4) and std == 0.0


def test_kid_agrees_with_numpy_on_subsets(floor_features, heldout):
    gen = floor_features.features[:200]
    mean, std = metrics.kid(gen, heldout.features)
    expected_mean, expected_std = kid_reference(gen, heldout.features, metrics.KID_SUBSETS, 200)
    assert mean == pytest.approx(expected_mean, rel=1e-4)
    assert std == pytest.approx(expected_std, rel=1e-4) and std > 0


def test_kid_subset_never_exceeds_the_sample_counts(heldout):
    # torch-fidelity raises when the subset size exceeds either count; ours is min(n1, n2, 1000).
    mean, _ = metrics.kid(heldout.features[:50], heldout.features)
    assert np.isfinite(mean)


def test_identical_sets_score_zero(heldout):
    x = heldout.features
    assert abs(metrics.fid(x, x)) < 1e-6
    kid_mean, _ = metrics.kid(x, x)
    # KID's estimator (Binkowski et al.) keeps the k(x_i, y_i) pairs in its cross term, so for identical sets it
    # is not exactly 0 but -(2/n)(mean k(x_i, x_i) - mean k(x_i, x_j)): bounded by (2/n) mean k(x_i, x_i).
    diag = ((x.double() * x.double()).sum(1) / x.shape[1] + 1) ** 3
    assert abs(kid_mean) <= 2 / len(x) * float(diag.mean())
    assert metrics.precision_recall(heldout.features, heldout.features) == (1.0, 1.0)


@pytest.mark.parametrize("judge", list(extractor.JUDGES.values()), ids=list(extractor.JUDGES))
def test_torch_fidelity_calculate_metrics_agrees_through_the_registered_extractor(floor_draw, embedded, ref, judge):
    """The same numbers through torch-fidelity's own pipeline: proves the registration (of both judges), and that
    our batching and feature handling add nothing."""

    class Images(torch.utils.data.Dataset):  # torch-fidelity wants bare tensors, not TensorDataset tuples
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    gen = floor_draw[:200]
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(gen), input2=Images(embedded.heldout), feature_extractor=extractor.register(judge=judge),
        fid=True, kid=True, prc=True, isc=True, kid_subset_size=200, cuda=False, cache=False, save_cpu_ram=True,
        verbose=False, batch_size=250)
    ours = ref.score(gen)
    k = metrics.MetricNames.for_count(200, judge.suffix)
    assert ours[f"extractor{judge.suffix}"] == extractor.extractor_name(judge=judge)
    assert ours[k.fid] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours[k.kid] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert ours[k.kid_std] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-2)
    assert ours[k.precision] == pytest.approx(theirs["precision"], abs=2e-3)
    assert ours[k.recall] == pytest.approx(theirs["recall"], abs=2e-3)
    if judge.classifier:
        assert ours["cscore200_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)


# --- behaviour on real data -------------------------------------------------------------------------


def test_ordering_floor_mild_heavy_noise(ref, embedded, floor1k, mild):
    floor = floor1k
    # Degraded copies of the held-out set itself, scored against it: same digits, worse images.
    mild, heavy = ref.score(mild), ref.score(blur(embedded.heldout, 1.5))
    noise = ref.score(uniform_noise(embedded.heldout))
    for key in ("fid1k", "kid1k_mean"):
        values = [floor[key], mild[key], heavy[key], noise[key]]
        assert values == sorted(values) and len(set(values)) == 4, (key, values)
    assert floor["precision1k"] > heavy["precision1k"] and floor["recall1k"] > heavy["recall1k"]
    assert floor["modes1k"] == 10 and floor["mode_kl1k"] < 0.01 and floor["cscore1k_mean"] > 7
    assert noise["precision1k"] == noise["recall1k"] == 0.0


def test_a_single_digit_has_low_recall_and_poor_mode_coverage(ref, embedded, floor1k):
    sevens = embedded.train[embedded.train_labels == 7][:400]
    r = ref.score(sevens)
    assert r["recall400"] < 0.3 and floor1k["recall1k"] > 0.8
    assert r["precision400"] > 0.7  # every sample is a real digit: collapse shows in recall, not precision
    assert r["modes400"] == 1 and r["share400_7"] > 0.95
    assert r["mode_kl400"] > 2.0 and floor1k["mode_kl1k"] < 0.05  # ln 10 = 2.30 is one digit only
    assert r["cscore400_mean"] < 1.5
    one_image = ref.score(sevens[:1].expand(400, -1, -1, -1).contiguous())
    assert one_image["recall400"] < 0.05 and one_image["modes400"] == 1


def test_mode_coverage_definition():
    assert metrics.mode_coverage(torch.full((10,), 0.1, dtype=torch.float64)) == (10, 0.0)
    modes, kl = metrics.mode_coverage(torch.tensor([1.0] + [0.0] * 9, dtype=torch.float64))
    assert modes == 1 and kl == pytest.approx(np.log(10))
    # the fair share is half the uniform share: 5% counts, 4.9% does not
    shares = torch.tensor([0.05, 0.049] + [0.901 / 8] * 8, dtype=torch.float64)
    assert metrics.mode_coverage(shares)[0] == 9


def test_names_carry_counts_and_extractor(ref, floor_draw):
    r = ref.score(floor_draw[:100])
    assert r["extractor"] == extractor.extractor_name() and r["n_generated"] == 100 and r["n_real"] == 1000
    assert {"fid100", "kid100_mean", "kid100_std", "precision100", "recall100", "cscore100_mean", "modes100",
            "mode_kl100", "share100_9"} <= set(r)
    assert [metrics.count_tag(n) for n in (1000, 10000, 500, 2500)] == ["1k", "10k", "500", "2500"]
    json.dumps(r)  # a result is plain JSON


# --- the floor ----------------------------------------------------------------------------------------


def test_floor_draw_is_class_balanced_deterministic_and_from_train(embedded):
    a = evaluation.balanced_draw(embedded.train, embedded.train_labels, 1005)
    b = evaluation.balanced_draw(embedded.train, embedded.train_labels, 1005)
    assert torch.equal(a, b)
    labels = evaluation.balanced_draw(embedded.train_labels.view(-1, 1), embedded.train_labels, 1005).view(-1)
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() == 100 and counts.max() == 101 and counts.sum() == 1005
    train_rows = {bytes(x.numpy()) for x in embedded.train}
    assert all(bytes(x.numpy()) in train_rows for x in a[:50])
    with pytest.raises(UserError, match="smaller --n"):
        evaluation.balanced_draw(embedded.train, embedded.train_labels, 10_000)


def test_floor_uses_the_same_counts(ref, floor1k):
    assert floor1k["n_generated"] == 1000 and floor1k["n_real"] == 1000 and "fid1k" in floor1k
    assert floor1k["floor_seed"] == evaluation.FLOOR_SEED


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


# --- generators and the training callback -------------------------------------------------------------


def test_evaluator_as_on_eval_callback_leaves_the_generator_as_it_was(embedded, cache_dir):
    from gan_core.training.accounting import build_models
    from gan_core.training.loop import EvalPoint
    from tests.conftest import tiny_config

    cfg = tiny_config()
    g, _ = build_models(cfg)
    g.train()
    state = {k: v.clone() for k, v in g.state_dict().items()}
    evaluator = evaluation.Evaluator(n=200, split=embedded, cache_dir=cache_dir)
    point = EvalPoint(g_step=5, d_step=5, wall_s=0.0, generator=g, cfg=cfg, device=torch.device("cpu"), out_dir=None)
    first = evaluator(point)
    assert g.training  # mode restored, and no BatchNorm statistics updated
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in state.items())
    assert first["n_generated"] == 200 and first["extractor"] == extractor.extractor_name()
    assert evaluator(point)["fid200"] == first["fid200"]  # the same fixed noise every time
    # an anytime point is the first judge's only (the second re-judges final evaluations: its cost, per point)
    assert not [k for k in first if k.endswith(evaluation.SECOND_JUDGE_SUFFIX)]
    json.dumps(first)


def test_train_logs_evaluator_metrics(embedded, cache_dir, tmp_path):
    from gan_core.training import loop
    from tests.conftest import tiny_config

    cfg = tiny_config(steps=4, eval_every=2, log_every=2)
    result = loop.train(cfg, tmp_path / "run", split=embedded,
                         on_eval=evaluation.Evaluator(n=100, split=embedded, cache_dir=cache_dir))
    rows = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert [r["g_step"] for r in rows] == [0, 2, 4] and all("fid100" in r for r in rows)
    assert result.evals[-1]["fid100"] == rows[-1]["fid100"]


def test_evaluate_run_writes_metrics_json(embedded, cache_dir, tmp_path, monkeypatch):
    from gan_core.training import data, loop
    from tests.conftest import tiny_config

    run = tmp_path / "run"
    loop.train(tiny_config(steps=2), run, split=embedded)
    monkeypatch.setattr(data, "load", lambda cfg: embedded)  # the run's data config is the embedded default
    result = evaluation.evaluate_run(run, n=200, device="cpu", cache_dir=cache_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["fid200"] > saved["floor"]["fid200"] and saved["floor"]["n_generated"] == 200
    assert saved["extractor"] == saved["floor"]["extractor"] == extractor.extractor_name()
    assert not list(run.glob(".*.tmp"))
    # judged twice: FID, KID, precision and recall under the second judge too, named with it; the classifier
    # metrics once (the first judge's)
    second = metrics.MetricNames.for_count(200, evaluation.SECOND_JUDGE_SUFFIX)
    assert saved["extractor_lenet"] == saved["floor"]["extractor_lenet"] == \
        extractor.extractor_name(judge=extractor.SECOND)
    for key in (second.fid, second.kid, second.kid_std, second.precision, second.recall):
        assert isinstance(saved[key], float) and key in saved["floor"], key
    assert second.fid == "fid200_lenet" and saved[second.fid] > saved["floor"][second.fid]
    assert saved[second.fid] != saved["fid200"]  # another network's features, not a copy of the first's
    assert not [k for k in saved if k.startswith(("cscore", "modes", "share", "copy")) and k.endswith("_lenet")]


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


def test_bad_sample_counts_are_user_errors(ref):
    with pytest.raises(UserError, match=">= 10"):
        evaluation.check_n(5)
    with pytest.raises(UserError):
        ref.score(torch.zeros(3, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        ref.extractors[""](torch.zeros(20, 1, 32, 32))


def test_metrics_reject_mismatched_features():
    with pytest.raises(ValueError):
        metrics.compare(FeatureSet(torch.zeros(20, 4)), FeatureSet(torch.zeros(20, 5)))


def test_metric_names_are_derived_from_a_fid_name():
    k = metrics.MetricNames.for_count(1000)
    assert k == metrics.MetricNames.from_fid("fid1k")
    assert (k.fid, k.kid, k.precision, k.recall, k.modes, k.share(3)) == \
        ("fid1k", "kid1k_mean", "precision1k", "recall1k", "modes1k", "share1k_3")
    k = metrics.MetricNames.from_fid("fid10k_inception")
    assert (k.kid, k.precision, k.modes) == ("kid10k_mean_inception", "precision10k_inception", "modes10k")
    assert metrics.MetricNames.from_fid("fid200").kid == "kid200_mean"
    assert metrics.MetricNames.from_fid("loss") is None and metrics.MetricNames.from_fid(None) is None
