"""Task parameters set per session over the data socket (docs/protocol.md, "Parameters")."""
import json
import math

import numpy as np
import pytest
import zmq

from mpcd_client import Controller, MpcdError, protocol

# The unicycle of deploy/config/unicycle.toml without its prior (a network distilled for one
# goal), lockstep; obstacles at (1.5, 0.1) and (3.0, -0.3).
UNICYCLE = """[task]
name = "unicycle"
goal = [4.5, 0.0]
robot_radius = 0.2
safety_margin = 0.3

[[task.obstacles]]
x = 1.5
y = 0.1
radius = 0.4

[[task.obstacles]]
x = 3.0
y = -0.3
radius = 0.35

[planner]
samples = 512
horizon = 30
iterations = 3
temperature = 0.5
initial_std = 0.5
"""
# docs/protocol.md: a unicycle goal counts as reached within 0.1 m.
TOLERANCE = 0.1


def unicycle_step(state, action, dt=0.1):
    """The unicycle's own model (Sources/Models/Unicycle.swift), explicit Euler."""
    x, y, heading = state
    speed, turn = np.clip(action[0], -0.2, 1.0), np.clip(action[1], -1.5, 1.5)
    return np.array([x + speed * math.cos(heading) * dt, y + speed * math.sin(heading) * dt, heading + turn * dt])


def drive(controller, state, goal, steps=200):
    """Steps until the robot is within TOLERANCE of `goal`; the state and the steps taken."""
    for step in range(steps):
        if math.hypot(state[0] - goal[0], state[1] - goal[1]) < TOLERANCE:
            return state, step
        state = unicycle_step(state, controller.act(state))
    return state, None


@pytest.fixture
def unicycle(start_daemon, tmp_path):
    config = tmp_path / "unicycle.toml"
    config.write_text(UNICYCLE)
    return start_daemon("--config", str(config), "--mode", "lockstep")


def test_the_hello_reply_lists_the_parameters_with_their_bounds(unicycle):
    with Controller(unicycle.endpoint, timeout=5) as c:
        parameters = {p["name"]: p for p in c.info["parameters"]}
    assert parameters["goal"]["length"] == 2 and parameters["goal"]["default"] == [4.5, 0.0]
    assert parameters["goal_weight"]["lower"] == 0 and parameters["goal_weight"]["length"] == 1
    assert all(p["summary"] for p in parameters.values())


def test_a_goal_moved_three_times_in_one_episode_is_reached_each_time(unicycle):
    goals = [(1.0, 1.2), (-1.0, 1.5), (0.5, -1.0)]
    state = np.zeros(3)
    with Controller(unicycle.endpoint, timeout=5) as c:
        for goal in goals:
            in_force = c.set_parameters(goal=goal)
            assert in_force["goal"] == pytest.approx(goal)
            state, steps = drive(c, state, goal)
            assert steps is not None, f"goal {goal} not reached; ended at {state}"
        status = unicycle.status()["sessions"]["list"]
        table = unicycle.mpcctl("status").stdout
    assert status[0]["parameters"]["goal"] == pytest.approx(goals[-1]) and status[0]["parameters_set"] == ["goal"]
    assert "parameters goal=0.5,-1" in table


def test_two_sessions_with_their_own_goals_each_reach_their_own(unicycle):
    goals = [(1.0, 1.2), (0.8, -1.2)]
    with Controller(unicycle.endpoint, timeout=5) as a, Controller(unicycle.endpoint, timeout=5) as b:
        controllers = [a, b]
        for controller, goal in zip(controllers, goals):
            controller.set_parameters(goal=goal)
        states, reached = [np.zeros(3), np.zeros(3)], [None, None]
        for step in range(200):
            for i, (controller, goal) in enumerate(zip(controllers, goals)):
                if reached[i] is None:
                    if math.hypot(states[i][0] - goal[0], states[i][1] - goal[1]) < TOLERANCE:
                        reached[i] = step
                    else:
                        states[i] = unicycle_step(states[i], controller.act(states[i]))
            if all(r is not None for r in reached):
                break
    assert all(r is not None for r in reached), f"ended at {states}"


