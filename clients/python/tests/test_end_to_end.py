"""End-to-end: the real daemon, real sockets, real Gymnasium environments."""
import json
import re
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import zmq

from conftest import MPCD, REPO, fake_router
from mpcd_client import Controller, MpcdError
from mpcd_client import protocol
from mpcd_client.gym import run_episodes

CONFIGS = REPO / "deploy" / "config"


def quiet(*args, **kwargs):
    pass


def test_hello_describes_the_task(start_daemon):
    daemon = start_daemon()
    with Controller(daemon.endpoint) as c:
        info = c.info
    assert info["protocol"] == 1
    assert info["task"] == "pendulum" and info["mode"] == "lockstep"
    assert info["state_names"] == ["theta", "theta_dot"] and info["action_names"] == ["torque"]
    assert info["action_low"] == [-2] and info["action_high"] == [2]
    assert info["dt"] == pytest.approx(0.05) and info["rate_hz"] == pytest.approx(20)
    assert info["diagnostics"][:3] == ["iterations", "cost", "compute_seconds"]


def test_the_protocol_docs_list_the_diagnostics_the_daemon_sends(start_daemon):
    """docs/protocol.md's count and table of diagnostics against the hello reply's list."""
    import re
    daemon = start_daemon()
    with Controller(daemon.endpoint) as c:
        names = c.info["diagnostics"]
        c.act(np.array([0.5, 0.0]))
        reply = c.last
    assert len(reply.diagnostics) == len(names)
    page = (REPO / "docs" / "protocol.md").read_text()
    counts = {int(n) for n in re.findall(r"diagnostics(?: \(frame 3)?, float64 x (\d+)", page)}
    assert counts == {len(names)}, f"docs/protocol.md says {counts} diagnostics; the daemon sends {len(names)}"
    section = page[page.index("Diagnostics (frame 3"):]
    section = section[:section.index("\n\n", section.index("| index |"))]  # the table, to its end
    table = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, flags=re.M)
    assert [(int(i), n) for i, n in table] == list(enumerate(names))


def test_pendulum_lockstep_seeds_0_to_9_with_the_default_configuration(start_daemon):
    daemon = start_daemon()
    returns, _, latencies, _ = run_episodes("Pendulum-v1", 10, 0, daemon.endpoint, out=quiet)
    print(f"Pendulum-v1 returns {np.round(returns, 1)}, mean {np.mean(returns):.1f}")
    assert len(returns) == 10
    assert np.mean(returns) >= -170


@pytest.mark.parametrize("config, episodes, least_mean", [
    ("mountain_car.toml", 5, 90),  # the shaped cost
    ("mountain_car_value.toml", 3, 97),  # the environment's own price and a learned value: above every rl-zoo agent (96.67)
])
def test_mountain_car_reaches_the_goal_every_episode(start_daemon, config, episodes, least_mean):
    daemon = start_daemon("--config", str(CONFIGS / config))
    lines = []
    returns, rows, _, _ = run_episodes("MountainCarContinuous-v0", episodes, 0, daemon.endpoint, out=lines.append)
    print("\n".join(lines))
    assert sum("terminated" in line for line in lines) == episodes, "every episode must reach the goal"
    assert np.mean(returns) >= least_mean


def test_pendulum_value_config_reports_the_value_term(start_daemon):
    daemon = start_daemon("--config", str(CONFIGS / "pendulum_value.toml"))
    with Controller(daemon.endpoint) as c:
        assert "value_term" in c.info["diagnostics"]
        c.act(np.array([-1.0, 0.0, 0.0]))  # hanging down, at rest: a long way to go
        assert c.last.diagnostics["value_term"] > 10


