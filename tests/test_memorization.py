"""The memorization check (gan_core.judging.memorization) on real digits: the embedded MNIST, its train split of 4,000
and held-out 1,000. Like the blog, a run "trains" on the first 900 train digits; the other 3,100 are fresh real digits
no run saw. Generators are stand-ins that return digits: training digits (a copier), fresh ones (a perfect
generaliser), or a mix. Features of all 5,000 digits are computed once for the module.
"""

import numpy as np
import pytest
import scipy.stats
import torch

from gan_core.judging import memorization as mem
from gan_core.judging.evaluation import Reference
from gan_core.judging.features import cached_features, mnist_extractor
from gan_core.judging.metrics import MetricNames
from gan_core.training.data import Split

TRAINED = 900  # the blog's training set
ALPHA = 0.05
DRAWS = 200  # generators drawn per calibration check
SEEDS = 5  # seeds per arm, as a study's quick budget runs them


@pytest.fixture(scope="module")
def digits(split):
    """Both spaces' points of the 900 training, 3,100 fresh and 1,000 held-out digits, and the distances of each to
    its nearest training digit."""
    extractor = mnist_extractor()
    # from the disk cache like the real runs' features (keyed on the images' content): 7 s once, then nothing
    feats = cached_features(extractor, torch.cat([split.train, split.heldout]), None,
                            {"data": split.name, "set": "tests/test_memorization"}).features
    n_train = len(split.train)
    points = {mem.FEATURES: (feats[:TRAINED], feats[TRAINED:n_train], feats[n_train:]),
              mem.PIXELS: (split.train[:TRAINED], split.train[TRAINED:], split.heldout)}
    out = {"extractor": extractor, "points": points}
    for space, (train, fresh, held) in points.items():
        out[space] = {"train": mem.nearest_distance(train, train), "fresh": mem.nearest_distance(fresh, train),
                      "heldout": mem.nearest_distance(held, train)}
    return out


def draw(digits, space: str, rng: np.random.Generator, copied: float) -> mem.CopyTest:
    """The check of a generator of 1,000 digits, a share ``copied`` of them training digits (drawn with replacement,
    as a copier would), the rest fresh real digits (without replacement)."""
    d = digits[space]
    n_copies = int(round(1000 * copied))
    dist = torch.cat([d["train"][torch.from_numpy(rng.choice(TRAINED, n_copies))],
                      d["fresh"][torch.from_numpy(rng.choice(len(d["fresh"]), 1000 - n_copies, replace=False))]])
    return mem.copy_test(dist, d["heldout"])


# ---- the pieces against independent computations ------------------------------------------------------------

def test_nearest_equals_the_full_distance_matrix_whatever_the_blocks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    queries, reference = torch.randn(37, 6, generator=g), torch.randn(53, 6, generator=g)
    full = np.linalg.norm(queries.numpy()[:, None] - reference.numpy()[None], axis=2)
    want_i = np.argsort(full, axis=1)[:, :3]
    monkeypatch.setattr(mem, "BLOCK_ROWS", 5)
    monkeypatch.setattr(mem, "BLOCK_ENTRIES", 5 * 7)  # blocks of 5 x 7: the running top 3 crosses block edges
    d, i = mem.nearest(queries, reference, 3)
    assert np.array_equal(i.numpy(), want_i)
    assert np.allclose(d.numpy(), np.take_along_axis(full, want_i, axis=1), atol=1e-5)
    images = torch.randint(0, 256, (9, 1, 4, 4), dtype=torch.uint8, generator=g)
    assert mem.nearest_distance(images, images).abs().max() < 1e-2  # a copy is at (near) 0 in pixels too


def test_copy_is_the_share_of_pairs_where_the_generated_digit_is_closer_ties_half():
    g = torch.tensor([1.0, 2.0, 2.0, 5.0])
    h = torch.tensor([2.0, 3.0, 4.0])
    pairs = [(1.0 if a < b else 0.5 if a == b else 0.0) for a in g.tolist() for b in h.tolist()]
    test = mem.copy_test(g, h)
    assert test.copy == pytest.approx(np.mean(pairs))
    assert test.p < mem.copy_test(h, g).p  # one-sided: closer generated digits give the smaller p


# ---- calibration on real digits -----------------------------------------------------------------------------

@pytest.mark.parametrize("space", mem.SPACES)
def test_a_copier_of_the_training_digits_is_flagged(digits, space):
    test = draw(digits, space, np.random.default_rng(1), copied=1.0)
    assert test.copy > 0.99 and test.p < 1e-6


@pytest.mark.parametrize("space", mem.SPACES)
def test_the_p_value_is_calibrated_when_generated_and_heldout_digits_are_alike(digits, space):
    """Generated and held-out digits both drawn afresh from the digits no run trained on (3,100 + 1,000), apart: the
    null hypothesis holds exactly, and p < 0.05 must come about 5% of the time, not more."""
    d = digits[space]
    pool = torch.cat([d["fresh"], d["heldout"]])
    rng = np.random.default_rng(2)
    flags = []
    for _ in range(DRAWS):
        order = torch.from_numpy(rng.permutation(len(pool)))
        flags.append(mem.copy_test(pool[order[:1000]], pool[order[1000:2000]]).p < ALPHA)
    print(f"{space}: false flags {np.mean(flags):.3f} of {DRAWS} draws, held-out drawn afresh each time")
    assert np.mean(flags) <= 0.07