def in_force(daemon):
    return [s.get("parameters") for s in daemon.status()["sessions"]["list"]]


@pytest.mark.parametrize("values, code, words", [
    ({"goall": [1.0, 2.0]}, "invalid_parameter", ["goall", "no such parameter"]),
    ({"goal": [1.0]}, "wrong_dimension", ["goal", "has 2 values, got 1"]),
    ({"goal": [1.0, 2.0, 3.0]}, "wrong_dimension", ["goal", "got 3"]),
    ({"goal": [float("nan"), 1.0]}, "non_finite", ["goal", "not finite"]),
    ({"goal_weight": float("inf")}, "non_finite", ["goal_weight", "not finite"]),
    ({"goal": [1e9, 0.0]}, "invalid_parameter", ["goal", "outside"]),
    ({"goal_weight": -1.0}, "invalid_parameter", ["goal_weight", "outside"]),
    # all or none: the good one is not applied either
    ({"goal": [1.0, 1.0], "speed_weight": -2.0}, "invalid_parameter", ["speed_weight"]),
    ({}, "invalid_parameter", ["no parameters given"]),
])
def test_a_bad_parameter_message_is_refused_by_name_and_changes_nothing(unicycle, values, code, words):
    with Controller(unicycle.endpoint, timeout=5) as c:
        # a refused message from a client without a session leaves none behind
        with pytest.raises(MpcdError) as error:
            c.set_parameters(**values)
        assert unicycle.status()["sessions"]["count"] == 0
        c.set_parameters(goal=[2.0, 2.0])
        before = in_force(unicycle)
        with pytest.raises(MpcdError) as error:
            c.set_parameters(**values)
        assert error.value.name == code and all(w in error.value.message for w in words), error.value.message
        assert in_force(unicycle) == before
        # and the session goes on planning
        assert np.isfinite(c.act(np.zeros(3))).all()


@pytest.mark.parametrize("body, words", [
    (b"not json", "JSON object"),
    (b"[1, 2]", "JSON object"),
    (b'{"goal": "north"}', "goal: a value must be a number"),
    (b'{"goal": [1, "x"]}', "goal: a value must be a number"),
    (b'{"goal": [1e400, 0]}', "JSON object"),
])
def test_a_malformed_parameters_frame_is_refused(unicycle, body, words):
    context = zmq.Context.instance()
    with context.socket(zmq.DEALER) as s:
        s.setsockopt(zmq.LINGER, 0)
        s.connect(unicycle.endpoint)
        s.send_multipart([protocol.header(protocol.PARAMETERS, 7), body])
        assert s.poll(5000)
        reply = protocol.decode(s.recv_multipart())
    assert isinstance(reply, protocol.ErrorReply) and reply.sequence == 7 and reply.name == "malformed", reply
    assert words in reply.message, reply.message


def test_a_task_without_parameters_refuses_them(start_daemon, tmp_path):
    config = tmp_path / "car.toml"
    config.write_text('[task]\nname = "mountain_car"\n[planner]\nsamples = 64\n')
    daemon = start_daemon("--config", str(config), "--mode", "lockstep")
    with Controller(daemon.endpoint, timeout=5) as c:
        assert c.info["parameters"] == []
        with pytest.raises(MpcdError) as error:
            c.set_parameters(goal=[1.0, 2.0])
        assert error.value.name == "invalid_parameter" and "task mountain_car has no parameters" in error.value.message
        assert np.isfinite(c.act(np.array([-0.5, 0.0]))).all()


