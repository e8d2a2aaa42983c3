"""Does a generator copy its training digits? Nearest-neighbour distances, generated against new real digits.

FID cannot tell a generator that reproduces its 900 training digits from one that generalises: both match the
data's statistics. The check here asks, in one space at a time, how far each generated digit is from its nearest
*training* digit (the digits the run trained on), against how far each held-out digit (real, never trained on) is
from its nearest training digit:

    copy = P(d_generated < d_heldout)   (ties count half)

estimated as the Mann-Whitney U of the two sets of distances over n_generated * n_heldout
(``scipy.stats.mannwhitneyu``), with the one-sided p-value of the alternative "generated distances are
stochastically smaller". 0.5: generated digits are as close to the training digits as new real digits are; near
1: copies (or near-copies) of training digits; below 0.5: farther than real digits (blurry or underfit samples,
which is no memorisation). This is Meehan et al. 2020's C_T test ("A non-parametric test to detect data-copying in
generative models", AISTATS) without its cells: one U statistic over all samples, not one per region of the
training set, so a generator that copies in some regions and underfits in others can average out.

Two spaces, both L2: the judge's features (the MNIST extractor's ``FeatureSet.features``) and raw pixels (uint8
images as float, 0..255). Distances are computed with ``torch.cdist`` a block of the distance matrix at a time, so
that 10k generated digits against the 60k of full MNIST never hold the whole 10k x 60k matrix. Pure functions of
tensors: no I/O, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.stats
import torch

from gan_core.judging.metrics import MetricNames

BLOCK_ENTRIES = 1 << 24  # distance-matrix entries per block (64 MB of float32), whatever the sizes
BLOCK_ROWS = 1024  # queries per block: square-ish blocks keep cdist's matrix product efficient
FEATURES, PIXELS = "features", "pixels"  # the two spaces
SPACES = (FEATURES, PIXELS)
N_TRAIN = "n_train"  # a result's key: how many training digits the generated ones were compared with
NEIGHBOURS_SHOWN = 4  # training digits beside each generated digit in the picture
ROWS_SHOWN = 8  # generated digits in the picture
SEPARATOR_GREY = 96  # the separator tile between a generated digit and its neighbours (digits are white on black)


def as_points(x: torch.Tensor) -> torch.Tensor:
    """Rows to measure distances between: uint8 images [N, C, H, W] -> float32 pixels [N, C*H*W] (0..255);
    features [N, D] -> float32."""
    return x.reshape(len(x), -1).float() if x.dtype == torch.uint8 else x.float()


def nearest(queries: torch.Tensor, reference: torch.Tensor, k: int = 1,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(distances [N, k], indices [N, k]) of each query's k nearest reference rows (L2), nearest first, on the CPU.

    Either side may be uint8 images or float features (``as_points``). The distance matrix is computed on
    ``device`` a block of BLOCK_ROWS x (BLOCK_ENTRIES / BLOCK_ROWS) at a time and reduced to a running top k, so
    memory does not grow with N x M; uint8 images are converted to float a block at a time too. cdist's
    matrix-product form rounds in float32: an exact copy's distance comes out near 0, not always exactly 0, far
    below the distance between two different digits."""
    if len(reference) < k:
        raise ValueError(f"{k} nearest neighbours asked among {len(reference)} reference rows")
    cols = max(1, BLOCK_ENTRIES // BLOCK_ROWS)
    dist, index = [], []
    for i in range(0, len(queries), BLOCK_ROWS):
        q = as_points(queries[i:i + BLOCK_ROWS].to(device))
        best_d = torch.full((len(q), 0), float("inf"), device=device)
        best_i = torch.zeros((len(q), 0), dtype=torch.long, device=device)
        for j in range(0, len(reference), cols):
            d = torch.cdist(q, as_points(reference[j:j + cols].to(device)))
            cand_d = torch.cat([best_d, d], dim=1)
            cand_i = torch.cat([best_i, torch.arange(j, j + d.shape[1], device=device).expand(len(q), -1)], dim=1)
            best_d, pick = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False)
            best_i = cand_i.gather(1, pick)
        # note: .cpu() syncs with the device once per block of rows; blocks are large, so this costs little
        dist.append(best_d.cpu())
        index.append(best_i.cpu())
    return torch.cat(dist), torch.cat(index)


def nearest_distance(queries: torch.Tensor, reference: torch.Tensor, device: torch.device | str = "cpu") \
        -> torch.Tensor:
    """Each query's distance to its nearest reference row: float32 [N] on the CPU."""
    return nearest(queries, reference, 1, device)[0][:, 0]


@dataclass(frozen=True)
class CopyTest:
    copy: float  # P(d_generated < d_heldout), ties half: 0.5 = as close as new real digits, 1 = copies
    p: float  # one-sided: generated distances stochastically smaller than held-out ones


def copy_test(d_generated: torch.Tensor, d_heldout: torch.Tensor) -> CopyTest:
    """The Mann-Whitney test of nearest-training-digit distances, generated against held-out (scipy's)."""
    g, h = d_generated.double().cpu().numpy(), d_heldout.double().cpu().numpy()
    # U of the held-out sample counts the pairs where the held-out distance is the larger (ties half): exactly the
    # pairs where the generated digit is the closer one. "greater": held-out distances stochastically larger.
    res = scipy.stats.mannwhitneyu(h, g, alternative="greater")
    return CopyTest(float(res.statistic) / (len(g) * len(h)), float(res.pvalue))


def memorization(generated: dict[str, torch.Tensor], train: dict[str, torch.Tensor],
                 d_heldout: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> dict[str, float | int]:
    """The copy statistic and its p-value in both spaces, named with the generated count (MetricNames).

    Each dict maps a space (FEATURES, PIXELS) to that space's rows: the generated digits', the training digits' and
    the held-out digits' distances to their nearest training digit (``nearest_distance``, computed once per
    training set by the caller). ``device``: where the distances are computed."""
    n = {len(x) for x in generated.values()}
    if len(n) != 1:
        raise ValueError(f"generated features and pixels must count the same digits, got {sorted(n)}")
    names = MetricNames.for_count(n.pop())
    keys = {FEATURES: (names.copy, names.copy_p), PIXELS: (names.copy_pixels, names.copy_pixels_p)}
    out: dict[str, float | int] = {N_TRAIN: len(train[PIXELS])}
    for space in SPACES:
        test = copy_test(nearest_distance(generated[space], train[space], device), d_heldout[space])
        out[keys[space][0]], out[keys[space][1]] = test.copy, test.p
    return out


def neighbour_tiles(generated: torch.Tensor, train: torch.Tensor, rows: int = ROWS_SHOWN,
                    k: int = NEIGHBOURS_SHOWN) -> torch.Tensor:
    """uint8 tiles [rows * (k + 2), 1, H, W] for a grid of k + 2 columns: per row a generated digit, a grey
    separator, then its k nearest training digits in pixels, nearest first."""
    shown = generated[:rows]
    _, index = nearest(shown, train, k)
    separator = torch.full_like(shown[:1], SEPARATOR_GREY)
    tiles = [torch.cat([g[None], separator, train[index[r]]]) for r, g in enumerate(shown)]
    return torch.cat(tiles)
