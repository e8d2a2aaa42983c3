"""Metrics from features: FID, KID, precision/recall (torch-fidelity), classifier score and mode coverage.

Pure functions of FeatureSets (see gan_core.judging.features); no images, no I/O. The arithmetic is
torch-fidelity 0.4.0's own (``fid_statistics_to_metric``, ``kid_features_to_metric``,
``prc_features_to_metric``, ``isc_features_to_metric``), fed with float64 features so that FID's
mean difference and KID's kernel sums are not rounded in float32.

Names carry the sample count (``fid1k``, ``kid1k_mean``, ``fid10k`` on full MNIST): numbers from
different counts are biased differently and must never share a column. Conventions: input 1 is
generated, input 2 is real (torch-fidelity's precision/recall convention).

Mode coverage, from the MNIST classifier's predicted digit of every generated image: the share of
each digit; ``modes`` = how many of the 10 digits get a fair share, defined as at least half of the
uniform share (>= 5% of the samples; a class-balanced real set scores 10, one repeated digit 1);
``mode_kl`` = KL(predicted shares || uniform) in nats, 0 for perfectly balanced, ln 10 = 2.30 for
a single digit.

Memorization (gan_core.judging.memorization; a trained generator's final evaluation only, against the digits it
trained on): ``copy1k`` = P(d_generated < d_heldout), each digit's L2 distance to its nearest training digit in the
judge's feature space, generated against held-out digits (the Mann-Whitney U over n_generated * n_heldout, ties
half): 0.5 = generated digits are as close to the training digits as new real digits are, near 1 = copies, below
0.5 = farther (blurry or underfit). ``copy1k_p`` is its one-sided p-value (generated distances smaller);
``copy1k_pixels`` and ``copy1k_pixels_p`` the same in pixels. Both come from the MNIST judge and carry no suffix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from gan_core.judging.features import FeatureSet

KID_MAX_SUBSET = 1000  # torch-fidelity's default subset size; never more than either sample count
KID_SUBSETS = 100  # torch-fidelity's default
PRC_NEIGHBORHOOD = 3  # torch-fidelity's default k (Kynkäänniemi et al.)
PRC_BATCH = 1000  # rows of the distance matrix at a time: 10k x 10k float64 at once would be 800 MB
ISC_SPLITS = 10
RNG_SEED = 2020  # torch-fidelity's default: KID subsets and classifier-score splits
FAIR_SHARE = 0.5  # a digit is covered when it gets at least this fraction of the uniform share
MIN_SAMPLES = 10  # the classifier score needs one sample per split, precision/recall k + 1


def count_tag(n: int) -> str:
    """1000 -> '1k', 10000 -> '10k', 500 -> '500': the sample count in a metric's name."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


@dataclass(frozen=True)
class MetricNames:
    """Every metric's name, defined here once: ``fid1k``, ``kid1k_mean``, ``precision1k``, ``modes1k``...

    The tag is the generated sample count (stylegan2-ada's ``fid50k``); the suffix names a non-default
    extractor (``fid1k_inception``). Classifier-based metrics (classifier score, mode coverage, digit
    shares) come from the MNIST extractor's logits only and carry no suffix; so does the memorization check
    (``copy1k``, ``copy1k_pixels`` and their ``_p`` values: the MNIST judge's features, and pixels).
    """

    tag: str
    suffix: str = ""

    @classmethod
    def for_count(cls, n: int, suffix: str = "") -> MetricNames:
        return cls(count_tag(n), suffix)

    @classmethod
    def from_fid(cls, name: str | None) -> MetricNames | None:
        """The names that go with a FID name (a study's objective), or None for anything else."""
        m = re.fullmatch(r"fid(?P<tag>\d+k?)(?P<suffix>.*)", name or "")
        return cls(m["tag"], m["suffix"]) if m else None

    @property
    def fid(self) -> str:
        return f"fid{self.tag}{self.suffix}"

    @property
    def kid(self) -> str:
        return f"kid{self.tag}_mean{self.suffix}"

    @property
    def kid_std(self) -> str:
        return f"kid{self.tag}_std{self.suffix}"

    @property
    def precision(self) -> str:
        return f"precision{self.tag}{self.suffix}"

    @property
    def recall(self) -> str:
        return f"recall{self.tag}{self.suffix}"

    @property
    def cscore(self) -> str:
        return f"cscore{self.tag}_mean"

    @property
    def cscore_std(self) -> str:
        return f"cscore{self.tag}_std"

    @property
    def modes(self) -> str:
        return f"modes{self.tag}"

    @property
    def mode_kl(self) -> str:
        return f"mode_kl{self.tag}"

    @property
    def copy(self) -> str:
        return f"copy{self.tag}"

    @property
    def copy_p(self) -> str:
        return f"copy{self.tag}_p"

    @property
    def copy_pixels(self) -> str:
        return f"copy{self.tag}_pixels"

    @property
    def copy_pixels_p(self) -> str:
        return f"copy{self.tag}_pixels_p"

    def share(self, digit: int) -> str:
        return f"share{self.tag}_{digit}"