def test_four_concurrent_realtime_sessions_get_their_own_actions(start_daemon):
    daemon = start_daemon("--config", str(CONFIGS / "point_mass.toml"), "--mode", "realtime", "--rate-hz", "50")
    positions = [-2.0, -1.0, 1.0, 2.0]
    results = {}

    def client(i, position):
        with Controller(daemon.endpoint, identity=f"client-{i}".encode()) as c:
            c._sequence = 1000 * (i + 1)  # distinct sequence numbers per client
            echoed, actions = [], []
            for _ in range(10):
                c.act(np.array([position, 0.0]))
                echoed.append((c._sequence, c.last.observation_sequence))
                actions.append(float(c.last.action[0]))
            results[i] = (echoed, actions)

    threads = [threading.Thread(target=client, args=(i, p)) for i, p in enumerate(positions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 4
    for i, position in enumerate(positions):
        echoed, actions = results[i]
        assert all(sent == got for sent, got in echoed), f"client {i} got another session's sequence numbers: {echoed}"
        assert all(1000 * (i + 1) < got <= 1000 * (i + 1) + 10 for _, got in echoed)
        # the planner pushes each mass back towards 0, harder from further away
        assert np.sign(np.mean(actions)) == -np.sign(position), f"client {i} at {position}: actions {actions}"
    assert np.mean(results[0][1]) > np.mean(results[1][1]) > 0 > np.mean(results[2][1]) > np.mean(results[3][1])


def raw_socket(endpoint):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 2000)
    s.connect(endpoint)
    return s


def test_bad_messages_get_errors_and_the_session_keeps_working(start_daemon):
    daemon = start_daemon()
    s = raw_socket(daemon.endpoint)
    cases = [
        ([b"not a header"], "malformed"),
        ([protocol.header(protocol.OBSERVATION, 7), b"\x00" * 12], "malformed"),  # not whole float64s
        (protocol.observation(8, np.zeros(4)), "wrong_dimension"),
        (protocol.observation(9, np.array([np.nan, 0.0])), "non_finite"),
        (protocol.observation(10, np.array([1.0, np.inf, 0.0])), "non_finite"),
        ([protocol.HEADER.pack(b"MPCD", 2, protocol.OBSERVATION, 11, 0, 0, 0), np.zeros(2).tobytes()], "unsupported_version"),
        ([protocol.header(42, 12)], "unknown_type"),
    ]
    for frames, expected in cases:
        s.send_multipart(frames)
        reply = protocol.decode(s.recv_multipart())
        assert isinstance(reply, protocol.ErrorReply), f"{expected}: got {reply}"
        assert reply.name == expected, f"expected {expected}, got {reply.name}: {reply.message}"
        assert reply.message
        # the session still plans
        s.send_multipart(protocol.observation(100, np.array([np.pi, 0.0])))
        ok = protocol.decode(s.recv_multipart(), 1)
        assert isinstance(ok, protocol.ActionReply) and ok.observation_sequence == 100
        assert np.all(np.isfinite(ok.action)) and abs(ok.action[0]) <= 2


def test_client_raises_a_clear_error_for_a_bad_state(start_daemon):
    daemon = start_daemon()
    with Controller(daemon.endpoint) as c:
        with pytest.raises(MpcdError) as error:
            c.act(np.array([1.0, 2.0, 3.0, 4.0]))
        assert error.value.name == "wrong_dimension"
        assert np.isfinite(c.act(np.array([0.1, 0.0]))).all()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_c_client_needs_nothing_but_libzmq(start_daemon, tmp_path):
    """Built with the very line docs/protocol.md and the file's own comment give (run from the
    repository), then with every warning an error."""
    import re
    import shlex
    documented = re.search(r"`(cc [^`]*mpcd_client\.c[^`&]*)", (REPO / "docs" / "protocol.md").read_text()).group(1).strip()
    commented = re.search(r"^ \*\s+(cc .*)$", (REPO / "clients" / "c" / "mpcd_client.c").read_text(), flags=re.M).group(1).strip()
    assert documented == commented, "docs/protocol.md and clients/c/mpcd_client.c give different build lines"
    line = shlex.split(documented)
    line[line.index("-o") + 1] = str(tmp_path / "documented")
    subprocess.run(line, check=True, cwd=REPO)
    binary = tmp_path / "mpcd_client"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(REPO / "clients" / "c" / "mpcd_client.c"), "-lzmq", "-lm"], check=True)
    daemon = start_daemon()
    result = subprocess.run([str(binary), daemon.endpoint], capture_output=True, text=True, timeout=60)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr
    assert "final angle" in result.stdout
    # the parameters call: accepted, then the episode as before; refused, with the daemon's reason
    result = subprocess.run([str(binary), daemon.endpoint, '{"target_angle": 0.0, "torque_weight": [0.001]}'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and '"target_angle":[0]' in result.stdout.replace(" ", ""), (result.stdout, result.stderr)
    result = subprocess.run([str(binary), daemon.endpoint, '{"goal": [1, 2]}'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "parameter goal: task pendulum has no such parameter" in result.stderr, (result.stdout, result.stderr)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_c_client_never_applies_an_action_that_is_not_a_torque(tmp_path):
    """Against a fake daemon the C example applied a NaN action as full torque (fmax and fmin pass
    NaN's other argument), -inf as -2, and took replies with another magic, version or a 16-byte
    header for actions, running all 200 steps each time."""
    import struct
    binary = tmp_path / "mpcd_client"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(REPO / "clients" / "c" / "mpcd_client.c"), "-lzmq", "-lm"], check=True)
    header = struct.Struct("<4sHHQQII")
    replies = {
        "NaN": lambda seq: [header.pack(b"MPCD", 1, 4, seq, 0, 0, 0), np.array([np.nan]).tobytes(), b"", b""],
        "-inf": lambda seq: [header.pack(b"MPCD", 1, 4, seq, 0, 0, 0), np.array([-np.inf]).tobytes(), b"", b""],
        "3 N m": lambda seq: [header.pack(b"MPCD", 1, 4, seq, 0, 0, 0), np.array([3.0]).tobytes(), b"", b""],
        "another magic": lambda seq: [header.pack(b"EVIL", 7, 4, seq, 0, 0, 0), np.array([0.3]).tobytes()],
        "a 16-byte header": lambda seq: [b"MPCD\x01\x00\x04\x00" + struct.pack("<Q", seq), np.array([0.3]).tobytes()],
    }
    hello = [b"", header.pack(b"MPCD", 1, 2, 0, 0, 0, 0), b'{"task": "pendulum"}']
    for index, (name, reply) in enumerate(replies.items()):
        endpoint = f"ipc://{tmp_path}/fake-{index}.sock"

        def answer(frames, reply=reply):
            kind, seq = header.unpack(frames[1])[2], header.unpack(frames[1])[3]
            return hello if kind == 1 else [b"", *reply(seq)]

        with fake_router(endpoint, answer):
            result = subprocess.run([str(binary), endpoint], capture_output=True, text=True, errors="replace", timeout=30)
        assert result.returncode == 1 and "200 steps" not in result.stdout, (name, result.stdout, result.stderr)
        assert "observation 2:" in result.stderr, (name, result.stderr)


@pytest.mark.parametrize("text, key", [
    ("[planner]\nsamples = 0\n", "planner.samples"),
    ("[planner]\ntemprature = 1.0\n", "planner.temprature"),
    ("[task]\nname = \"walker\"\n", "task.name"),
    ("[server]\nmode = \"fast\"\n", "server.mode"),
    ("[planner\nsamples = 3\n", "line 1"),
    ("[safety]\nmax_rate = [1e300]\n", "safety.max_rate"),
    ("[safety]\nmax_rate = [1e-300]\n", "safety.max_rate"),
    ("[planner]\nmax_rate = [0.0]\n", "planner.max_rate"),
    ("[planner]\nmax_rate_change = [1.0]\n", "planner.max_rate_change"),
    ("[planner]\nnoise_scale = [1e-9]\n", "planner.noise_scale"),
    ("[planner]\nsmoothing = \"kalman\"\n", "planner.smoothing"),
    ("[task]\nname = \"unicycle\"\ngoal = [1e9, 0.0]\n", "task.goal"),
    ("[task]\nname = \"pendulum\"\ntarget_angle = 4.0\n", "task.target_angle"),
    ("[task]\nname = \"point_mass\"\nposition_weight = 1e7\n", "task.position_weight"),
])
def test_bad_configuration_stops_the_start_naming_file_key_and_reason(tmp_path, text, key):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = subprocess.run([str(MPCD), "--config", str(config)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 78
    assert str(config) in result.stderr and key in result.stderr, result.stderr


def test_sigterm_stops_the_daemon_within_a_second(start_daemon):
    daemon = start_daemon()
    with Controller(daemon.endpoint) as c:
        c.act(np.array([0.5, 0.0]))
    start = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(timeout=5)
    assert time.monotonic() - start < 1.0
    assert daemon.process.returncode == 0


def test_the_default_runs_a_policy_prior_and_reports_its_diagnostics(start_daemon):
    daemon = start_daemon()
    with Controller(daemon.endpoint) as c:
        assert "prior_kl" in c.info["diagnostics"] and "amortisation_gap" in c.info["diagnostics"]
        iterations = []
        for _ in range(30):
            c.act(np.array([np.pi - 0.2, 0.0]))
            d = c.last.diagnostics
            iterations.append(d["iterations"])
            assert d["network_version"] >= 1
            assert np.isfinite(d["prior_cost"]) and np.isfinite(d["plan_cost"])
        assert set(iterations) <= {0.0, 1.0, 2.0}


def test_online_amortisation_publishes_new_weights_and_saves_them(start_daemon, tmp_path):
    config = tmp_path / "online.toml"
    config.write_text(f"""
[task]
name = "pendulum"
[planner]
samples = 256
iterations = 1
[prior]
online = true
online_batch = 32
online_publish_every = 20
state_directory = "{tmp_path / 'state'}"
""")
    daemon = start_daemon("--config", str(config))
    versions = []
    with Controller(daemon.endpoint) as c:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not versions or versions[-1] < 3):
            c.act(np.array([np.random.uniform(-3, 3), np.random.uniform(-1, 1)]))
            versions.append(c.last.diagnostics["network_version"])
    assert versions[0] == 0 and versions[-1] >= 3, f"weights never changed: {versions[-5:]}"
    daemon.stop()
    saved_files = list((tmp_path / "state").glob("pendulum-*_policy_online.safetensors"))
    assert len(saved_files) == 1, list((tmp_path / "state").iterdir())
    saved = saved_files[0]
    # a restart picks the saved weights up again
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint) as c:
        c.act(np.array([0.5, 0.0]))
        assert c.last.diagnostics["network_version"] >= 3
    daemon.stop()
    # saved weights that cannot serve (damaged on disk) once kept the daemon from starting (exit
    # 78, a failed unit until someone deleted the file): the configured network serves, and says so
    saved.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    check = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=20)
    assert check.returncode == 0 and f"note: prior: the online weights saved in {saved} were not taken" in check.stdout, check.stdout + check.stderr
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint) as c:
        c.act(np.array([0.5, 0.0]))
        assert c.last.diagnostics["network_version"] == 0
    assert "were not taken" in daemon.logs()