def test_a_reload_keeps_the_parameters_a_session_set(unicycle):
    with Controller(unicycle.endpoint, timeout=5) as c:
        c.set_parameters(goal=[1.0, -1.0], turn_weight=0.5)
        c.act(np.zeros(3))
        assert unicycle.mpcctl("reload").returncode == 0
        c.act(np.zeros(3))
        session = unicycle.status()["sessions"]["list"][0]
    assert session["parameters"]["goal"] == [1.0, -1.0] and session["parameters"]["turn_weight"] == [0.5]
    assert session["parameters_set"] == ["goal", "turn_weight"]


def test_a_slew_limit_is_planned_for_so_the_guard_has_nothing_to_cut(start_daemon, tmp_path):
    """[safety] max_rate reaches the planner: without it the planner alone (no prior) sends
    about a quarter of its replies through the guard's clipping (python -m mpcd_client.actuators)."""
    config = tmp_path / "unicycle.toml"
    config.write_text(UNICYCLE + "\n[safety]\nmax_rate = [4.0, 4.0]\n")
    daemon = start_daemon("--config", str(config), "--mode", "lockstep")
    rng = np.random.default_rng(3)
    state = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-math.pi, math.pi)])
    limited, previous = 0, None
    with Controller(daemon.endpoint, timeout=5) as c:
        for _ in range(60):
            action = c.act(state)
            limited += bool(c.last.flags & 16)
            if previous is not None:
                # the guard holds this either way; `limited` below says whether it had to
                assert np.all(np.abs(action - previous) <= 0.4 + 1e-6)  # 4 per second x dt 0.1
            previous = action
            state = unicycle_step(state, action)
    assert limited == 0


def pendulum_step(theta, theta_dot, u, dt=0.05):
    """Gymnasium's Pendulum-v1 step."""
    u = float(np.clip(u, -2.0, 2.0))
    theta_dot = float(np.clip(theta_dot + (15.0 * math.sin(theta) + 3.0 * u) * dt, -8.0, 8.0))
    return theta + theta_dot * dt, theta_dot


def test_the_embedded_defaults_prior_only_proposes_once_a_session_moves_its_target(start_daemon):
    """The built-in policy was distilled for the upright target: anchored to it (κ = 1) the plan
    would stay upright whatever target a session sets."""
    daemon = start_daemon("--mode", "lockstep")
    theta, theta_dot = 0.05, 0.0
    with Controller(daemon.endpoint, timeout=5) as c:
        assert {p["name"] for p in c.info["parameters"]} >= {"target_angle", "angle_weight"}
        c.set_parameters(target_angle=0.3)
        assert daemon.status()["sessions"]["list"][0]["prior_fits_parameters"] is False
        for _ in range(150):
            theta, theta_dot = pendulum_step(theta, theta_dot, c.act(np.array([theta, theta_dot]))[0])
        held = theta
        c.set_parameters(target_angle=0.0)  # the configuration's again: the prior fits
        assert daemon.status()["sessions"]["list"][0]["prior_fits_parameters"] is True
        for _ in range(150):
            theta, theta_dot = pendulum_step(theta, theta_dot, c.act(np.array([theta, theta_dot]))[0])
    assert 0.1 < held < 0.4, held
    assert abs(theta) < 0.05, theta


def test_a_realtime_stream_loses_no_action_while_parameters_are_set(start_daemon, tmp_path):
    config = tmp_path / "unicycle.toml"
    config.write_text(UNICYCLE.replace("samples = 512", "samples = 64") + '\n[server]\nmode = "realtime"\nrate_hz = 50\n')
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint, timeout=5) as c:
        c.send_observation(np.zeros(3))
        first = c.receive()
        import time
        time.sleep(0.1)  # a few ticks' actions wait in the socket
        c.set_parameters(goal=[1.0, 1.0])
        ticks = [c.receive().tick for _ in range(8)]
    # the replies that came in while set_parameters waited are handed out, in order, none skipped
    assert ticks == list(range(ticks[0], ticks[0] + 8)) and ticks[0] == first.tick + 1, (first.tick, ticks)
