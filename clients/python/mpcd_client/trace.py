"""Every tick of some Gymnasium episodes through the daemon, with the daemon's diagnostics: what to
read when an episode falls (effective sample size, prior and plan cost, the state it was in).

    python -m mpcd_client.trace CONFIG ENV [--seed 0] [--episodes 1] [--out trace.json]

Starts `mpcd --config CONFIG` on a free endpoint, runs the episodes lockstep (a MuJoCo task gets
the simulation's whole state, as the bridge sends it), prints one line per episode and writes
every tick (episode, step, state, action, diagnostics) to --out as JSON.
"""
import argparse
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from .bench import free_endpoint
from .client import Controller
from .gym import full_state

REPO = Path(__file__).resolve().parents[3]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("env")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--out", default="trace.json")
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    import gymnasium as gym

    endpoint = free_endpoint()
    process = subprocess.Popen([args.mpcd, "--endpoint", endpoint, "--config", args.config], stdout=subprocess.PIPE, text=True)
    ticks = []
    try:
        if "listening" not in process.stdout.readline():
            raise SystemExit(f"{args.mpcd} did not start with {args.config}")
        env = gym.make(args.env)
        with Controller(endpoint, timeout=60) as controller:
            mujoco = controller.info["task"] == "mujoco"
            for episode in range(args.episodes):
                observation, _ = env.reset(seed=args.seed + episode)
                done, steps, total = False, 0, 0.0
                while not done:
                    state = full_state(env) if mujoco else observation
                    action = controller.act(state)
                    diagnostics = {k: v for k, v in controller.last.diagnostics.items() if isinstance(v, (int, float))}
                    ticks.append({"episode": episode, "step": steps, "state": [float(x) for x in state],
                                  "action": [float(x) for x in action], "diagnostics": diagnostics})
                    observation, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
                    total += float(reward)
                    steps += 1
                    done = terminated or truncated
                print(f"episode {episode}  seed {args.seed + episode}  return {total:.2f}  steps {steps}", flush=True)
                controller.reset()
    finally:
        process.terminate()
        process.wait(timeout=10)
    Path(args.out).write_text(json.dumps(ticks))
    ess = np.array([t["diagnostics"].get("effective_sample_size", np.nan) for t in ticks])
    print(f"wrote {len(ticks)} ticks to {args.out}; effective sample size median {np.nanmedian(ess):.2f}")


if __name__ == "__main__":
    main()