def test_a_state_directory_that_cannot_hold_the_weights_is_refused_or_logged(start_daemon, tmp_path):
    """A file at `state_directory` failed every save of the online weights, the last one at a stop
    without a word (`try?`): what the network learnt was lost while --check said OK. It is now
    refused at --check and at reload (the daemon serves on), and a save that fails at the stop, the
    folder having become a file since, is logged."""
    state = tmp_path / "state"
    config = tmp_path / "online.toml"

    def write(folder):
        config.write_text('[task]\nname = "pendulum"\n[planner]\nsamples = 128\niterations = 1\n'
                          f'[prior]\nonline = true\nonline_batch = 32\nonline_publish_every = 20\nstate_directory = "{folder}"\n')

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    write(a_file)
    checked = subprocess.run([str(MPCD), "--check", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 78 and "prior.state_directory" in checked.stderr and "is a file, not a folder" in checked.stderr, checked.stderr

    write(state)
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint) as c:
        deadline = time.monotonic() + 20
        while c.last is None or c.last.diagnostics["network_version"] < 2:
            assert time.monotonic() < deadline, "no weights published"
            c.act(np.array([np.random.uniform(-3, 3), np.random.uniform(-1, 1)]))
    write(a_file)
    refused = daemon.mpcctl("reload", check=False)
    assert refused.returncode != 0 and "is a file, not a folder" in refused.stdout + refused.stderr, (refused.stdout, refused.stderr)
    with Controller(daemon.endpoint) as c:
        assert np.isfinite(c.act(np.array([0.5, 0.0]))).all()
    # the folder becomes a file under the running daemon: the save at the stop fails, and says so
    shutil.rmtree(state)
    state.write_text("now a file")
    daemon.stop()
    assert "cannot save the online network" in daemon.logs(), daemon.logs()


def test_online_weights_serve_only_the_task_and_network_they_were_learnt_for(start_daemon, tmp_path):
    """Online weights were kept by task name and kind alone: after the target changed in the
    configuration, a restart or a reload went on serving the weights learnt for the old target
    (an attacking helper's point mass reached 0.27 of a new target of 3 in 15 s). They are now kept
    under a fingerprint of the [task] table and the configured network."""
    state = tmp_path / "state"
    config = tmp_path / "online.toml"

    def write(target, network="", folder=state):
        config.write_text(f'[task]\nname = "pendulum"\ntarget_angle = {target}\n[planner]\nsamples = 128\niterations = 1\n'
                          f'[prior]\nonline = true\nonline_batch = 32\nonline_publish_every = 20\nstate_directory = "{folder}"\n{network}')

    def learn(daemon):
        with Controller(daemon.endpoint) as c:
            deadline = time.monotonic() + 20
            while c.last is None or c.last.diagnostics["network_version"] < 3:
                assert time.monotonic() < deadline, "no weights published"
                c.act(np.array([np.random.uniform(-3, 3), np.random.uniform(-1, 1)]))

    def version(daemon):
        with Controller(daemon.endpoint) as c:
            c.act(np.array([0.5, 0.0]))
            return c.last.diagnostics["network_version"]

    write(0.0)
    daemon = start_daemon("--config", str(config))
    learn(daemon)
    daemon.stop()
    first = sorted(p.name for p in state.iterdir())
    assert len(first) == 1
    # the same file, the same weights
    daemon = start_daemon("--config", str(config))
    assert version(daemon) >= 3
    # a reload to another target starts from the configured network, not the old target's weights
    write(0.5)
    assert daemon.mpcctl("reload").returncode == 0
    assert version(daemon) == 0
    daemon.stop()
    # and so does a restart, while the first target's weights wait in their own file
    daemon = start_daemon("--config", str(config))
    assert version(daemon) == 0
    daemon.stop()
    assert set(first) <= {p.name for p in state.iterdir()}
    # a network configured since replaces what was learnt from the untrained one: the daemon plans
    # as it does with no saved weights at all
    shipped = f'file = "{REPO / "deploy" / "networks" / "pendulum_policy.safetensors"}"\n'
    actions = []
    for folder in (state, tmp_path / "empty"):
        write(0.0, shipped, folder)
        daemon = start_daemon("--config", str(config))
        with Controller(daemon.endpoint) as c:
            actions.append(c.act(np.array([0.5, 0.0])))
        daemon.stop()
    assert np.array_equal(actions[0], actions[1]), actions
    write(0)  # written as an integer, it reads the same: the same file
    daemon = start_daemon("--config", str(config))
    assert version(daemon) >= 3  # the first target's weights again, from the untrained start
    daemon.stop()
    # a file under the name used before fingerprints is not read, and --check says so
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(state / first[0], legacy / "pendulum_policy_online.safetensors")
    write(0.0, "", legacy)
    check = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=20)
    assert check.returncode == 0 and "saved before their file names carried the configuration's fingerprint" in check.stdout, check.stdout


