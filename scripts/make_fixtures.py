#!/usr/bin/env python3
"""Writes Gymnasium reference transitions for the Swift model tests.

Runs Gymnasium itself (Pendulum-v1, MountainCarContinuous-v0, CartPole-v1) and records one
transition per row: the state before the step, the action, the reward, the state after. The
Swift tests (Tests/ModelsTests/GymnasiumFixtureTests.swift) replay every row through mpcd's models
one transition at a time. `swift test` reads the committed CSV files and never needs Python.

    python scripts/make_fixtures.py [--out Tests/ModelsTests/Fixtures]
"""
import argparse
import csv
import math
import os

import gymnasium as gym
import numpy as np


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(header)
        for row in rows:
            out.writerow([repr(float(v)) for v in row])
    print(f"{path}: {len(rows)} transitions")


def pendulum(rng):
    env = gym.make("Pendulum-v1").unwrapped
    rows = []
    for seed in range(8):
        env.reset(seed=seed)
        if seed >= 6:  # start far from [-pi, pi] to cover unwrapped angles
            env.state = np.array([rng.uniform(-30, 30), rng.uniform(-8, 8)])
        for _ in range(100):
            th, thdot = env.state
            u = rng.uniform(-2.5, 2.5)  # beyond the bounds: exercises the clip
            _, reward, _, _, _ = env.step(np.array([u], dtype=np.float32))
            rows.append([th, thdot, np.float32(u), reward, *env.state])
    write_path = "pendulum.csv"
    return write_path, ["theta", "theta_dot", "torque", "reward", "next_theta", "next_theta_dot"], rows


def mountain_car(rng):
    env = gym.make("MountainCarContinuous-v0").unwrapped
    rows = []
    for seed in range(8):
        env.reset(seed=seed)
        for _ in range(400):
            position, velocity = env.state
            # pump with the velocity, plus noise, so the car visits the whole valley and the walls
            u = np.float32(np.clip(1.3 * np.sign(velocity + 1e-9) + rng.normal(0, 0.6), -1.5, 1.5))
            _, reward, terminated, _, _ = env.step(np.array([u], dtype=np.float32))
            rows.append([position, velocity, u, reward, *env.state])
            if terminated:
                break
    return "mountain_car.csv", ["position", "velocity", "force", "reward", "next_position", "next_velocity"], rows


def cartpole(rng):
    """CartPole-v1 has two actions, +-force_mag. A continuous force f is applied through
    Gymnasium's own step by setting force_mag = |clip(f)| and choosing the action by sign."""
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    rows = []
    for _ in range(800):
        state = np.array([rng.uniform(-2.4, 2.4), rng.uniform(-3, 3), rng.uniform(-math.pi, math.pi), rng.uniform(-8, 8)])
        f = rng.uniform(-12, 12)
        clipped = float(np.clip(f, -10.0, 10.0))
        env.state = state.copy()
        env.steps_beyond_terminated = None
        env.force_mag = abs(clipped)
        env.step(1 if clipped > 0 else 0)
        rows.append([*state, f, 0.0, *env.state])
    names = ["x", "x_dot", "theta", "theta_dot"]
    return "cartpole.csv", names + ["force", "reward"] + ["next_" + n for n in names], rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelsTests", "Fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261125)
    for make in (pendulum, mountain_car, cartpole):
        name, header, rows = make(rng)
        write(os.path.join(args.out, name), header, rows)
    print(f"gymnasium {gym.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
