"""Which hidden units of a saved conv run still take part: per conv layer, at the free equilibrium
of the first --images validation images, the channels none of whose units is ever above 0 (a
hard-sigmoid unit below 0 passes no signal and gets no update: a channel off on every image has
stopped learning), the share of units above 0, and the share at the top (1).

    python benchmarks/conv_units.py STATE [STATE ...] [--images 256]

STATE: --state files of benchmarks/fashion_mnist_conv.py (each is rebuilt with its own settings).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist_conv import build, read_state, saved_settings

from aeqprop.data import Dataset, load_dataset


@functools.cache
def fashion_mnist(seed: int, data_dir: str | None) -> Dataset:
    """The split of a seed, read once for all the saved runs that share it."""
    return load_dataset("fashion-mnist", seed=seed, data_dir=data_dir)


def units(state: Path, images: int, data_dir: str | None) -> tuple[str, int, list[tuple[str, int, int, float, float]]]:
    """(settings text, epochs saved, per hidden layer (shape, channels, channels never on, share on, share at 1))."""
    meta, part = read_state(state)
    settings = saved_settings(meta)
    data = fashion_mnist(settings.seed, data_dir)
    sub = build(settings, data, settings.dtype)
    sub.set_parameters(part["theta"])
    x = data.x_val[:images]
    layers: list[list[np.ndarray]] = []
    for i in range(0, len(x), settings.batch):
        sub.clamp(x[i : i + settings.batch])
        sub.relax()
        layers.append([np.array(s) for s in sub.state()[1:-1]])  # the hidden layers
    rows = []
    for l in range(len(layers[0])):
        a = np.concatenate([batch[l] for batch in layers])
        a = a.reshape(len(a), a.shape[1], -1)  # (images, channels, positions); a dense layer has 1 position
        on = a > 0.0
        dead = int(np.count_nonzero(~on.any(axis=(0, 2))))
        shape = "x".join(map(str, np.shape(layers[0][l])[1:]))
        rows.append((shape, a.shape[1], dead, float(on.mean()), float((a >= 1.0).mean())))
    text = f"eps {settings.eps}, b {settings.beta:g}" + (f", {settings.augment}" if settings.augment != "none" else "")
    return text, len(meta["val"]), rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("states", type=Path, nargs="+", help="--state files of benchmarks/fashion_mnist_conv.py")
    ap.add_argument("--images", type=int, default=256, help="validation images relaxed")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    limiter = limit_blas_threads(1)  # noqa: F841  (kept alive for the run)
    cmd = "python benchmarks/conv_units.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n`{cmd.strip()}`: free equilibria of the first {args.images} validation images\n")
    print("| saved run | epochs | hidden layer | channels never above 0 | share of units above 0 | share at 1 |")
    print("|---|---|---|---|---|---|")
    for state in args.states:
        text, epochs, rows = units(state, args.images, args.data_dir)
        for shape, channels, dead, on, top in rows:
            print(f"| {state.name} ({text}) | {epochs} | {shape} | {dead} of {channels} | {on:.3f} | {top:.3f} |")


if __name__ == "__main__":
    main()