def test_a_mujoco_robots_online_weights_are_kept_apart_from_another_robots(start_daemon, tmp_path):
    """Every MuJoCo task is named "mujoco": their online weights shared one file, so another robot
    started from this one's weights. The file name now carries a hash of the state and action names."""
    fixture = (REPO / "Tests" / "ModelsTests" / "Fixtures" / "mujoco" / "pendulum_on_a_cart.xml").read_text()
    (tmp_path / "a.xml").write_text(fixture)
    (tmp_path / "b.xml").write_text(fixture.replace('name="hinge"', 'name="pivot"').replace('joint="hinge"', 'joint="pivot"'))
    state = tmp_path / "state"
    files = []
    for model in ("a.xml", "b.xml"):
        config = tmp_path / f"{model}.toml"
        config.write_text(f'[task]\nname = "mujoco"\nmodel = "{model}"\n[[task.cost]]\nquantity = "qpos"\nindex = 1\n'
                          f'[planner]\nsamples = 32\nhorizon = 10\niterations = 1\n'
                          f'[prior]\nonline = true\nonline_batch = 16\nonline_publish_every = 10\nstate_directory = "{state}"\n')
        daemon = start_daemon("--config", str(config))
        with Controller(daemon.endpoint) as c:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and c.last is None or c.last.diagnostics["network_version"] < 1:
                assert time.monotonic() < deadline, "no weights published"
                c.act(np.array([0.0, np.random.uniform(-1, 1), 0.0, 0.0]))
        daemon.stop()
        files.append(sorted(p.name for p in state.iterdir()))
    assert len(files[0]) == 1 and files[0][0].startswith("mujoco-") and files[0][0].endswith("_policy_online.safetensors"), files
    assert len(files[1]) == 2 and files[0][0] in files[1], files  # robot b wrote a file of its own


