#!/usr/bin/env python3
"""PyTorch networks to mpcd's weights format (safetensors with the architecture in __metadata__).

    # a Stable-Baselines3 SAC actor (needs stable-baselines3) as a policy prior:
    python scripts/export_torch.py sb3 model.zip --task pendulum --out pendulum_policy.safetensors
    # the Swift test fixture: a seeded PyTorch MLP, its weights, and PyTorch's outputs on fixed inputs:
    python scripts/export_torch.py fixture --out Tests/ModelsTests/Fixtures

mpcd's network (Sources/Models/AmortisedNetwork.swift): Linear layers `hidden.i` with tanh or
ReLU, then two Linear heads `mean` and `log_std`. The action-space mean is
`centre + half_range * tanh(mean)`, the std `half_range * exp(clamp(log_std, -5, 2))`.
"""
import argparse
import json
import os
import struct

import numpy as np
import torch
from torch import nn

# Inputs (features) and actions of the tasks a network can be exported for.
TASKS = {"pendulum": (3, 1, [-2.0], [2.0]), "mountain_car": (2, 1, [-1.0], [1.0]), "cartpole": (4, 1, [-10.0], [10.0]),
         "point_mass": (2, 1, [-2.0], [2.0]), "unicycle": (3, 2, [-0.2, -1.5], [1.0, 1.5])}


class MpcdMLP(nn.Module):
    def __init__(self, inputs, hidden, outputs, activation="tanh"):
        super().__init__()
        widths = [inputs] + list(hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.mean = nn.Linear(widths[-1], outputs)
        self.log_std = nn.Linear(widths[-1], outputs)
        self.activation = activation

    def forward(self, x):
        act = torch.tanh if self.activation == "tanh" else torch.relu
        for layer in self.hidden:
            x = act(layer(x))
        return self.mean(x), self.log_std(x)

    def squashed(self, x, low, high):
        raw_mean, raw_log_std = self.forward(x)
        centre, half = (high + low) / 2, (high - low) / 2
        horizon = raw_mean.shape[-1] // len(low)
        centre, half = centre.repeat(horizon), half.repeat(horizon)
        return centre + half * torch.tanh(raw_mean), half * torch.exp(torch.clamp(raw_log_std, -5.0, 2.0))


def save(module, path, kind, task, horizon=1, version=0):
    """Writes `module` (an MpcdMLP) as an mpcd weights file."""
    inputs, actions, _, _ = TASKS[task]
    tensors = {}
    for i, layer in enumerate(module.hidden):
        tensors[f"hidden.{i}.weight"] = layer.weight
        tensors[f"hidden.{i}.bias"] = layer.bias
    for name in ("mean", "log_std"):
        tensors[f"{name}.weight"] = getattr(module, name).weight
        tensors[f"{name}.bias"] = getattr(module, name).bias
    metadata = {
        "format": "mpcd-network", "format_version": "1", "kind": kind, "task": task,
        "inputs": str(inputs), "hidden": ",".join(str(layer.out_features) for layer in module.hidden),
        "outputs": str(module.mean.out_features), "activation": module.activation, "horizon": str(horizon),
        "actions": str(actions), "log_std_min": "-5.0", "log_std_max": "2.0", "version": str(version),
    }
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def from_sb3_actor(actor):
    """An MpcdMLP holding a Stable-Baselines3 SAC actor's weights (latent_pi, mu, log_std)."""
    linears = [m for m in actor.latent_pi if isinstance(m, nn.Linear)]
    activation = "relu" if any(isinstance(m, nn.ReLU) for m in actor.latent_pi) else "tanh"
    module = MpcdMLP(linears[0].in_features, [l.out_features for l in linears], actor.mu.out_features, activation)
    with torch.no_grad():
        for ours, theirs in zip(module.hidden, linears):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        module.mean.weight.copy_(actor.mu.weight)
        module.mean.bias.copy_(actor.mu.bias)
        module.log_std.weight.copy_(actor.log_std.weight)
        module.log_std.bias.copy_(actor.log_std.bias)
    return module


def fixture(out):
    """A seeded amortised-plan network for the pendulum, and PyTorch's outputs on fixed inputs."""
    torch.manual_seed(20261125)
    inputs, actions, low, high = TASKS["pendulum"]
    horizon = 4
    module = MpcdMLP(inputs, [32, 16], horizon * actions, "tanh")
    with torch.no_grad():  # larger weights than the default init, so the tanh layers saturate somewhere
        for p in module.parameters():
            p.mul_(2.0)
    save(module, os.path.join(out, "torch_plan.safetensors"), "plan", "pendulum", horizon)
    x = torch.tensor(np.random.default_rng(7).uniform(-3, 3, size=(16, inputs)), dtype=torch.float32)
    with torch.no_grad():
        raw_mean, raw_log_std = module(x)
        mean, std = module.squashed(x, torch.tensor(low), torch.tensor(high))
    record = {k: v.numpy().astype(float).tolist() for k, v in
              {"inputs": x, "raw_mean": raw_mean, "raw_log_std": raw_log_std, "mean": mean, "std": std}.items()}
    record["torch"] = torch.__version__
    with open(os.path.join(out, "torch_plan.json"), "w") as f:
        json.dump(record, f)
    print(f"wrote {out}/torch_plan.safetensors and torch_plan.json (torch {torch.__version__})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sb3 = sub.add_parser("sb3", help="export a Stable-Baselines3 SAC actor as a policy")
    sb3.add_argument("model")
    sb3.add_argument("--task", required=True, choices=sorted(TASKS))
    sb3.add_argument("--out", required=True)
    fx = sub.add_parser("fixture", help="write the Swift test fixture")
    fx.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelsTests", "Fixtures"))
    args = parser.parse_args()
    if args.command == "fixture":
        fixture(args.out)
    else:
        from stable_baselines3 import SAC

        module = from_sb3_actor(SAC.load(args.model, device="cpu").actor)
        save(module, args.out, "policy", args.task)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
