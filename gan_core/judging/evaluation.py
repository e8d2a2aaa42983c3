"""Judging generators against held-out MNIST: the API behind ``python -m gan_core.evaluate``.

- ``Reference``: the real side (held-out features per extractor, disk-cached) and the floor. Every final
  evaluation is judged twice: by the first judge (MnistCNN, metrics without a suffix) and by the second
  (MnistLeNet: ``fid1k_lenet``, ``kid1k_mean_lenet``, ``precision1k_lenet``, ``recall1k_lenet``; see
  gan_core.judging.extractor). Intermediate evaluations (``Evaluator``: anytime curves, pruning) and the step-0
  one use the first judge only (``FIRST_JUDGE_ONLY``).
- ``evaluate_generator`` / ``evaluate_images``: a flat dict, metric name -> float, plus the
  extractor's name and both sample counts (a metric value never travels without them).
  ``judge_generator`` also returns the images, and given the digits the generator trained on
  (``trained_on``) adds the memorization check (gan_core.judging.memorization: ``copy1k``,
  ``copy1k_pixels`` and their p-values); ``save_judged`` writes that result into a run folder.
- ``floor``: the same metrics for a class-balanced random draw from the *train* split against the
  held-out set, same counts: what a perfect generator (one that reproduces the data distribution)
  would score here. It is not zero, because two finite samples differ.
- ``evaluate_run``: a run folder's generator -> ``metrics.json`` (atomic), floor included.
- ``Evaluator``: the callback ``gan_core.training.loop.train(on_eval=...)`` calls at intervals.

Generated images come from fixed noise (``EVAL_NOISE_SEED``, the same for every run, so that runs
are compared on the same latent vectors), in eval mode with BatchNorm statistics re-estimated first
(gan_core.training.sampling.with_fresh_batchnorm), quantised to uint8 like the real data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gan_core import devices, files
from gan_core.errors import UserError
from gan_core.judging import extractor, memorization
from gan_core.judging.features import Extractor, FeatureSet, cached_features, mnist_extractor
from gan_core.judging.metrics import MIN_SAMPLES, compare
from gan_core.judging.protocol import PROTOCOL_KEY, Protocol
from gan_core.training import sampling
from gan_core.training.data import RESIZE_RULE, Split
from gan_core.training.run_folder import METRICS, NEIGHBOURS, RunFolder

EVAL_NOISE_SEED = 20240612  # latent vectors of every evaluation (pictures use the run's own seed)
FLOOR_SEED = 20240613  # the floor's class-balanced draw from the train split
MAX_DEFAULT_N = 10_000  # full MNIST: fid10k against its 10k test set
INCEPTION_SUFFIX = "_inception"
SECOND_JUDGE_SUFFIX = extractor.SECOND.suffix
# The judges of the evaluations during training: the first only. The second judge re-judges final numbers, where
# a verdict is drawn; on every anytime point it would add its cost (measured: see Reference) for a curve nobody
# compares across judges.
FIRST_JUDGE_ONLY = ("",)
# what every image meets before the judge (the judge's own step follows): part of every result's protocol
IMAGES = f"uint8 grey [N,1,32,32]; other sizes resized by {RESIZE_RULE}"


def default_n(split: Split) -> int:
    """Generated samples per evaluation: as many as there are held-out images (1000 embedded, 10k MNIST)."""
    return min(len(split.heldout), MAX_DEFAULT_N)


# host memory per evaluated sample, estimated: its noise, an RGB float image, the uint8 copy, its features
BYTES_PER_SAMPLE = 16_000


def check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_SAMPLES:
        raise UserError(f"the number of samples must be an integer >= {MIN_SAMPLES}, got {n!r}")
    devices.check_fits("the number of samples", n, BYTES_PER_SAMPLE, torch.device("cpu"), "--n")
    return n


def balanced_draw(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int = FLOOR_SEED) -> torch.Tensor:
    """n images drawn without replacement, every class equally often (n % K classes, chosen at random, get one more)."""
    rng = np.random.default_rng(seed)
    labels_np = labels.cpu().numpy()
    classes = np.unique(labels_np)
    per_class = np.full(len(classes), n // len(classes))
    per_class[rng.permutation(len(classes))[: n % len(classes)]] += 1
    picks = []
    for c, k in zip(classes, per_class, strict=True):
        pool = np.flatnonzero(labels_np == c)
        if k > len(pool):
            raise UserError(f"the floor needs {k} train images of class {c} for n={n}, but the train split has "
                            f"{len(pool)}; use a smaller --n")
        picks.append(rng.choice(pool, size=k, replace=False))
    order = rng.permutation(np.concatenate(picks))
    return images[torch.from_numpy(order)]


class Reference:
    """The real side of every comparison for one data split.

    Extractors are built once; held-out features are computed once per extractor (then read from the
    disk cache, keyed on content and on the extractor's name and weights hash, so one judge's features are never
    read as another's). ``second_judge`` (default on) adds the second MNIST judge's FID, KID and precision/recall
    (suffix ``_lenet``). ``inception=True`` adds Inception-v3 metrics (suffix ``_inception``), from
    ``inception_weights`` or torch's hub cache; otherwise a UserError.

    The second judge's cost, measured on the 2-core Intel Xeon (one thread, 1,000 generated digits against 1,000
    held-out, held-out features cached, the memorization check included, the machine shared with two other
    jobs; median of 9): its features and metrics add 0.36 s to a final evaluation's 2.55 s, 1.14x (the fastest
    runs: 0.20 s on 1.42 s, also 1.14x). Its held-out features cost one more pass once per cache.
    """

    def __init__(self, split: Split, *, device: torch.device | str | None = "cpu",
                 cache_dir: str | os.PathLike | None = None, inception: bool = False,
                 inception_weights: str | os.PathLike | None = None, mnist: Extractor | None = None,
                 second_judge: bool = True):
        self.split = split
        self.device = devices.resolve(device)
        self.cache_dir = cache_dir
        self.extractors: dict[str, Extractor] = {"": mnist or mnist_extractor(self.device)}
        if second_judge:
            self.extractors[SECOND_JUDGE_SUFFIX] = mnist_extractor(self.device, judge=extractor.SECOND)
        if inception or inception_weights is not None:
            from gan_core.judging.inception import inception_extractor

            self.extractors[INCEPTION_SUFFIX] = inception_extractor(inception_weights, self.device)
        self.tags = {"data": split.name, "heldout_fingerprint": split.fingerprint()}
        self._heldout: dict[str, FeatureSet] = {}
        # per training set (by content hash): its points in both spaces and the held-out digits' distances to them
        self._trained_on: dict[str, tuple[dict, dict]] = {}

    @property
    def extractor_name(self) -> str:
        return self.extractors[""].name

    @property
    def second_judge_name(self) -> str | None:
        """The second judge's name (``mnist-lenet-v1-<sha8>``), None when this reference has none."""
        second = self.extractors.get(SECOND_JUDGE_SUFFIX)
        return second and second.name

    def protocol(self, n_generated: int) -> Protocol:
        """The protocol of a score of n_generated images against this reference (see gan_core.judging.protocol)."""
        judge = self.extractors[""]
        return Protocol(judge=judge.name, weights_sha256=judge.key["weights_sha256"],
                        heldout=f"{self.split.name} {self.tags['heldout_fingerprint']}", n_generated=n_generated,
                        n_real=len(self.split.heldout), preprocessing=f"{IMAGES}; judge: {judge.key['preprocess']}")

    def heldout(self, suffix: str = "") -> FeatureSet:
        if suffix not in self._heldout:
            self._heldout[suffix] = cached_features(self.extractors[suffix], self.split.heldout, self.cache_dir,
                                                    {**self.tags, "set": "heldout"})
        return self._heldout[suffix]

    def training_side(self, train: torch.Tensor) -> tuple[dict, dict]:
        """(the training digits in both spaces, the held-out digits' distances to their nearest training digit), for
        the memorization check: features from the disk cache like the held-out ones, distances computed once per
        training set (a study's arms may train on different prefixes of the split: train_limit)."""
        key = files.content_sha256(train)
        if key not in self._trained_on:
            tags = {**self.tags, "set": "train", "n": len(train), "train_sha256": key}
            points = {memorization.FEATURES: cached_features(self.extractors[""], train, self.cache_dir, tags).features,
                      memorization.PIXELS: train}
            held = {memorization.FEATURES: self.heldout().features, memorization.PIXELS: self.split.heldout}
            self._trained_on[key] = points, {s: memorization.nearest_distance(held[s], points[s], self.device)
                                                 for s in points}
        return self._trained_on[key]

    def score(self, images: torch.Tensor, cache_tags: dict | None = None,
              trained_on: torch.Tensor | None = None, judges: Collection[str] | None = None) -> dict:
        """Metrics of uint8 images [N, 1, 32, 32] against the held-out set, for every extractor (``judges``: only
        those of these suffixes, e.g. FIRST_JUDGE_ONLY).

        ``cache_tags`` marks a fixed real image set (the floor's draw) whose features may be cached. ``trained_on``:
        the uint8 digits the generator trained on (gan_core.training.data.training_images); given, the memorization
        check is added (its cost: the training digits' features once, then one nearest-neighbour pass per call).
        """
        check_n(len(images))
        out: dict = {"extractor": self.extractor_name, "n_generated": len(images),
                     "n_real": len(self.split.heldout), "real_set": f"{self.split.name} held-out "
                                                                  f"{self.tags['heldout_fingerprint']}",
                     PROTOCOL_KEY: self.protocol(len(images)).to_dict()}
        for suffix, ex in self.extractors.items():
            if judges is not None and suffix not in judges:
                continue
            gen = cached_features(ex, images, self.cache_dir, {**self.tags, **cache_tags}) if cache_tags \
                else ex(images)
            if suffix:
                out[f"extractor{suffix}"] = ex.name
            out.update(compare(gen, self.heldout(suffix), suffix))
            if trained_on is not None and not suffix:
                points, d_heldout = self.training_side(trained_on)
                generated = {memorization.FEATURES: gen.features, memorization.PIXELS: images}
                out.update(memorization.memorization(generated, points, d_heldout, self.device))
        return out

    def floor(self, n: int | None = None) -> dict:
        """The same metrics for a class-balanced random draw of n train images (the best a generator can do)."""
        # no memorization check: the floor's draw *is* training digits, so its copy statistic would say 1 by design
        n = check_n(n or default_n(self.split))
        draw = balanced_draw(self.split.train, self.split.train_labels, n)
        return {**self.score(draw, {"set": "floor", "n": n, "seed": FLOOR_SEED}), "floor_seed": FLOOR_SEED}


