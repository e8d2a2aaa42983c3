"""gan_core.judging.metrics: agreement with independent numpy/scipy computations, behaviour on real data, names."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity

from gan_core.judging import extractor, metrics
from gan_core.judging.features import FeatureSet
from tests.metric_helpers import blur, uniform_noise

pytestmark = pytest.mark.usefixtures("single_thread")


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