def _check(gen: torch.Tensor, real: torch.Tensor) -> None:
    if gen.dim() != 2 or real.dim() != 2 or gen.shape[1] != real.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D, got {list(gen.shape)} and {list(real.shape)}")
    if min(len(gen), len(real)) < MIN_SAMPLES:
        raise ValueError(f"metrics need at least {MIN_SAMPLES} samples per side, got {len(gen)} and {len(real)}")


def fid(gen: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D]."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    _check(gen, real)
    stats_gen = fid_features_to_statistics(gen.detach().cpu().double())
    stats_real = fid_features_to_statistics(real.detach().cpu().double())
    return float(fid_statistics_to_metric(stats_gen, stats_real, verbose=False)[KEY_METRIC_FID])


def kid(gen: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """Kernel distance (unbiased MMD^2, cubic polynomial kernel): mean and std over random subsets.

    Subset size min(n_gen, n_real, 1000). When both sets are exactly that size every "subset" is a
    permutation of the whole set, the estimate is the same each time and the std is 0, so one subset
    is computed instead of 100 identical ones.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    _check(gen, real)
    size = min(len(gen), len(real), KID_MAX_SUBSET)
    subsets = 1 if len(gen) == len(real) == size else KID_SUBSETS
    out = kid_features_to_metric(gen.detach().cpu().double(), real.detach().cpu().double(), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=RNG_SEED, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def precision_recall(gen: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """Precision: share of generated samples inside the real manifold (k-NN balls); recall: the reverse."""
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    _check(gen, real)
    out = prc_features_to_metric(gen.detach().cpu().double(), real.detach().cpu().double(),
                                 prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size=PRC_BATCH, save_cpu_ram=True,
                                 verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def classifier_score(logits: torch.Tensor) -> tuple[float, float]:
    """The Inception Score computed with the MNIST classifier: exp(E KL(p(y|x) || p(y))), mean and std
    over 10 splits. 1 (one digit, or no confident digit) .. 10 (confident and balanced)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    if logits.dim() != 2 or len(logits) < MIN_SAMPLES:
        raise ValueError(f"classifier score needs logits [N >= {MIN_SAMPLES}, K], got {list(logits.shape)}")
    out = isc_features_to_metric(logits.detach().cpu(), splits=ISC_SPLITS, shuffle=True, rng_seed=RNG_SEED)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


def class_shares(logits: torch.Tensor) -> torch.Tensor:
    """Histogram of predicted classes, as fractions summing to 1: float64 [K]."""
    counts = torch.bincount(logits.argmax(dim=1).cpu(), minlength=logits.shape[1])
    return counts.double() / counts.sum()


def mode_coverage(shares: torch.Tensor) -> tuple[int, float]:
    """(digits with a fair share, KL(shares || uniform) in nats) for class shares summing to 1."""
    k = len(shares)
    modes = int((shares >= FAIR_SHARE / k).sum())
    nonzero = shares[shares > 0]
    kl = float((nonzero * (nonzero * k).log()).sum())  # 0 log 0 = 0
    return modes, max(kl, 0.0)


def compare(gen: FeatureSet, real: FeatureSet, suffix: str = "") -> dict[str, float]:
    """Every metric of a generated FeatureSet against a real one, named with the generated count.

    Classifier score and mode coverage need logits (the MNIST extractor's), and are left out otherwise.
    ``suffix`` names a non-default extractor (``fid1k_inception``).
    """
    k = MetricNames.for_count(len(gen), suffix)
    out: dict[str, float] = {k.fid: fid(gen.features, real.features)}
    out[k.kid], out[k.kid_std] = kid(gen.features, real.features)
    out[k.precision], out[k.recall] = precision_recall(gen.features, real.features)
    if gen.logits is not None:
        out[k.cscore], out[k.cscore_std] = classifier_score(gen.logits)
        shares = class_shares(gen.logits)
        modes, kl = mode_coverage(shares)
        out[k.modes] = float(modes)
        out[k.mode_kl] = kl
        for digit, share in enumerate(shares.tolist()):
            out[k.share(digit)] = share
    if not all(math.isfinite(v) for v in out.values()):
        bad = sorted(k for k, v in out.items() if not math.isfinite(v))
        raise FloatingPointError(f"metrics not finite: {', '.join(bad)}")
    return out