def evaluate_images(images: torch.Tensor, split: Split, **reference_kwargs) -> dict:
    """Metrics of uint8 images [N, 1, 32, 32] against ``split``'s held-out set (see Reference for options)."""
    return Reference(split, **reference_kwargs).score(images)


def generate_for_eval(generator: nn.Module, head: str, n: int, seed: int = EVAL_NOISE_SEED) -> torch.Tensor:
    """n uint8 images from the fixed evaluation noise; the generator's train/eval mode is restored after."""
    return sampling.generate(generator, check_n(n), head, seed=seed)


def judge_generator(generator: nn.Module, head: str, reference: Reference, n: int | None = None, *,
                    seed: int = EVAL_NOISE_SEED, trained_on: torch.Tensor | None = None,
                    judges: Collection[str] | None = None) -> tuple[dict, torch.Tensor]:
    """(evaluate_generator's metrics, the n uint8 images they judged): for a caller that also draws pictures."""
    images = generate_for_eval(generator, head, n or default_n(reference.split), seed)
    return {**reference.score(images, trained_on=trained_on, judges=judges), "eval_noise_seed": seed}, images


def evaluate_generator(generator: nn.Module, head: str, split: Split, n: int | None = None, *,
                       seed: int = EVAL_NOISE_SEED, reference: Reference | None = None,
                       judges: Collection[str] | None = None, **reference_kwargs) -> dict:
    """Metrics of n generated samples (default: as many as held-out images) against the held-out set, under every
    judge of the reference (``judges``: only those suffixes)."""
    ref = reference or Reference(split, **reference_kwargs)
    return judge_generator(generator, head, ref, n, seed=seed, judges=judges)[0]


