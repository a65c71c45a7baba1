"""Trains mpcd's networks from its tick recordings with PyTorch, on one process or many.

    python -m mpcd_client.learn RECORDING... --kind policy --out pendulum_policy.safetensors
    torchrun --standalone --nproc_per_node 2 -m mpcd_client.learn RECORDING... --out policy.safetensors
    mpcctl policy load policy.safetensors          # into the running daemon, no restart

The recorded plans are the planner's distributions after its iterations (plan_mean, plan_std:
docs/recording.md), so distillation needs no planning of its own:

- `policy`: the first step of each plan; the loss is mpcd train's, KL(plan || network), summed over
  the actions and averaged over the rows;
- `plan`: all H steps (an amortised plan of the recording's horizon), the same loss;
- `value`: the plan's cost (`plan_cost`: its H-step cost, and the value's term at its end when the
  recording ran with one) by least squares, V = value_scale x output. It is one round of fitted value
  iteration: record again with this value and learn again to look further.

A tick whose plan ran no iterations (the adaptive rule judged the prior's proposal good enough) has
the prior's own proposal as its plan; `--refined-only` leaves those out.

Under torchrun (WORLD_SIZE > 1) it runs DistributedDataParallel, gloo on CPU and NCCL on GPUs. Every
process reads the rows; each epoch's shuffle is the same on every process and each minibatch of
--batch rows is split evenly between them, so the averaged gradient, and therefore every step, is
the single-process one up to rounding. Rank 0 prints, and writes the network.
`--init FILE` continues from a network (the shipped one, say) rather than a seeded new one.
Exit status: 0 written, 2 a bad flag, 78 a recording or network it cannot use (torchrun itself exits
1 when a process fails, after the process's message).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .recordings import RecordingError, read_recordings
from .torch_networks import MAX_PARAMETERS, TASKS, MpcdMLP, load, parameter_count, save_beside, squash


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m mpcd_client.learn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recordings", nargs="+", help="recording files (mpcd-*.arrows) or folders of them")
    p.add_argument("--kind", choices=["policy", "plan", "value"], default="policy")
    p.add_argument("--out", required=True, help="the safetensors file to write (mpcd's network format)")
    p.add_argument("--init", help="start from this mpcd network file instead of new weights")
    p.add_argument("--refined-only", action="store_true", help="leave out ticks whose plan ran no iterations")
    p.add_argument("--hidden", default=None, help="hidden widths, comma-separated (default 64,64; 48 for a value)")
    p.add_argument("--activation", choices=["tanh", "relu"], default=None, help="default tanh (relu for a value)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=256, help="rows per optimiser step, over all processes")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's step size at the start; it falls to 0 on a cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", help="also write the run's losses as JSON here")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch < 1:
        p.error(f"--batch must be at least 1, got {args.batch}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a positive number, got {args.lr}")
    if not 0 <= args.seed < 2 ** 63:
        p.error(f"--seed must be a whole number from 0 to 2^63 - 1, got {args.seed}")
    if args.hidden is not None:
        try:
            widths = [int(w) for w in args.hidden.split(",")]
        except ValueError:
            widths = []
        if not widths or any(w < 1 for w in widths) or parameter_count(1, widths, 1) > MAX_PARAMETERS:
            p.error(f"--hidden must list positive layer widths, comma-separated, of at most {MAX_PARAMETERS} "
                    f"parameters in all (mpcd's limit), got {args.hidden!r}")
    for flag, path in (("--out", args.out), ("--summary", args.summary)):
        if path is not None:
            folder = Path(path).resolve().parent
            if not folder.is_dir() or not os.access(folder, os.W_OK) or Path(path).is_dir():
                p.error(f"{flag} {path}: cannot write a file there (is {folder} a folder this user may write?)")
    return args


def kl_loss(mean, std, target_mean, target_std):
    """KL(target || network) per row, summed over outputs (mpcd train's loss, MLPTraining.swift)."""
    return (torch.log(std / target_std) + (target_std ** 2 + (mean - target_mean) ** 2) / (2 * std ** 2) - 0.5).sum(dim=1)


class Learner:
    """One kind of network, its data from the recordings, and its loss."""

    def __init__(self, args, data, device):
        self.kind, self.data, self.notes = args.kind, data, []
        task, m = data.task, data.action_dimension
        if task in TASKS and TASKS[task][1] != m:
            raise RecordingError(f"a {task} recording with {m} actions: mpcd's {task} has {TASKS[task][1]}")
        if data.action_low is not None:
            bounds = (data.action_low, data.action_high)
        elif task in TASKS:
            bounds = (TASKS[task][2], TASKS[task][3])
        else:
            raise RecordingError(f"task {task}: the recordings carry no action bounds (recorded by an mpcd before "
                                 "action_low and action_high): record again")
        keep = np.ones(data.rows, dtype=bool)
        if args.refined_only:
            keep &= data.iterations > 0
            self.notes.append(f"{int((~keep).sum())} unrefined (0 iterations) left out")
        if args.kind == "value":
            self.outputs = 1
            if len(set(data.discounts)) > 1 or len(set(data.value_files)) > 1:
                raise RecordingError("a value learns from plan costs of one discount and one [value] network; these "
                                     f"recordings have discounts {sorted(set(data.discounts))} and value files "
                                     f"{sorted(set(data.value_files))}: learn from one configuration's recordings")
        else:
            self.steps = 1 if args.kind == "policy" else data.horizon
            self.outputs = self.steps * m
            low, high = np.array(bounds[0], np.float32), np.array(bounds[1], np.float32)
            width = np.tile(high - low, self.steps)
            outside = ((data.plan_mean[:, :self.outputs] < np.tile(low, self.steps) - 1e-3 * width)
                       | (data.plan_mean[:, :self.outputs] > np.tile(high, self.steps) + 1e-3 * width)).any(axis=1)
            if outside[keep].any():
                self.notes.append(f"{int(outside[keep].sum())} with a plan outside the action bounds left out")
            keep &= ~outside
            # the bounds of every output (each plan step's actions), for squash
            self.low = torch.tensor(np.tile(low, self.steps), device=device)
            self.high = torch.tensor(np.tile(high, self.steps), device=device)
            if keep.any() and np.ptp(data.plan_std[keep, :self.outputs]) == 0:
                self.notes.append("plan_std is the same on every row (the planner did not adapt its std): the std head learns it")
        if not keep.any():
            raise RecordingError("no ticks left to learn from")
        self.rows = int(keep.sum())
        if args.kind == "value":
            cost = data.plan_cost[keep]
            self.targets = (torch.from_numpy(cost.astype(np.float32)).unsqueeze(1).to(device),)
            self.scale = float(max(1e-6, np.mean(np.abs(cost))))
            self.minimum = "0.0" if np.all(cost >= 0) else "none"
        else:
            self.targets = (torch.from_numpy(data.plan_mean[keep, :self.outputs].copy()).to(device),
                            torch.from_numpy(data.plan_std[keep, :self.outputs].copy()).to(device))
        self.inputs = torch.from_numpy(data.inputs[keep].copy()).to(device)
        self.module, self.version = self.network(args, data)
        self.module.to(device)

    def network(self, args, data):
        inputs = data.inputs.shape[1]
        if args.init:
            try:
                module, meta = load(args.init)
            except ValueError as error:
                raise RecordingError(str(error)) from None
            if meta.get("kind") != self.kind or meta.get("task") != data.task:
                raise RecordingError(f"{args.init}: a {meta.get('kind')} network for {meta.get('task')}, "
                                     f"not a {self.kind} for {data.task}")
            if module.mean.out_features != self.outputs or int(meta["inputs"]) != inputs:
                raise RecordingError(f"{args.init}: takes {meta['inputs']} inputs and gives {module.mean.out_features} "
                                     f"outputs; the recordings need {inputs} and {self.outputs}")
            if self.kind == "value":
                try:
                    self.scale = float(meta["value_scale"])
                except (KeyError, ValueError):
                    raise RecordingError(f"{args.init}: __metadata__ value_scale is not a number") from None
                if not (math.isfinite(self.scale) and self.scale > 0):
                    raise RecordingError(f"{args.init}: __metadata__ value_scale must be positive")
            return module, int(meta.get("version", "0")) + 1
        hidden = [int(w) for w in (args.hidden or ("48" if self.kind == "value" else "64,64")).split(",")]
        if parameter_count(inputs, hidden, self.outputs) > MAX_PARAMETERS:
            raise RecordingError(f"a network of hidden {hidden} and {self.outputs} outputs is larger than mpcd takes")
        activation = args.activation or ("relu" if self.kind == "value" else "tanh")
        torch.manual_seed(args.seed)
        return MpcdMLP(inputs, hidden, self.outputs, activation), 1

    def loss(self, model, rows):
        """The mean loss of `rows` (indices) under `model` (the module, or its DDP wrapper)."""
        raw_mean, raw_log_std = model(self.inputs[rows])
        if self.kind == "value":
            return ((raw_mean - self.targets[0][rows] / self.scale) ** 2).mean()
        # the wrapper's forward, not module.squashed: DDP averages gradients only through its own forward
        mean, std = squash(raw_mean, raw_log_std, self.low, self.high)
        return kl_loss(mean, std, self.targets[0][rows], self.targets[1][rows]).mean()

    def write(self, path):
        """The network, written beside `path` and renamed over it (a reader never sees half a file)."""
        if self.kind == "value":
            extra = {"value_scale": repr(self.scale), "discount": repr(float(np.float32(self.data.discounts[0]))),
                     "min_value": self.minimum}
            save_beside(self.module, path, "value", self.data.task, version=self.version, extra=extra)
        else:
            save_beside(self.module, path, self.kind, self.data.task, horizon=self.steps, version=self.version,
                        actions=self.data.action_dimension)


class Progress:
    """A bar on a terminal, a line per epoch elsewhere."""

    def __init__(self, total, quiet):
        self.total, self.quiet, self.tty = total, quiet, sys.stdout.isatty()

    def update(self, epoch, loss, seconds):
        if self.quiet:
            return
        text = f"epoch {epoch}/{self.total}  loss {loss:.6f}  {seconds:.1f} s"
        if self.tty:
            done = int(30 * epoch / self.total)
            print(f"\r[{'#' * done}{'.' * (30 - done)}] {text}", end="\n" if epoch == self.total else "", flush=True)
        else:
            print(text, flush=True)


def main(argv=None):
    args = parse(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.batch % world:
        if rank == 0:
            print(f"mpcd_client.learn: --batch {args.batch} does not split evenly between {world} processes", file=sys.stderr)
        return 2
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        code = train(args, world, rank, device)
        if world > 1:
            # every rank done (rank 0 still writes and fsyncs the file) before any leaves: gloo
            # aborts a process whose peer has already left ("terminate called without an active
            # exception", one torchrun test run in four here without this barrier)
            dist.barrier()
            # and then leave without tearing the group down: with the barrier, one make test run
            # still saw a rank abort in gloo's teardown after the file was written. Nothing is
            # left to do but exit (the file is fsynced and renamed), so skip the teardown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except RecordingError as error:
        if rank == 0:
            print(f"mpcd_client.learn: {error}", file=sys.stderr)
        return 78
    finally:
        if world > 1:
            dist.destroy_process_group()


def train(args, world, rank, device):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    data = read_recordings(args.recordings, steps={"policy": 1, "plan": None, "value": 0}[args.kind])
    learner = Learner(args, data, device)
    n, batch = learner.rows, args.batch
    if n < batch:
        raise RecordingError(f"{n} ticks to learn from, fewer than --batch {batch}")
    model = learner.module
    if world > 1:
        # a value's log-std head is carried but not trained: DDP must not wait for its gradients
        model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=args.kind == "value")
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = n // batch
    # a step size that falls to 0 by the last step: the last epochs settle rather than jump
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.epochs * steps)
    share = batch // world
    if rank == 0:
        left = "; ".join([f"{data.skipped} stale, fallback or without a finite plan"] + learner.notes)
        print(f"{args.kind} for {data.task} from {n} ticks in {len(data.files)} file(s) ({left} left out); "
              f"{world} process(es) on {device.type}, batch {batch}, {args.epochs} epochs", flush=True)
    progress, losses, start = Progress(args.epochs, rank != 0), [], time.monotonic()
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)).to(device)
        total = torch.zeros(1, dtype=torch.float64, device=device)
        for step in range(steps):
            rows = order[step * batch + rank * share: step * batch + (rank + 1) * share]
            loss = learner.loss(model, rows)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.detach().double()
        if world > 1:
            dist.all_reduce(total)
            total /= world
        losses.append(float(total) / steps)
        if not math.isfinite(losses[-1]):
            raise RecordingError(f"the loss is {losses[-1]} at epoch {epoch + 1}: labels too large for float32, or --lr too big")
        progress.update(epoch + 1, losses[-1], time.monotonic() - start)
    if rank == 0:
        learner.write(args.out)
        print(f"wrote {args.out} ({args.kind}, version {learner.version}); last epoch's loss {losses[-1]:.6f}")
        if args.summary:
            Path(args.summary).write_text(json.dumps(
                {"kind": args.kind, "task": data.task, "rows": n, "processes": world, "batch": batch, "rows_per_process": share,
                 "losses": losses, "seconds": time.monotonic() - start, "files": data.files}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