@pytest.mark.parametrize("space", mem.SPACES)
def test_fresh_real_digits_are_not_flagged_against_the_studys_heldout_set(digits, space):
    """A generator that draws new real digits generalises perfectly. Against the one held-out set every trial
    meets, the check must flag it rarely, per trial (p < 0.05) and per arm (the t-interval over 5 seeds wholly
    above 0.5, what the report flags)."""
    rng = np.random.default_rng(3)
    tests = [draw(digits, space, rng, copied=0.0) for _ in range(DRAWS)]
    per_trial = np.mean([t.p < ALPHA for t in tests])
    copies = np.array([t.copy for t in tests]).reshape(-1, SEEDS)
    lo = copies.mean(axis=1) - scipy.stats.t.ppf(0.975, SEEDS - 1) * scipy.stats.sem(copies, axis=1)
    per_arm = np.mean(lo > 0.5)
    print(f"{space}: false flags per trial {per_trial:.3f} ({DRAWS} draws), per arm {per_arm:.3f} "
          f"({len(lo)} arms of {SEEDS} seeds); mean copy {copies.mean():.4f}, sd over draws {copies.std():.4f}")
    assert per_trial <= 0.07
    assert per_arm <= 0.05
    assert abs(copies.mean() - 0.5) < 0.02  # as close to the training digits as held-out digits are


@pytest.mark.parametrize("space", mem.SPACES)
def test_a_partial_copier_is_flagged_most_of_the_time(digits, space):
    rng = np.random.default_rng(4)
    tests = [draw(digits, space, rng, copied=0.3) for _ in range(50)]
    flagged = np.mean([t.p < ALPHA for t in tests])
    mean = np.mean([t.copy for t in tests])
    print(f"{space}: a 30% copier flagged in {flagged:.0%} of 50 draws, mean copy {mean:.3f}")
    assert flagged >= 0.9


def test_against_the_wrong_training_set_fresh_digits_look_like_copies(digits):
    """Why the check needs the run's own training digits: against the whole train split (the fresh digits among
    them), a perfect generaliser looks like a copier."""
    train, fresh, held = digits["points"][mem.PIXELS]
    everything = torch.cat([train, fresh])
    test = mem.copy_test(mem.nearest_distance(fresh[:1000], everything), mem.nearest_distance(held, everything))
    assert test.copy > 0.99 and test.p < ALPHA


# ---- the picture and the Reference ---------------------------------------------------------------------------

def test_neighbour_tiles_put_each_digit_before_its_nearest_training_digits(digits):
    train, fresh, _ = digits["points"][mem.PIXELS]
    generated = torch.cat([train[[5, 7]], fresh[:8]])
    tiles = mem.neighbour_tiles(generated, train)
    width = mem.NEIGHBOURS_SHOWN + 2
    assert tiles.shape == (mem.ROWS_SHOWN * width, 1, 32, 32) and tiles.dtype == torch.uint8
    rows = tiles.reshape(mem.ROWS_SHOWN, width, 1, 32, 32)
    assert torch.equal(rows[:, 0], generated[:mem.ROWS_SHOWN])
    assert (rows[:, 1] == mem.SEPARATOR_GREY).all()
    assert torch.equal(rows[0, 2], train[5]) and torch.equal(rows[1, 2], train[7])  # a copy's nearest: itself
    d = [mem.nearest_distance(rows[2, j:j + 1], generated[2:3]).item() for j in range(2, width)]
    assert d == sorted(d)  # nearest first


@pytest.fixture(scope="module")
def small(split):
    """A small split (300 train, 200 held-out) so that the Reference's own feature passes stay cheap."""
    return Split(split.train[:300], split.train_labels[:300], split.heldout[::5], split.heldout_labels[::5], "embedded")


def test_the_reference_judges_against_the_digits_given_and_caches_their_features(small, digits, tmp_path, monkeypatch):
    ref = Reference(small, cache_dir=tmp_path, mnist=digits["extractor"])
    trained = small.train[:100]
    copier = ref.score(trained[torch.arange(200) % 100], trained_on=trained)
    names = MetricNames.for_count(200)
    assert copier[names.copy] > 0.99 and copier[names.copy_pixels] > 0.99 and copier[mem.N_TRAIN] == 100
    assert copier[names.copy_p] < ALPHA and copier[names.copy_pixels_p] < ALPHA
    fresh = ref.score(small.train[100:300], trained_on=trained)  # not trained on: not copies of the 100
    assert fresh[names.copy_p] > ALPHA and fresh[names.copy_pixels_p] > ALPHA
    cached = list((tmp_path / "features").glob("*.pt"))
    assert any(torch.load(p, weights_only=True)["tags"].get("set") == "train" for p in cached)
    calls = []
    monkeypatch.setattr(mem, "nearest_distance", lambda *a, **k: calls.append(a) or torch.zeros(len(a[0])))
    ref.score(small.train[100:300], trained_on=trained)
    assert len(calls) == len(mem.SPACES)  # the held-out side once per training set: only the generated side again
    assert not set(ref.score(small.train[:200])) & {names.copy, names.copy_pixels}  # without trained_on: no check
