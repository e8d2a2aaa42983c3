"""Evaluation throughput: feature extraction + FID + KID + precision/recall of n generated samples
against the held-out set, for n = 1k and 10k.

One timed call is what ``gan_core.judging.evaluation.Reference.score`` spends per evaluation: the MNIST
extractor on the n samples, then FID, KID and precision/recall against the held-out features
(computed once in setup and kept, as Reference does; the classifier score and mode shares that
score() adds cost milliseconds and are left out). Each part's best time goes into extra_info
(``features_s``, ``fid_s``, ``kid_s``, ``precision_recall_s``).

The samples stand in for a generator's output: training digits drawn with replacement and shifted
by up to 2 pixels, uint8 [n, 1, 32, 32] like sampling.generate() returns. What the metrics cost
does not depend on where the images came from; generating them is timed by the training benchmarks.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from benchmarks import harness

SAMPLES = (1000, 10_000)
PARTS = ("features", "fid", "kid", "precision_recall")
# (rounds, warmup_rounds): the 10k evaluation takes tens of seconds on a 2-core CPU, one round is
# all the suite's 5 minutes allow (the 1k case, run first, has warmed the extractor up).
ROUNDS = {("cpu", 1000): (3, 1), ("cpu", 10_000): (1, 0), ("cuda", 1000): (5, 1), ("cuda", 10_000): (3, 1)}


def stand_in_samples(train: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = train[torch.randint(len(train), (n,), generator=g)].clone()
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            pick = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[pick] = torch.roll(images[pick], shifts=(dy, dx), dims=(2, 3))
    return images


@pytest.fixture(scope="module")
def gan_eval():
    """gan_core's evaluation API, or a skip while it is not there yet (it is being written in parallel)."""
    try:
        from gan_core.judging import evaluation, metrics
    except ImportError as e:
        pytest.skip(f"gan_core.judging.evaluation / gan_core.judging.metrics are not importable yet: {e}")
    missing = [f"evaluation.{n}" for n in ("Reference",) if not hasattr(evaluation, n)]
    missing += [f"metrics.{n}" for n in ("fid", "kid", "precision_recall") if not hasattr(metrics, n)]
    if missing:
        pytest.skip(f"gan_core's evaluation API lacks {', '.join(missing)} yet")
    return evaluation, metrics


@pytest.fixture(scope="module")
def references(gan_eval, split, tmp_path_factory):
    """One Reference per device, held-out features computed once (a private feature cache, not ~/.cache)."""
    evaluation, _ = gan_eval
    made: dict[str, tuple] = {}

    def get(device: torch.device):
        if str(device) not in made:
            t0 = time.perf_counter()
            ref = evaluation.Reference(split, device=device, cache_dir=tmp_path_factory.mktemp("feature_cache"))
            real = ref.heldout()
            made[str(device)] = (ref, real, time.perf_counter() - t0)
        return made[str(device)]

    return get


@pytest.mark.parametrize("n", SAMPLES, ids=lambda n: f"n{n // 1000}k")
@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=harness.requires_cuda)])
def test_evaluation(benchmark, gan_eval, references, split, device, n):
    _, metrics = gan_eval
    device = torch.device(device)
    ref, real, reference_setup_s = references(device)
    extractor = ref.extractors[""]
    images = stand_in_samples(split.train, n)
    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    values: dict[str, float] = {}

    def evaluate() -> None:
        t0 = time.perf_counter()
        gen = extractor(images).features  # note: returns CPU tensors, so the device is synced here
        t1 = time.perf_counter()
        values["fid"] = metrics.fid(gen, real.features)
        t2 = time.perf_counter()
        values["kid_mean"], values["kid_std"] = metrics.kid(gen, real.features)
        t3 = time.perf_counter()
        values["precision"], values["recall"] = metrics.precision_recall(gen, real.features)
        t4 = time.perf_counter()
        for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[part].append(seconds)

    rounds, warmup_rounds = ROUNDS[(device.type, n)]
    benchmark.group = f"eval {device.type}"
    with harness.PeakMemory(device) as memory:
        benchmark.pedantic(evaluate, rounds=rounds, warmup_rounds=warmup_rounds)

    assert all(math.isfinite(v) for v in values.values()), f"metrics not finite: {values}"
    assert 0 <= values["precision"] <= 1 and 0 <= values["recall"] <= 1
    info = benchmark.extra_info
    info.update(harness.environment(device))
    info.update(n_generated=n, n_real=len(real), extractor=ref.extractor_name, metrics=values,
                reference_setup_s=reference_setup_s, rounds=rounds, warmup_rounds=warmup_rounds, **memory.info)
    seconds = harness.best_s(benchmark)
    if seconds is None:
        info["timed"] = False
        return
    info.update(timed=True, s_per_evaluation=seconds, s_per_evaluation_median=harness.median_s(benchmark),
                samples_per_s=n / seconds, **{f"{p}_s": min(s[warmup_rounds:]) for p, s in parts.items()})


def _max_pooling_judge(extractor):
    """The first judge as it was before MaxPool2x2 (gan_core.judging.extractor): nn.MaxPool2d, batches of 500."""
    import copy

    from gan_core.judging import extractor as judges

    before = copy.deepcopy(extractor)
    before.batch_size = 500
    for module in before.module.modules():
        for name, child in module.named_children():
            if isinstance(child, judges.MaxPool2x2):
                setattr(module, name, torch.nn.MaxPool2d(2))
    return before


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=harness.requires_cuda)])
def test_judge_features(benchmark, gan_eval, references, split, device):
    """The first judge's features of 1,000 digits, the shipped way, against the max pooling it replaced, timed just
    before each round (pedantic's untimed setup), so that both meet the same load: ``speedup_vs_max_pooling`` =
    the reference's best / the shipped judge's best. The features are asserted equal bit for bit."""
    device = torch.device(device)
    ref, _, _ = references(device)
    shipped = ref.extractors[""]
    before = _max_pooling_judge(shipped)
    images = stand_in_samples(split.train, 1000)
    assert torch.equal(shipped(images).features, before(images).features)
    reference_s: list[float] = []

    def time_the_reference() -> None:
        t0 = time.perf_counter()
        before(images)
        reference_s.append(time.perf_counter() - t0)

    benchmark.group = f"judge features {device.type}"
    benchmark.pedantic(lambda: shipped(images), setup=time_the_reference, rounds=5, warmup_rounds=1)
    info = benchmark.extra_info
    info.update(harness.environment(device))
    seconds = harness.best_s(benchmark)
    if seconds is None:
        info["timed"] = False
        return
    info.update(timed=True, s_per_1k=seconds, max_pooling_s_per_1k=min(reference_s),
                speedup_vs_max_pooling=min(reference_s) / seconds)