def test_a_broken_weights_file_stops_the_start_with_the_reason(tmp_path):
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    config = tmp_path / "mpcd.toml"
    config.write_text(f'[task]\nname = "pendulum"\n[prior]\nfile = "{weights}"\n')
    result = subprocess.run([str(MPCD), "--config", str(config)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 78
    assert "prior.file" in result.stderr and "not JSON" in result.stderr, result.stderr


@pytest.mark.parametrize("kind, extra, table", [
    ("policy", ["--episodes", "1", "--steps", "30"], "[planner]\niterations = 0\n[prior]"),
    ("value", ["--value", "--states", "64", "--steps", "20"], "[value]"),
])
def test_train_writes_a_loadable_network_and_resumes(tmp_path, kind, extra, table):
    out = tmp_path / f"{kind}.safetensors"
    def train(rounds):
        return subprocess.run([str(MPCD), "train", "--out", str(out), "--rounds", str(rounds), "--epochs", "2", *extra],
                              capture_output=True, text=True, timeout=120)

    first = train(1)
    assert first.returncode == 0, first.stderr
    second = train(2)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "1 of 2 rounds done" in second.stderr
    assert "ETA" in second.stderr
    # standard error is a pipe here, as in a log file or the journal: plain lines, no carriage returns
    assert "\r" not in second.stderr and re.search(r"^progress +\d+%.*ETA", second.stderr, flags=re.M), second.stderr
    config = tmp_path / "mpcd.toml"
    config.write_text(f'[task]\nname = "pendulum"\n{table}\nfile = "{out}"\n')
    check = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr
    if kind == "value":
        # a value learned without a discount, used with one: refused, with the reason
        config.write_text(f'[task]\nname = "pendulum"\n[planner]\ndiscount = 0.99\n{table}\nfile = "{out}"\n')
        check = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=10)
        assert check.returncode == 78 and "planner.discount" in check.stderr and "learned with discount 1.0" in check.stderr, check.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--label-prior-start", "sideways", "Please provide one of 'prior', 'cheaper' or 'carried'"),
    ("--label-prior-strength", "1.5", "--label-prior-strength must be a number in [0, 1]"),
    ("--label-prior-strength", "nan", "--label-prior-strength must be a number in [0, 1]"),
    ("--soft-min-temperature", "-1", "--soft-min-temperature must be a finite number >= 0"),
    ("--soft-min-temperature", "inf", "--soft-min-temperature must be a finite number >= 0"),
    # counts that once trapped on an overflow or corrupted the heap, and one too big to hold
    ("--episodes", "9223372036854775807", "must be integers in [1, 10000000]"),
    ("--states", "2305843009213693952", "must be integers in [1, 10000000]"),
    ("--steps", "0", "must be integers in [1, 10000000]"),
    ("--target-iterations", "5000", "--target-iterations in [1, 1000]"),
    ("--label-iterations", "-5", "--label-iterations must be an integer in [1, 1000]"),
    ("--label-iterations", "0", "--label-iterations must be an integer in [1, 1000]"),
    ("--episodes", "10000000", "labelled states would take 305175 MiB; at most 8192 MiB are kept"),
])
def test_train_refuses_bad_labelling_flags_before_any_work(tmp_path, flag, value, message):
    out = tmp_path / "policy.safetensors"
    result = subprocess.run([str(MPCD), "train", "--out", str(out), f"{flag}={value}"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not out.exists()


def _train(tmp_path, out, *args, config=None):
    extra = ["--config", str(config)] if config else []
    return subprocess.run([str(MPCD), "train", "--out", str(out), *extra, *args], capture_output=True, text=True, timeout=120)


TINY_POLICY = ["--rounds", "2", "--episodes", "1", "--steps", "20", "--epochs", "2", "--label-iterations", "1", "--fresh"]
TINY_VALUE = ["--value", "--rounds", "2", "--states", "32", "--steps", "10", "--epochs", "2", "--target-iterations", "1", "--fresh"]


@pytest.fixture(scope="module")
def discounted_value(tmp_path_factory):
    """A small pendulum value learnt with discount 0.99."""
    folder = tmp_path_factory.mktemp("value")
    out = folder / "value.safetensors"
    result = _train(folder, out, *TINY_VALUE, "--discount", "0.99")
    assert result.returncode == 0, result.stderr
    return out


def test_train_label_value_and_target_prior_refuse_bad_networks_before_any_work(tmp_path, discounted_value):
    out = tmp_path / "net.safetensors"
    cases = [
        (["--value", "--label-value", str(discounted_value)], "--label-value is for distilling a policy or plan, not with --value"),
        (["--target-prior", "embedded:pendulum_policy"], "--target-prior is for --value"),
        (["--label-value", str(tmp_path / "missing.safetensors")], f"--label-value: {tmp_path / 'missing.safetensors'}: cannot be read"),
        (["--label-value", "embedded:pendulum_policy"], 'kind is "policy"; expected value'),
        (["--label-value", str(discounted_value)], "was learnt with discount 0.99, the configuration's [planner] discount is 1.0"),
        (["--value", "--target-prior", str(discounted_value)], 'kind is "value"; expected policy or plan'),
        (["--value", "--target-prior", "embedded:nope"], "--target-prior: embedded:nope: no embedded network of that name"),
        (["--value", "--target-prior", "embedded:pendulum_policy", "--config", str(REPO / "deploy" / "config" / "cartpole.toml")],
         "made for task pendulum, but the task is cartpole"),
    ]
    for args, message in cases:
        result = _train(tmp_path, out, *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert not out.exists() and not (tmp_path / "net.safetensors.checkpoint").exists(), args


def test_train_label_value_and_target_prior_change_what_is_learnt(tmp_path, discounted_value):
    """The labeller plans with the value, and value iteration plans from the prior: the same seed
    gives other weights with them than without them."""
    config = tmp_path / "discounted.toml"
    config.write_text('[task]\nname = "pendulum"\n[planner]\nhorizon = 8\ndiscount = 0.99\n')
    weights = {}
    for name, args in [("policy", TINY_POLICY), ("policy_with_value", [*TINY_POLICY, "--label-value", str(discounted_value)]),
                       ("value", TINY_VALUE), ("value_with_prior", [*TINY_VALUE, "--target-prior", "embedded:pendulum_policy"])]:
        out = tmp_path / f"{name}.safetensors"
        result = _train(tmp_path, out, *args, config=config)
        assert result.returncode == 0, (name, result.stderr)
        weights[name] = out.read_bytes()
    assert weights["policy"] != weights["policy_with_value"]
    assert weights["value"] != weights["value_with_prior"]
    # and the same command twice gives the same file: the difference is the flag's, not noise
    again = tmp_path / "again.safetensors"
    assert _train(tmp_path, again, *TINY_POLICY, "--label-value", str(discounted_value), config=config).returncode == 0
    assert again.read_bytes() == weights["policy_with_value"]


def _strip_checkpoint_record(path):
    """A checkpoint as mpcd wrote them before they recorded their inputs."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    for key in ("checkpoint_inputs", "checkpoint_inputs_fingerprint"):
        del header["__metadata__"][key]
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:])


def test_train_resumes_only_a_checkpoint_written_with_the_same_inputs(tmp_path, discounted_value):
    config = tmp_path / "discounted.toml"
    config.write_text('[task]\nname = "pendulum"\n[planner]\nhorizon = 8\ndiscount = 0.99\n')
    out = tmp_path / "policy.safetensors"
    checkpoint = out.with_name(out.name + ".checkpoint")
    one_round = ["--rounds", "1", "--episodes", "1", "--steps", "10", "--epochs", "1", "--label-iterations", "1"]
    two_rounds = ["--rounds", "2", *one_round[2:]]

    def first_round(*extra):
        checkpoint.unlink(missing_ok=True)
        assert _train(tmp_path, out, *one_round, *extra, config=config).returncode == 0
        return checkpoint.read_bytes()

    # resumed with a value the first round's labels never saw: refused, the checkpoint untouched
    written = first_round()
    mixed = _train(tmp_path, out, *two_rounds, "--label-value", str(discounted_value), config=config)
    assert mixed.returncode != 0 and "was written with --label-prior-start cheaper" in mixed.stderr, mixed.stderr
    assert f"this run has --label-value {discounted_value}" in mixed.stderr and "--fresh" in mixed.stderr, mixed.stderr
    assert checkpoint.read_bytes() == written
    # another labeller strength: refused too
    stronger = _train(tmp_path, out, *two_rounds, "--label-prior-strength", "1", config=config)
    assert stronger.returncode != 0 and "--label-prior-strength 1.0" in stronger.stderr, stronger.stderr
    # the same inputs resume
    same = _train(tmp_path, out, *two_rounds, config=config)
    assert same.returncode == 0 and "1 of 2 rounds done" in same.stderr, same.stderr
    # the same value file spelled another way resumes; another file under the same name does not
    first_round("--label-value", str(discounted_value))
    spelled = subprocess.run([str(MPCD), "train", "--out", str(out), "--config", str(config), *two_rounds,
                              "--label-value", f"./{discounted_value.name}"], cwd=discounted_value.parent,
                             capture_output=True, text=True, timeout=120)
    assert spelled.returncode == 0 and "1 of 2 rounds done" in spelled.stderr, spelled.stderr
    first_round("--label-value", str(discounted_value))
    other = tmp_path / "other_value.safetensors"
    assert _train(tmp_path, other, *TINY_VALUE, "--discount", "0.99", "--seed", "7").returncode == 0
    swapped = tmp_path / "swapped.safetensors"
    swapped.write_bytes(other.read_bytes())
    renamed = first_round("--label-value", str(swapped))
    swapped.write_bytes(discounted_value.read_bytes())
    changed = _train(tmp_path, out, *two_rounds, "--label-value", str(swapped), config=config)
    assert changed.returncode != 0 and "byte for byte" in changed.stderr, changed.stderr
    assert checkpoint.read_bytes() == renamed
    # a checkpoint from before they recorded their inputs resumes as one with none named
    first_round()
    _strip_checkpoint_record(checkpoint)
    old = _train(tmp_path, out, *two_rounds, config=config)
    assert old.returncode == 0 and "1 of 2 rounds done" in old.stderr, old.stderr
    first_round()
    _strip_checkpoint_record(checkpoint)
    old_mixed = _train(tmp_path, out, *two_rounds, "--label-value", str(discounted_value), config=config)
    assert old_mixed.returncode != 0 and "nothing recorded" in old_mixed.stderr, old_mixed.stderr
    # a value's checkpoint for a policy: its kind is what is wrong, and that is what is said
    value = tmp_path / "value.safetensors"
    value_round = [*TINY_VALUE[:2], "1", *TINY_VALUE[3:-1]]
    assert _train(tmp_path, value, *value_round, "--target-prior", "embedded:pendulum_policy", config=config).returncode == 0
    checkpoint.write_bytes(value.with_name(value.name + ".checkpoint").read_bytes())
    wrong_kind = _train(tmp_path, out, *two_rounds, config=config)
    assert wrong_kind.returncode != 0 and "written with" not in wrong_kind.stderr and "checkpoint" in wrong_kind.stderr, wrong_kind.stderr
    # and a value resumed without the prior its targets planned from: refused
    dropped = _train(tmp_path, value, *TINY_VALUE[:-1], config=config)
    assert dropped.returncode != 0 and "was written with --target-prior embedded:pendulum_policy" in dropped.stderr, dropped.stderr
    # a checkpoint that is not one: refused by name, with the way out
    checkpoint.write_bytes(b"not a checkpoint")
    broken = _train(tmp_path, out, *two_rounds, config=config)
    assert broken.returncode != 0 and f"{checkpoint}: not a checkpoint mpcd train can resume" in broken.stderr, broken.stderr


def _edit_checkpoint(path, edit):
    """Rewrites a checkpoint's float32 tensors and metadata through ``edit(tensors, metadata)``."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    metadata = header.pop("__metadata__", {})
    body = raw[8 + length:]
    tensors = {name: np.frombuffer(body[e["data_offsets"][0]:e["data_offsets"][1]], dtype=np.float32).reshape(e["shape"]).copy()
               for name, e in header.items()}
    edit(tensors, metadata)
    header, data, offset = {"__metadata__": metadata}, b"", 0
    for name, values in tensors.items():
        chunk = np.ascontiguousarray(values, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(values.shape), "data_offsets": [offset, offset + len(chunk)]}
        data += chunk
        offset += len(chunk)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


def _one_round(tiny):
    """A tiny run's arguments with one round, and the same without --fresh (its resume to two)."""
    one = ["1" if previous == "--rounds" else a for previous, a in zip([None, *tiny], tiny)]
    return one, [a for a in tiny if a != "--fresh"]


def _shorten(name):
    def edit(tensors, metadata):
        tensors[name] = tensors[name][:-1]
    return edit


def _poison(name, value):
    def edit(tensors, metadata):
        tensors[name][0] = value
    return edit


def _metadata(key, value):
    def edit(tensors, metadata):
        metadata[key] = value
    return edit


@pytest.mark.parametrize("kind, edit", [
    ("policy", _shorten("checkpoint.adam_m")),
    ("policy", _poison("checkpoint.adam_v", -1.0)),
    ("policy", _poison("checkpoint.adam_m", float("nan"))),
    ("policy", _metadata("checkpoint_rounds", "-3")),
    ("policy", _metadata("checkpoint_adam_step", "-1")),
    ("policy", _shorten("checkpoint.inputs")),
    ("policy", _shorten("checkpoint.target_std")),
    ("policy", _poison("checkpoint.target_std", 0.0)),
    ("policy", _poison("checkpoint.target_mean", float("inf"))),
    ("policy", _poison("checkpoint.inputs", float("nan"))),
    ("value", _shorten("checkpoint.adam_v")),
    ("value", _shorten("checkpoint.target")),
    ("value", _poison("checkpoint.target", float("nan"))),
])
def test_train_refuses_a_damaged_checkpoint_before_any_work(tmp_path, kind, edit):
    """A checkpoint whose optimiser state, round count or labels training could not have written:
    refused by name before any round, not a trap in the first update or a network of NaNs."""
    out = tmp_path / f"{kind}.safetensors"
    checkpoint = out.with_name(out.name + ".checkpoint")
    one_round, resume = _one_round(TINY_POLICY if kind == "policy" else TINY_VALUE)
    first = _train(tmp_path, out, *one_round)
    assert first.returncode == 0, first.stderr
    _edit_checkpoint(checkpoint, edit)
    damaged = checkpoint.read_bytes()
    out.unlink()
    resumed = _train(tmp_path, out, *resume)
    assert resumed.returncode > 0 and f"{checkpoint}" in resumed.stderr and "damaged checkpoint" in resumed.stderr
    assert "--fresh starts over" in resumed.stderr, resumed.stderr
    assert checkpoint.read_bytes() == damaged and not out.exists()


def test_train_edited_checkpoint_helper_changes_nothing_by_itself(tmp_path):
    """The editor above rewrites a checkpoint without damaging it: the same file resumes."""
    out = tmp_path / "policy.safetensors"
    checkpoint = out.with_name(out.name + ".checkpoint")
    one_round, resume = _one_round(TINY_POLICY)
    assert _train(tmp_path, out, *one_round).returncode == 0
    _edit_checkpoint(checkpoint, lambda tensors, metadata: None)
    resumed = _train(tmp_path, out, *resume)
    assert resumed.returncode == 0 and "1 of 2 rounds done" in resumed.stderr, resumed.stderr


def test_train_refuses_a_discount_it_would_not_use(tmp_path):
    out = tmp_path / "policy.safetensors"
    result = _train(tmp_path, out, "--discount", "0.5")
    assert result.returncode != 0 and "--discount is for --value" in result.stderr, result.stderr
    assert not out.exists()
