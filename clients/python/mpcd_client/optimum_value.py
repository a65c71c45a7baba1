"""The optimum's own value as an mpcd value network: a yardstick for the planner, never shipped.

    python -m mpcd_client.optimum_value --out FILE [--hidden 64,64] [--activation relu]
                                        [--epochs 1500] [--seed 0]
    python -m mpcd_client.optimum_value --compare VALUE.safetensors [...]

mpcd_client.optimum solves Pendulum-v1 by dynamic programming with the true model. Its table V_0,
the least cost of the 200 steps to come from each grid state, is what a value at the end of the
planner's rollouts would ideally say (a swing-up takes well under 200 steps, so V_0 is the
cost-to-go of every state the planner visits). This module fits that table with mpcd's network by
least squares over the 361 x 161 grid (Adam, step size 3e-3, then 3e-4 for the last third of the
epochs) and writes it in mpcd's value format (discount 1, floor 0). Put under `[value]`, it
measures how far a value that knew the optimum would take the planner, and at what compute: the
ceiling of what `mpcd train --value` could give. It needs the true model on a grid, so it is a
measuring device for the pendulum, not a way to learn a value for another task.

--compare measures pendulum value networks (`mpcd train --value`'s, say) against that table over
the whole grid and where |speed| < 4: root-mean-square error, mean error (a learned value's bias:
positive, it thinks states dearer than they are) and correlation, the network's floor applied as
mpcd applies it. A discounted value is compared as it is: its discount lowers it below the table.

Exit status: 0 written or compared; 2 a bad flag (before any work); 78 a --compare file that is
not a pendulum value network, named with the reason.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .torch_networks import MAX_PARAMETERS, MpcdMLP, features, load, parameter_count, save_beside


def grid_states():
    """Every (angle, speed) of the optimum's grid, one row each, in V's row-major order."""
    from .optimum import ANGLES, SPEEDS

    th, thdot = np.meshgrid(ANGLES, SPEEDS, indexing="ij")
    return np.stack([th.ravel(), thdot.ravel()], axis=1)


def fit(values, states, hidden=(64, 64), activation="relu", epochs=1500, seed=0, batch=4096, out=print):
    """An MpcdMLP fitted to `values` (one per row of `states`) and the scale its output is
    multiplied by; with the fit's root-mean-square and largest error in value units."""
    torch.manual_seed(seed)
    inputs = torch.from_numpy(features("pendulum", states))
    scale = float(np.max(np.abs(values))) or 1.0
    targets = torch.tensor(np.ravel(values) / scale, dtype=torch.float32)
    module = MpcdMLP(3, list(hidden), 1, activation)
    optimiser = torch.optim.Adam(module.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(seed)
    started = time.monotonic()
    for epoch in range(epochs):
        if epoch == (2 * epochs) // 3:
            for group in optimiser.param_groups:
                group["lr"] = 3e-4
        order = torch.randperm(len(inputs), generator=generator)
        for first in range(0, len(inputs), batch):
            rows = order[first:first + batch]
            loss = ((module(inputs[rows])[0][:, 0] - targets[rows]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if (epoch + 1) % max(1, epochs // 10) == 0:
            out(f"optimum value: epoch {epoch + 1}/{epochs}, rms error {scale * loss.item() ** 0.5:.2f} "
                f"({time.monotonic() - started:.0f} s)")
    with torch.no_grad():
        errors = (module(inputs)[0][:, 0] - targets).numpy() * scale
    return module, scale, float(np.sqrt(np.mean(errors**2))), float(np.max(np.abs(errors)))


def write(module, scale, path):
    """mpcd's value format, written beside `path` and renamed over it (a reader never sees half)."""
    save_beside(module, path, "value", "pendulum", extra={"value_scale": repr(scale), "discount": "1.0", "min_value": "0"})


def optimum_value_network(path, hidden=(64, 64), activation="relu", epochs=1500, seed=0, out=print):
    """Fits V_0 of mpcd_client.optimum and writes it to `path`; returns (rms, largest) error."""
    from .optimum import value_tables

    module, scale, rms, largest = fit(value_tables()[0], grid_states(), hidden, activation, epochs, seed, out=out)
    write(module, scale, path)
    return rms, largest


def read_value(path):
    """A pendulum value network file as (module, scale, floor, discount); ValueError naming why not."""
    module, metadata = load(path)
    if metadata.get("kind") != "value" or metadata.get("task") != "pendulum":
        raise ValueError(f"{path}: a {metadata.get('kind')} network for {metadata.get('task')}, not a pendulum value")
    # what mpcd's ValueNetwork refuses, refused here too: figures for a file mpcd would not load say nothing
    if metadata.get("inputs") != "3" or module.mean.out_features != 1:
        raise ValueError(f"{path}: takes {metadata.get('inputs')} inputs and gives {module.mean.out_features} outputs; "
                         "a pendulum value takes 3 and gives 1")
    try:
        scale = float(metadata["value_scale"])
        floor = None if metadata.get("min_value", "none") == "none" else float(metadata["min_value"])
        discount = float(metadata.get("discount", "1"))
    except (KeyError, ValueError):
        raise ValueError(f"{path}: value_scale, min_value or discount is not a number") from None
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{path}: value_scale {metadata['value_scale']} must be a positive number")
    if floor is not None and not np.isfinite(floor):
        raise ValueError(f"{path}: min_value {metadata['min_value']} must be a number or none")
    if not 0 < discount <= 1:
        raise ValueError(f"{path}: discount {metadata.get('discount')} must be in (0, 1]")
    return module, scale, floor, discount


def compare(network, values, states):
    """How `network` (read_value's tuple) departs from `values` over `states`: rms, mean error and
    correlation, everywhere and where |speed| < 4."""
    module, scale, floor, _ = network
    with torch.no_grad():
        predicted = scale * module(torch.from_numpy(features("pendulum", states)))[0][:, 0].numpy().astype(float)
    if floor is not None:
        predicted = np.maximum(predicted, floor)
    values = np.ravel(values)
    result = {}
    for name, rows in (("all", np.ones(len(values), bool)), ("slow", np.abs(states[:, 1]) < 4)):
        error = predicted[rows] - values[rows]
        result[name] = {"rms": float(np.sqrt(np.mean(error**2))), "mean": float(np.mean(error)),
                        "correlation": float(np.corrcoef(predicted[rows], values[rows])[0, 1])}
    return result


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.optimum_value", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--out", help="the value network to write")
    task.add_argument("--compare", nargs="+", metavar="VALUE", help="pendulum value networks to measure against the optimum's")
    parser.add_argument("--hidden", help="hidden widths, comma-separated (default 64,64)")
    parser.add_argument("--activation", choices=["relu", "tanh"], help="(default relu)")
    parser.add_argument("--epochs", type=int, help="(default 1500)")
    parser.add_argument("--seed", type=int, help="(default 0)")
    args = parser.parse_args(argv)
    training = [f"--{name}" for name in ("hidden", "activation", "epochs", "seed") if getattr(args, name) is not None]
    if args.compare:
        if training:
            parser.error(f"{', '.join(training)}: for fitting with --out, not for --compare")
        return args
    args.hidden = args.hidden or "64,64"
    args.activation = args.activation or "relu"
    args.epochs = 1500 if args.epochs is None else args.epochs
    args.seed = 0 if args.seed is None else args.seed
    try:
        args.hidden = tuple(int(w) for w in args.hidden.split(","))
    except ValueError:
        parser.error(f"--hidden {args.hidden!r}: comma-separated whole numbers, like 64,64")
    if not all(w > 0 for w in args.hidden):
        parser.error(f"--hidden {args.hidden}: every width must be at least 1")
    if parameter_count(3, args.hidden, 1) > MAX_PARAMETERS:
        parser.error(f"--hidden {args.hidden}: more than mpcd's {MAX_PARAMETERS} parameters")
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: at least 1")
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed {args.seed}: from 0 to 2^63 - 1")
    if args.out.endswith(os.sep) or Path(args.out).is_dir():
        parser.error(f"--out {args.out}: a folder, not a file")
    folder = Path(args.out).resolve().parent
    if not folder.is_dir():
        parser.error(f"--out {args.out}: no folder {folder}")
    if not os.access(folder, os.W_OK):
        parser.error(f"--out {args.out}: the folder {folder} is not writable")
    return args


def main(argv=None):
    args = parse(argv)
    if args.compare:
        try:
            networks = [read_value(path) for path in args.compare]
        except ValueError as error:
            print(f"mpcd_client.optimum_value: {error}", file=sys.stderr)
            return 78
        from .optimum import value_tables

        values, states = value_tables()[0], grid_states()
        print(f"against the optimum's cost-to-go (range {np.min(values):.0f}-{np.max(values):.0f}): rms / mean error / correlation, "
              "all grid states | |speed| < 4")
        for path, network in zip(args.compare, networks):
            result = compare(network, values, states)
            cells = " | ".join(f"{r['rms']:.1f} / {r['mean']:+.1f} / {r['correlation']:.3f}" for r in result.values())
            print(f"{path} (discount {network[3]:g}): {cells}")
        return 0
    rms, largest = optimum_value_network(args.out, args.hidden, args.activation, args.epochs, args.seed)
    print(f"wrote {args.out}: the optimum's value V_0, rms error {rms:.2f}, largest {largest:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
