"""Runs Gymnasium episodes with actions from an mpcd daemon.

    python -m mpcd_client.gym --env Pendulum-v1 --episodes 10 --seed 0 [--csv out.csv] [--plot out.png]

Prints each episode's return and the round-trip latency percentiles, writes every step to a CSV
file and, with --plot, a PNG of the trajectories. Episode i is reset with seed + i.
"""
import argparse
import csv
import sys
import time

import numpy as np

from .client import Controller, MpcdError, MpcdTimeout
from .protocol import ProtocolError

# Gymnasium environments and the mpcd task that models each.
TASK_OF_ENV = {"Pendulum-v1": "pendulum", "MountainCarContinuous-v0": "mountain_car"}


def percentiles(samples_ms):
    a = np.asarray(samples_ms)
    return {name: float(np.percentile(a, q)) for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))} | {"max": float(a.max())}


def full_state(env):
    """A MuJoCo environment's whole state, as mpcd's `mujoco` task reads it: qpos, qvel and the
    actuator activations, from the simulation itself (Gymnasium's observations leave some out,
    HalfCheetah's x position for one)."""
    data = env.unwrapped.data
    return np.concatenate([data.qpos, data.qvel, data.act]).astype(float)


def run_episodes(env_id, episodes, seed, endpoint="tcp://127.0.0.1:5555", timeout=2.0, max_steps=None, out=print):
    """Runs the episodes; returns (returns, rows, latencies_ms, info)."""
    import gymnasium as gym

    env = gym.make(env_id, max_episode_steps=max_steps) if max_steps else gym.make(env_id)
    returns, rows, latencies = [], [], []
    with Controller(endpoint, timeout=timeout) as controller:
        def described():
            """The daemon's hello, checked against the environment (again after a reload changed it)."""
            info = controller.info
            expected = TASK_OF_ENV.get(env_id)
            if expected and info["task"] != expected:
                print(f"warning: {env_id} is modelled by task {expected!r}, but the daemon plans {info['task']!r}", file=sys.stderr)
            check_bounds(env, env_id, info)
            return info

        def act(observation):
            """The daemon's action; when a reload has changed its task's description, its new hello
            is checked against the environment and the observation sent again: a reload that
            narrows the bounds goes on, one to another task stops the run."""
            for attempt in range(3):
                try:
                    # a MuJoCo task plans on the simulation's whole state, not on Gymnasium's observation
                    return controller.act(full_state(env) if hello[0]["task"] == "mujoco" else observation)
                except MpcdError as error:
                    if error.name != "task_changed" or attempt == 2:
                        raise
                    print(f"the daemon's task changed (a reload): {error.message}", file=sys.stderr)
                    # the same task is the same name, state and action: every MuJoCo model is task
                    # "mujoco", and a reload to another model stops the run (attacking helper)
                    before, hello[0] = hello[0], described()
                    same = ("task", "state_names", "action_names")
                    if any(hello[0].get(key) != before.get(key) for key in same):
                        changed = ", ".join(key for key in same if hello[0].get(key) != before.get(key))
                        raise ProtocolError(f"the daemon's task changed (a reload: {changed} differ, now {hello[0]['task']!r}): "
                                            f"this run of {env_id} stops") from None

        hello = [described()]
        for episode in range(episodes):
            observation, _ = env.reset(seed=seed + episode)
            total, steps, done = 0.0, 0, False
            reached = False
            iterations, gaps = [], []
            while not done:
                start = time.perf_counter()
                action = act(observation)
                latencies.append((time.perf_counter() - start) * 1e3)
                reply = controller.last
                iterations.append(reply.diagnostics.get("iterations", np.nan))
                gaps.append(reply.diagnostics.get("amortisation_gap", np.nan))
                next_observation, reward, terminated, truncated, _ = env.step(checked_action(env, env_id, action))
                rows.append([episode, steps, *np.asarray(observation, dtype=float), *action, reward,
                             reply.diagnostics.get("iterations", np.nan), reply.diagnostics.get("compute_seconds", np.nan) * 1e3,
                             latencies[-1]])
                total += float(reward)
                steps += 1
                reached = reached or bool(terminated)
                observation = next_observation
                done = terminated or truncated
            returns.append(total)
            line = f"episode {episode:3d}  seed {seed + episode:4d}  return {total:9.2f}  steps {steps:4d}  iterations/tick {np.mean(iterations):4.2f}"
            if np.isfinite(reply.diagnostics.get("prior_kl", np.nan)):
                line += f"  amortisation gap {np.nanmean(gaps):7.3f}"
            out(line + ("  (terminated)" if reached else ""))
            controller.reset()
    env.close()
    return returns, rows, latencies, hello[0]


def observation_names(info, obs_dim):
    """The daemon's names for an observation of this length, else obs_0, obs_1, ..."""
    for form in info.get("observation_forms", []):
        if len(form["components"]) == obs_dim:
            return list(form["components"])
    return [f"obs_{i}" for i in range(obs_dim)]


