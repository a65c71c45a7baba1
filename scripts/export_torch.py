#!/usr/bin/env python3
"""PyTorch networks to mpcd's weights format (safetensors with the architecture in __metadata__).

    # a Stable-Baselines3 SAC actor (needs stable-baselines3) as a policy prior:
    python scripts/export_torch.py sb3 model.zip --task pendulum --out pendulum_policy.safetensors
    # the Swift test fixture: a seeded PyTorch MLP, its weights, and PyTorch's outputs on fixed inputs:
    python scripts/export_torch.py fixture --out Tests/ModelsTests/Fixtures

The network and its file are mpcd_client.torch_networks (shared with training from recordings,
python -m mpcd_client.learn).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))
from mpcd_client.torch_networks import TASKS, MpcdMLP, save  # noqa: E402


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
