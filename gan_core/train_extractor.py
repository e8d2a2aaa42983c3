"""`python -m gan_core.train_extractor`: train the MNIST feature extractor, deterministically.

Trains on the embedded data's train split only (the held-out images judge the generators, so the
extractor must never have seen them), on the CPU, with fixed seeds and torch's deterministic
algorithms: two runs on one machine give the same weights, byte for byte. Writes the weights and a
JSON beside them (SHA-256, held-out accuracy, settings); by default into the package, where
gan_core.extractor loads them from.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gan_core import cli, extractor
from gan_core.config import DataConfig
from gan_core.data import Split

PROG = "python -m gan_core.train_extractor"
EPOCHS = 7
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
MAX_SHIFT = 2  # random translation in pixels: the cheapest augmentation that helps with 4,000 digits
SEED = 0
TRAIN_THREADS = 1


@contextlib.contextmanager
def _deterministic(seed: int):
    """Fixed seed, deterministic kernels and one CPU thread inside; the caller's settings restored after.

    One thread because CPU kernels split their sums by thread count: two threads and one give
    different weights (seen), so a machine's core count would otherwise change the shipped file. It
    is also faster here: a second busy process on 2 cores made 2 threads ~9x slower than 1 (seen).
    """
    was_deterministic, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(TRAIN_THREADS)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(was_threads)


def shift(images: torch.Tensor, max_shift: int, rng: torch.Generator) -> torch.Tensor:
    """Translate every uint8 image by its own random offset in [-max_shift, max_shift] px, zero fill."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=rng)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=rng)
    rows = dy + torch.arange(h).view(1, h, 1)
    cols = dx + torch.arange(w).view(1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1), 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: extractor.MnistCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    was_training = model.training
    model.eval()
    correct = sum(int((model(images[i:i + batch_size])[1].argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    model.train(was_training)
    return correct / len(images)


def train_extractor(split: Split, epochs: int = EPOCHS, seed: int = SEED, train_limit: int | None = None,
                    on_epoch: Callable[[int, float], None] | None = None) -> extractor.MnistCNN:
    """Train MnistCNN on ``split.train`` (the first ``train_limit`` images if given); eval mode on return."""
    images = split.train if train_limit is None else split.train[:train_limit]
    labels = split.train_labels if train_limit is None else split.train_labels[:train_limit]
    with _deterministic(seed):
        model = extractor.MnistCNN()
        rng = torch.Generator().manual_seed(seed + 1)  # batch order and augmentation
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        steps_per_epoch = -(-len(images) // BATCH_SIZE)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=epochs * steps_per_epoch)
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=rng)
            total = torch.zeros(())
            for i in range(0, len(images), BATCH_SIZE):
                idx = order[i:i + BATCH_SIZE]
                _, logits = model(shift(images[idx], MAX_SHIFT, rng))
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach() * len(idx)
            if on_epoch is not None:
                on_epoch(epoch + 1, float(total) / len(images))
    return model.eval()


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
    from gan_core import data

    args = parser().parse_args(argv)
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