def write_csv(path, rows, info):
    obs_dim = len(rows[0]) - 2 - info["action_dim"] - 4
    header = ["episode", "step"] + observation_names(info, obs_dim) + [f"action_{n}" for n in info["action_names"]] + \
        ["reward", "iterations", "compute_ms", "round_trip_ms"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def plot(path, rows, info, env_id, returns):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(rows, dtype=float)
    obs_dim = data.shape[1] - 2 - info["action_dim"] - 4
    fig, axes = plt.subplots(obs_dim + info["action_dim"] + 1, 1, figsize=(9, 2.2 * (obs_dim + info["action_dim"] + 1)), sharex=False)
    episodes = np.unique(data[:, 0]).astype(int)
    names = observation_names(info, obs_dim)
    for e in episodes:
        ep = data[data[:, 0] == e]
        for i in range(obs_dim):
            axes[i].plot(ep[:, 1], ep[:, 2 + i], lw=1)
            axes[i].set_ylabel(names[i])
        for j in range(info["action_dim"]):
            axes[obs_dim + j].plot(ep[:, 1], ep[:, 2 + obs_dim + j], lw=1)
            axes[obs_dim + j].set_ylabel(info["action_names"][j])
    axes[-2].set_xlabel("step")
    axes[-1].bar(episodes, returns)
    axes[-1].set_xlabel("episode")
    axes[-1].set_ylabel("return")
    fig.suptitle(f"{env_id} through mpcd ({info['task']}, {info.get('planner', {}).get('likelihood', 'mpcd')}): mean return {np.mean(returns):.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _slack(low, high):
    """How far past a bound a float32 round trip may put a value that was within it."""
    return 1e-6 * np.maximum(1.0, np.abs(np.concatenate([low, high])).max())


def check_bounds(env, env_id, info):
    """ProtocolError before the first step when the daemon's action space is not the
    environment's: of another shape, or reaching beyond its bounds (the first action out of range
    would stop the run mid-episode). Bounds inside the environment's are the daemon's to choose."""
    space = env.action_space
    low, high = np.asarray(info["action_low"], dtype=float), np.asarray(info["action_high"], dtype=float)
    if low.shape != space.shape:
        raise ProtocolError(f"the daemon plans {low.size} action values; {env_id} takes {space.shape}: is the daemon configured for {env_id}?")
    env_low, env_high = np.asarray(space.low, dtype=float), np.asarray(space.high, dtype=float)
    slack = _slack(env_low, env_high)
    if np.any(low < env_low - slack) or np.any(high > env_high + slack):
        raise ProtocolError(f"the daemon's action bounds [{low.tolist()}, {high.tolist()}] reach beyond {env_id}'s "
                            f"[{env_low.tolist()}, {env_high.tolist()}]: set [planner] action_min and action_max within them")


def checked_action(env, env_id, action):
    """The daemon's action as the environment takes it, or ProtocolError: one of another shape or
    beyond the action space's bounds is never applied (a daemon planning for another environment,
    or something that is not mpcd answering)."""
    space = env.action_space
    action = np.asarray(action, dtype=float)
    if action.shape != space.shape:
        raise ProtocolError(f"an action of shape {action.shape}; {env_id} takes {space.shape}: is the daemon configured for {env_id}?")
    low, high = np.asarray(space.low, dtype=float), np.asarray(space.high, dtype=float)
    slack = _slack(low, high)
    if not (np.all(action >= low - slack) and np.all(action <= high + slack)):
        raise ProtocolError(f"an action {action.tolist()} beyond {env_id}'s bounds [{low.tolist()}, {high.tolist()}]")
    return np.clip(action, low, high).astype(space.dtype)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.gym", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each action")
    parser.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the environment's)")
    parser.add_argument("--csv", default=None, help="trajectory CSV (default: mpcd-<env>.csv)")
    parser.add_argument("--plot", nargs="?", const="", default=None, help="write a PNG of the trajectories (default name: mpcd-<env>.png)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    try:
        returns, rows, latencies, info = run_episodes(args.env, args.episodes, args.seed, args.endpoint, args.timeout, args.max_steps)
    except MpcdTimeout as e:
        print(f"error: {e}. Is mpcd running? Start it with .build/release/mpcd", file=sys.stderr)
        return 2
    except (MpcdError, ProtocolError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lat = percentiles(latencies)
    print(f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over {len(returns)} episodes ({len(latencies)} steps)")
    print("round trip ms: " + "  ".join(f"{k} {v:.3f}" for k, v in lat.items()))
    csv_path = args.csv or f"mpcd-{args.env}.csv"
    write_csv(csv_path, rows, info)
    print(f"trajectories: {csv_path}")
    if args.plot is not None:
        png = args.plot or f"mpcd-{args.env}.png"
        plot(png, rows, info, args.env, returns)
        print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
