"""`python -m gan_core.train_extractor [--judge cnn|lenet]`: train an MNIST feature extractor and write its weights.

Thin: parsing and printing; the work is gan_core.judging.extractor_training.
"""

from __future__ import annotations

import argparse
import time

import torch

from gan_core import cli, files
from gan_core.judging import extractor
from gan_core.judging.extractor_training import RECIPES, TRAIN_THREADS, accuracy, recipe_for, train_extractor
from gan_core.training.config import DataConfig

PROG = "python -m gan_core.train_extractor"


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description="Train an MNIST feature extractor on the embedded train split.")
    p.add_argument("--judge", default=extractor.FIRST.key, help=f"which extractor: {', '.join(extractor.JUDGES)} "
                   f"(default {extractor.FIRST.key}; {extractor.SECOND.key} is the second judge)")
    p.add_argument("--epochs", type=_positive, default=None, help="passes over the train split (default: the "
                   "judge's recipe, " + ", ".join(f"{k} {r.epochs}" for k, r in RECIPES.items()) + ")")
    p.add_argument("--seed", type=int, default=None, help="(default: the judge's recipe, "
                   + ", ".join(f"{k} {r.seed}" for k, r in RECIPES.items()) + ")")
    p.add_argument("--train-limit", type=_positive, default=None,
                   help="use only the first N train images (quick tests; the shipped weights use all)")
    p.add_argument("--out", default=None,
                   help="weights file; a .json with the same name goes beside it (default: the judge's own, in "
                   "the package)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, prog=PROG)


def _main(argv: list[str] | None) -> int:
    from gan_core.training import data

    args = parser().parse_args(argv)
    judge = extractor.judge_for(args.judge)
    recipe = recipe_for(judge, args.epochs, args.seed)
    out = args.out or str(judge.weights)
    for path in (out, extractor.info_path(out)):  # refused now, not after the training
        files.check_writable_file(path, "the extractor's weights (--out)")
    split = data.load(DataConfig(source="embedded"))
    t0 = time.perf_counter()

    def on_epoch(epoch: int, loss: float) -> None:
        if not args.quiet:
            print(f"epoch {epoch}/{recipe.epochs}: loss {loss:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)

    model = train_extractor(split, recipe.epochs, recipe.seed, args.train_limit, on_epoch, judge)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, split.heldout, split.heldout_labels)
    info = extractor.save_weights(model, out, {
        "heldout_accuracy": acc, "heldout_images": len(split.heldout), "heldout_fingerprint": split.fingerprint(),
        "train_images": args.train_limit or len(split.train), "data": split.name, **recipe.to_dict(),
        "torch": torch.__version__, "threads": TRAIN_THREADS, "train_seconds": round(seconds, 1),
    }, judge)
    print(f"{out}: held-out accuracy {acc:.2%}, sha256 {info['sha256'][:16]}..., "
          f"{info['bytes'] / 1024:.0f} KiB, {seconds:.1f} s; extractor name mnist-{judge.arch}-{judge.version}-"
          f"{info['sha256'][:8]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
