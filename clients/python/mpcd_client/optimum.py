"""The optimal returns of Gymnasium's Pendulum-v1, the yardstick for control quality.

    python -m mpcd_client.optimum [--seeds 0-99] [--out FILE.json]

A controller's return says little on its own: what it means depends on the start states. What
says how good control is, is the distance to the best return anything could have got from the
same start states, (optimum - return) / |optimum|. This module computes that optimum.

It solves the whole 200-step episode by finite-horizon dynamic programming with the true model
(Pendulum-v1's own dynamics and reward): a value table V_t over a 361 x 161 grid of angle in
[-pi, pi] (periodic) and angular velocity in [-8, 8], 81 torques evenly in [-2, 2], with the
value between grid points interpolated bilinearly. Then, for each seed, it runs the real
environment with a greedy one-step lookahead on that table: at step t, the torque that
minimises cost + V_{t+1}(next state). The returns are therefore ones Gymnasium itself gave, not
the model's estimate. Seeds 0-99 give a mean of -133.3 (std 70.2, worst -290.6), seeds 0-19
-127.5, seeds 100-119 -168.0.

Other modules use `optimal_returns(seeds)`; the value table is computed once per process.
"""
import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np

# Pendulum-v1's constants (gymnasium/envs/classic_control/pendulum.py, default g).
G, M, L, DT = 10.0, 1.0, 1.0, 0.05
MAX_SPEED, MAX_TORQUE = 8.0, 2.0
STEPS = 200  # the episode length (TimeLimit)

ANGLES = np.linspace(-np.pi, np.pi, 361)  # the two ends are the same angle
SPEEDS = np.linspace(-MAX_SPEED, MAX_SPEED, 161)
TORQUES = np.linspace(-MAX_TORQUE, MAX_TORQUE, 81)
ANGLE_STEP = ANGLES[1] - ANGLES[0]
SPEED_STEP = SPEEDS[1] - SPEEDS[0]


def angle_normalize(th):
    return (th + np.pi) % (2 * np.pi) - np.pi


def step_model(th, thdot, u):
    """Pendulum-v1's step: the cost of (th, thdot, u), taken on the state before the step, and
    the next state. The environment leaves the next angle unwrapped; it is wrapped here so that
    it falls on the grid."""
    cost = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
    new_thdot = np.clip(thdot + (3 * G / (2 * L) * np.sin(th) + 3.0 / (M * L**2) * u) * DT, -MAX_SPEED, MAX_SPEED)
    new_th = angle_normalize(th + new_thdot * DT)
    return cost, new_th, new_thdot


def bilinear_corners(th, thdot):
    """Flat indices into a (361, 161) table of the four grid points around each (th, thdot), and
    their bilinear weights; th must be in [-pi, pi), thdot in [-8, 8]."""
    # Cells 0..359 in angle: i + 1 reaches index 360, the copy of -pi, which is what makes the
    # grid periodic without a modulo.
    a = (th - ANGLES[0]) / ANGLE_STEP
    i = np.clip(np.floor(a), 0, len(ANGLES) - 2).astype(np.int32)
    a -= i
    b = (thdot - SPEEDS[0]) / SPEED_STEP
    j = np.clip(np.floor(b), 0, len(SPEEDS) - 2).astype(np.int32)
    b -= j
    base = i * len(SPEEDS) + j
    corners = np.stack([base, base + len(SPEEDS), base + 1, base + len(SPEEDS) + 1])
    weights = np.stack([(1 - a) * (1 - b), a * (1 - b), (1 - a) * b, a * b])
    return corners, weights


def interpolate(value, corners, weights):
    flat = value.ravel()
    return sum(w * flat[c] for c, w in zip(corners, weights))


_value_tables = None


def value_tables():
    """V[t] for t = 0..200: the least cost-to-go from each grid state with 200 - t steps left
    (V[200] = 0). Computed once per process: about a minute."""
    global _value_tables
    if _value_tables is not None:
        return _value_tables
    th, thdot, u = np.meshgrid(ANGLES, SPEEDS, TORQUES, indexing="ij")
    cost, new_th, new_thdot = step_model(th, thdot, u)
    # The dynamics do not change over time, so the interpolation stencil is computed once.
    corners, weights = bilinear_corners(new_th, new_thdot)
    values = np.zeros((STEPS + 1, len(ANGLES), len(SPEEDS)))
    for t in range(STEPS - 1, -1, -1):
        values[t] = (cost + interpolate(values[t + 1], corners, weights)).min(axis=-1)
        if (STEPS - t) % 20 == 0:
            print(f"dynamic programming: {STEPS - t}/{STEPS} steps", file=sys.stderr, flush=True)
    _value_tables = values
    return values


def greedy_torque(values, t, th, thdot):
    """The torque minimising cost + V_{t+1}(next state), from the exact state."""
    cost, new_th, new_thdot = step_model(th, thdot, TORQUES)
    corners, weights = bilinear_corners(new_th, new_thdot)
    return TORQUES[np.argmin(cost + interpolate(values[t + 1], corners, weights))]


_returns_by_seed = {}


def optimal_returns(seeds):
    """The return the real Pendulum-v1 gives under the optimal controller, per seed (one
    `reset(seed=s)` each). Each seed's episode is run once per process."""
    missing = [s for s in seeds if s not in _returns_by_seed]
    if missing:
        _returns_by_seed.update(zip(missing, _episodes(missing)))
    return [_returns_by_seed[s] for s in seeds]


def _episodes(seeds):
    values = value_tables()
    env = gym.make("Pendulum-v1")
    returns = []
    for seed in seeds:
        env.reset(seed=seed)
        total, t, done = 0.0, 0, False
        while not done:
            # The true state, not the float32 observation.
            th, thdot = env.unwrapped.state
            u = greedy_torque(values, t, th, thdot)
            _, reward, terminated, truncated, _ = env.step(np.array([u], dtype=np.float32))
            total += float(reward)
            t += 1
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def parse_seeds(text):
    """'0-99' or '3,5,8'."""
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-99", help="a range like 0-99 or a list like 3,5,8")
    parser.add_argument("--out", help="write the per-seed returns to this JSON file")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    start = time.monotonic()
    returns = np.array(optimal_returns(seeds))
    result = {
        "env": "Pendulum-v1",
        "grid": [len(ANGLES), len(SPEEDS), len(TORQUES)],
        "seeds": seeds,
        "returns": returns.tolist(),
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "worst": float(returns.min()),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(f"Pendulum-v1 optimum, seeds {args.seeds} ({len(seeds)} episodes): mean {result['mean']:.1f}, "
          f"std {result['std']:.1f}, worst {result['worst']:.1f} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