def save_judged(folder: RunFolder, metrics: dict, images: torch.Tensor, trained_on: torch.Tensor) -> None:
    """A trained generator's final result into its run folder: metrics.json first (a full disk is named there),
    then neighbours.png, its first judged digits beside their nearest training digits."""
    folder.write_json(METRICS, metrics)
    folder.save_grid(NEIGHBOURS, memorization.neighbour_tiles(images, trained_on),
                     nrow=memorization.NEIGHBOURS_SHOWN + 2)


def floor(split: Split, n: int | None = None, **reference_kwargs) -> dict:
    """Real-vs-real: a class-balanced draw from the train split against the held-out set."""
    return Reference(split, **reference_kwargs).floor(n)


def evaluate_run(run_dir: str | os.PathLike, n: int | None = None, *, device: torch.device | str | None = "auto",
                 cache_dir: str | os.PathLike | None = None, inception: bool = False,
                 inception_weights: str | os.PathLike | None = None, with_floor: bool = True) -> dict:
    """Evaluate a run folder's checkpoint, the memorization check included (against the digits the run trained on);
    write ``metrics.json`` and ``neighbours.png`` into it (atomically) and return the metrics."""
    from gan_core.training import data
    from gan_core.training.loop import load_run

    run_dir = Path(run_dir)
    RunFolder(run_dir).check_finished_run(METRICS)
    cfg, generator = load_run(run_dir)
    split = data.load(cfg.data)
    n = check_n(n if n is not None else default_n(split))
    t0 = time.perf_counter()
    ref = Reference(split, device=device, cache_dir=cache_dir, inception=inception,
                    inception_weights=inception_weights)
    trained_on = data.training_images(split, cfg.data)
    result, images = judge_generator(generator.to(ref.device), cfg.model.head, ref, n, trained_on=trained_on)
    if with_floor:
        result["floor"] = ref.floor(n)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    save_judged(RunFolder(run_dir), result, images, trained_on)
    return result


