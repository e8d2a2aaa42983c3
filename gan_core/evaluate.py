"""`python -m gan_core.evaluate RUN_DIR`: metrics of a trained run against held-out MNIST -> RUN_DIR/metrics.json.

`python -m gan_core.evaluate --real-vs-real [--data SOURCE]`: the floor (a class-balanced draw
from the train split against the held-out set), the best score any generator can reach here.

`python -m gan_core.evaluate --samples PATH | --generator module:callable [--out DIR]`: any generator's
samples (a folder of images, an .npy/.npz, or a callable scored in memory), same metrics and floor as trials
(gan_core.judging.scoring).

Thin: parsing and printing; the work is gan_core.judging.evaluation. Errors are one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json

from gan_core import cli
from gan_core.errors import UserError

PROG = "python -m gan_core.evaluate"


def _samples(text: str) -> int:
    from gan_core.judging.metrics import MIN_SAMPLES

    if not text.isdigit() or int(text) < MIN_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be an integer >= {MIN_SAMPLES}, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description="FID/KID/precision/recall/classifier score/mode coverage "
                                                  "against held-out MNIST, under both MNIST judges.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run folder (config.json + checkpoint.pt)")
    p.add_argument("--real-vs-real", action="store_true",
                   help="print the floor: a class-balanced train draw vs the held-out set (no run folder)")
    p.add_argument("--n", type=_samples, default=None,
                   help="generated samples (default: the held-out size: 1000 embedded, 10000 full MNIST)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the real-vs-real floor")
    p.add_argument("--inception", action="store_true",
                   help="add Inception-v3 metrics (suffix _inception), weights from torch's hub cache")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="torch-fidelity's Inception-v3 weights file; implies --inception")
    p.add_argument("--cache-dir", default=None, help="real-feature cache (default: $MNIST_GAN_BENCH_CACHE or "
                                                     "~/.cache/mnist-gan-bench)")
    # no argparse choices: importing gan_core.training.config imports torch (seconds); DataConfig checks the value
    p.add_argument("--data", default="embedded", help="whose held-out set judges: embedded, mnist, folder")
    p.add_argument("--data-root", default=None, help="the data folder (mnist, folder)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    g = p.add_argument_group("score your own GAN", SAMPLE_RULES)
    g.add_argument("--samples", metavar="PATH", default=None,
                   help="a folder of .png/.jpg/.jpeg images, or an .npy/.npz file of images")
    g.add_argument("--generator", metavar="MODULE:CALLABLE", default=None,
                   help="a callable: latent batch float32 [B, LATENT_DIM] (N(0, 1), the trials' evaluation noise) -> "
                        "images [B, ...] as a tensor or array; imported from the working folder or sys.path")
    g.add_argument("--latent-dim", type=_positive, default=None,
                   help="with --generator: latent size (default: the callable's latent_dim attribute, else 100)")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="with --samples/--generator: write DIR/metrics.json and DIR/samples.png (a results folder "
                        "for the report's scoreboard, e.g. results/NAME)")
    return p


SAMPLE_RULES = ("Pixels: uint8 0-255, or float in [-1, 1] when any value is negative, else in [0, 1] (detected and "
                "printed; NaN, inf or other values are refused). Arrays: N x H x W, N x 1 x H x W or N x H x W x 1 "
                "(3 channels are averaged to grey). Image files: sorted by name (zero-pad numbers to keep an order), "
                "any mode, made 8-bit grey as a --data folder's digits are (16-bit scaled, alpha on black). Images "
                "must be square; any other size than 32x32 is resized like the held-out digits (MNIST's 28x28 to "
                "32x32: torch bilinear, antialiased, rounded to uint8). The first --n samples are scored (default 1000 "
                "on the embedded set, as trials, or all when fewer).")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, prog=PROG)


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    modes = [args.run_dir is not None, args.real_vs_real, args.samples is not None, args.generator is not None]
    if sum(modes) != 1:
        raise UserError("give RUN_DIR, --real-vs-real, --samples or --generator (exactly one)")
    if args.samples is not None or args.generator is not None:
        return _score(args)
    if args.out is not None or args.latent_dim is not None:
        raise UserError("--out and --latent-dim go with --samples or --generator")
    from gan_core.training.run_folder import METRICS, NEIGHBOURS, RunFolder

    if args.run_dir is not None:  # fail before the slow imports
        RunFolder(args.run_dir).check_finished_run(METRICS)
    from gan_core.judging import evaluation
    from gan_core.training import data
    from gan_core.training.config import DataConfig

    inception = args.inception or args.inception_weights is not None
    if args.real_vs_real:
        split = data.load(DataConfig(source=args.data, root=args.data_root))
        result = evaluation.floor(split, args.n, device=args.device, cache_dir=args.cache_dir, inception=inception,
                                  inception_weights=args.inception_weights)
        print(json.dumps(result, indent=2) if args.json else _table(result))
        return 0
    result = evaluation.evaluate_run(args.run_dir, args.n, device=args.device, cache_dir=args.cache_dir,
                                     inception=inception, inception_weights=args.inception_weights,
                                     with_floor=args.floor)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(result, result.get("floor")))
        print(f"wrote {args.run_dir.rstrip('/')}/{METRICS} and {NEIGHBOURS} ({result['seconds']:.1f} s)")
    return 0


def _score(args) -> int:
    from gan_core import files, plugins

    if args.latent_dim is not None and args.generator is None:
        raise UserError("--latent-dim goes with --generator")
    if args.out is not None:
        files.check_writable(args.out, "the results (--out DIR)")
    samples = args.samples if args.generator is None else plugins.load(args.generator, "--generator")
    from gan_core.judging.scoring import score
    from gan_core.training.config import DataConfig

    result = score(samples, n=args.n, latent_dim=args.latent_dim, data_source=DataConfig(source=args.data,
                   root=args.data_root), device=args.device, cache_dir=args.cache_dir, with_floor=args.floor,
                   name=args.generator, out=args.out, inception=args.inception or args.inception_weights is not None,
                   inception_weights=args.inception_weights)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    given = result["input"]
    print(f"{given['kind']} {given['source']}: {given['read']}; pixels {given['pixels']} (detected); scored "
          f"{given['n_scored']} of {given['n_given']}")
    print(_table(result, result.get("floor")))
    proto = result["protocol"]
    print(f"protocol: judge {proto['judge']}, held-out {proto['heldout']}, {proto['n_generated']} vs "
          f"{proto['n_real']} images (in full: --json or metrics.json)")
    if args.out is not None:
        print(f"wrote {args.out.rstrip('/')}/metrics.json and samples.png ({result['seconds']:.1f} s)")
    return 0


def _table(result: dict, floor: dict | None = None) -> str:
    """metric, value (and floor) per line; the per-digit shares on one line."""
    head = (f"{result['extractor']}: {result['n_generated']} generated vs {result['n_real']} real "
            f"({result['real_set']})")
    for key, name in result.items():  # every other judge (the second MNIST judge, Inception-v3): its metrics' suffix
        if key.startswith("extractor_"):
            head += f"; {name} (*{key.removeprefix('extractor')})"
    lines = [head, f"{'metric':<24}{'value':>12}" + (f"{'floor':>12}" if floor else "")]
    shares = []
    for key, value in result.items():
        if not isinstance(value, float) or key == "seconds":
            continue
        if key.startswith("share"):
            shares.append(f"{key.rsplit('_', 1)[-1]}:{value:.3f}")
            continue
        row = f"{key:<24}{value:>12.5g}"
        if floor and isinstance(floor.get(key), float):
            row += f"{floor[key]:>12.5g}"
        lines.append(row)
    if shares:
        lines.append("digit shares  " + " ".join(shares))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
