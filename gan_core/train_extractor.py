"""`python -m gan_core.train_extractor`: train the MNIST feature extractor and write its weights.

Thin: parsing and printing; the work is gan_core.judging.extractor_training.
"""

from __future__ import annotations

import argparse
import time

import torch

from gan_core import cli, files
from gan_core.judging import extractor
from gan_core.judging.extractor_training import (
    BATCH_SIZE,
    EPOCHS,
    LR,
    MAX_SHIFT,
    SEED,
    TRAIN_THREADS,
    WEIGHT_DECAY,
    accuracy,
    train_extractor,
)
from gan_core.training.config import DataConfig

PROG = "python -m gan_core.train_extractor"


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description="Train the MNIST feature extractor on the embedded train split.")
    p.add_argument("--epochs", type=_positive, default=EPOCHS, help=f"passes over the train split (default {EPOCHS})")
    p.add_argument("--seed", type=int, default=SEED, help=f"(default {SEED})")
    p.add_argument("--train-limit", type=_positive, default=None,
                   help="use only the first N train images (quick tests; the shipped weights use all)")
    p.add_argument("--out", default=str(extractor.WEIGHTS),
                   help="weights file; a .json with the same name goes beside it (default: the package's)")
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
    for path in (args.out, extractor.info_path(args.out)):  # refused now, not after the training
        files.check_writable_file(path, "the extractor's weights (--out)")
    split = data.load(DataConfig(source="embedded"))
    t0 = time.perf_counter()

    def on_epoch(epoch: int, loss: float) -> None:
        if not args.quiet:
            print(f"epoch {epoch}/{args.epochs}: loss {loss:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)

    model = train_extractor(split, args.epochs, args.seed, args.train_limit, on_epoch)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, split.heldout, split.heldout_labels)
    info = extractor.save_weights(model, args.out, {
        "heldout_accuracy": acc, "heldout_images": len(split.heldout), "heldout_fingerprint": split.fingerprint(),
        "train_images": args.train_limit or len(split.train), "data": split.name,
        "epochs": args.epochs, "seed": args.seed, "batch_size": BATCH_SIZE, "lr": LR,
        "weight_decay": WEIGHT_DECAY, "max_shift": MAX_SHIFT,
        "torch": torch.__version__, "threads": TRAIN_THREADS, "train_seconds": round(seconds, 1),
    })
    print(f"{args.out}: held-out accuracy {acc:.2%}, sha256 {info['sha256'][:16]}..., "
          f"{info['bytes'] / 1024:.0f} KiB, {seconds:.1f} s; extractor name mnist-cnn-{extractor.VERSION}-"
          f"{info['sha256'][:8]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