class Evaluator:
    """``train(cfg, out, on_eval=Evaluator(n=...))``: metrics at every ``eval_every`` generator steps.

    The held-out features and extractor are prepared at the first call and kept; each call then only
    generates n samples and computes features for them. Smaller n than the final evaluation is
    fine for anytime curves and pruning: the names carry the count (``fid500``), so they are never
    confused with final numbers.
    """

    def __init__(self, n: int | None = None, *, split: Split | None = None,
                 cache_dir: str | os.PathLike | None = None, seed: int = EVAL_NOISE_SEED,
                 reference: Reference | None = None):
        self.n = check_n(n) if n is not None else None
        self.split = split
        self.cache_dir = cache_dir
        self.seed = seed
        self._ref = reference  # a Reference already prepared (extractor + held-out features) is reused

    def __call__(self, point) -> dict:
        """``point``: gan_core.training.loop.EvalPoint (g_step, generator, cfg, device, ...)."""
        if self._ref is None or self._ref.device != torch.device(point.device):
            from gan_core.training import data

            split = self.split or data.load(point.cfg.data)
            self._ref = Reference(split, device=point.device, cache_dir=self.cache_dir)
        split = self._ref.split
        images = generate_for_eval(point.generator, point.cfg.model.head, self.n or default_n(split), self.seed)
        return self._ref.score(images, judges=FIRST_JUDGE_ONLY)
