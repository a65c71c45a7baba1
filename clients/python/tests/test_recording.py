"""Tick recording, read back with pyarrow, and replay (docs/recording.md)."""
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import MPCD, Streamer
from mpcd_client import Controller
from mpcd_client.optimum import step_model
from test_parameters import UNICYCLE, unicycle_step

DIAGNOSTICS = ["iterations", "cost", "compute_seconds", "tick_lateness_seconds", "overruns", "effective_sample_size",
               "kl_divergence", "invalid_samples", "advanced_steps", "prior_kl", "amortisation_gap", "prior_cost", "plan_cost",
               "network_version", "value_term"]


def default_with(tmp_path, recording, extra=""):
    """The embedded default with a [recording] table (and more lines), as a file."""
    text = subprocess.run([str(MPCD), "--print-default"], check=True, capture_output=True, text=True).stdout + extra
    text += "\n[recording]\n" + recording
    path = tmp_path / f"mpcd-{time.monotonic_ns()}.toml"
    path.write_text(text)
    return path, text


def recordings(folder):
    return sorted(Path(folder).glob("mpcd-*.arrows"))


def read(files):
    """Every file's rows as one table, and the first file's metadata (as text)."""
    tables = [pa.ipc.open_stream(pa.OSFile(str(f))).read_all() for f in files]
    meta = {k.decode(): v.decode() for k, v in tables[0].schema.metadata.items()}
    return pa.concat_tables(tables), meta


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_thousand_ticks_of_two_sessions_read_back_as_the_clients_received_them(start_daemon, tmp_path):
    folder = tmp_path / "recordings"
    # small files: the rows span several, which must read back as one run
    config, text = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\nfile_mb = 0.1\nbudget_mb = 100\n')
    daemon = start_daemon("--config", str(config))
    received = {"robot-a": [], "robot-b": []}
    rng = np.random.default_rng(3)
    clients = {name: Controller(daemon.endpoint, identity=name.encode()) for name in received}
    states = {name: np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-1, 1)]) for name in received}
    try:
        for step in range(500):
            for name, client in clients.items():
                th, thdot = states[name]
                action = client.act(np.array([th, thdot]))
                received[name].append((np.array([th, thdot]), client.last))
                _, th, thdot = step_model(th, thdot, float(action[0]))
                states[name] = np.array([th, thdot])
    finally:
        for client in clients.values():
            client.close()
    assert wait_for(lambda: daemon.status()["recording"]["written"] == 1000), daemon.status()["recording"]
    status = daemon.status()["recording"]
    assert status["enabled"] and status["dropped"] == 0 and status["files"] >= 2
    daemon.mpcctl("record", "off")
    files = recordings(folder)
    assert len(files) == status["files"] >= 2
    table, meta = read(files)
    assert table.num_rows == 1000
    assert meta["configuration"] == text and meta["task"] == "pendulum" and meta["configuration_source"] == str(config)
    assert meta["state_dimension"] == "2" and meta["action_dimension"] == "1" and meta["horizon"] == "32"
    rows = table.to_pydict()
    horizon, steps = 32, 5
    for name, replies in received.items():
        mine = [i for i, peer in enumerate(rows["peer"]) if peer == name]
        assert len(mine) == 500
        assert len({rows["session"][i] for i in mine}) == 1
        times = [rows["time"][i] for i in mine]
        assert times == sorted(times)
        for (sent, reply), i in zip(replies, mine):
            assert rows["sequence"][i] == reply.observation_sequence
            assert rows["tick"][i] == reply.tick
            assert rows["flags"][i] == reply.flags
            assert np.array_equal(np.float32(rows["observation"][i]), np.float32(sent))
            assert np.array_equal(np.float32(rows["action"][i]), np.float32(reply.action))
            for k, key in enumerate(DIAGNOSTICS):
                assert np.array_equal(rows[key][i], reply.diagnostics[key], equal_nan=True), key
            # the upcoming actions sent are the plan's next ones (the guard changed nothing here)
            mean = np.float32(rows["plan_mean"][i])
            assert len(mean) == horizon
            assert np.array_equal(mean[1:steps + 1], np.float32(reply.plan).ravel()[:steps])
            std = np.float32(rows["plan_std"][i])
            assert len(std) == horizon and np.all(np.isfinite(std)) and np.all(std > 0)
            assert rows["parameters"][i] == "{}"
            assert 0 <= rows["observation_age"][i] < 1
        # each plan starts from the last action sent to this session
        for previous, i in zip(mine, mine[1:]):
            assert np.array_equal(np.float32(rows["applied_last"][i]), np.float32(rows["action"][previous]))


def run_pendulum(endpoint, episodes, steps, identity=b"replayed"):
    with Controller(endpoint, identity=identity) as client:
        for episode in range(episodes):
            th, thdot = np.pi - 0.3 * episode, 0.0
            for _ in range(steps):
                action = client.act(np.array([th, thdot]))
                _, th, thdot = step_model(th, thdot, float(action[0]))
            client.reset()


def test_replay_reproduces_every_action_bit_for_bit_and_names_where_a_change_departs(start_daemon, tmp_path):
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\n')
    daemon = start_daemon("--config", str(config))
    run_pendulum(daemon.endpoint, episodes=3, steps=120)
    daemon.stop()
    files = [str(f) for f in recordings(folder)]
    plot = tmp_path / "replay.svg"
    same = subprocess.run([str(MPCD), "replay", *files, "--plot", str(plot)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "replayed 360 of 360 recorded ticks" in same.stdout and "360 identical bit for bit" in same.stdout
    assert "no difference" in same.stdout
    assert plot.read_text().startswith("<svg")
    # the same configuration with one planner setting changed: the first plan that uses it differs
    changed = tmp_path / "changed.toml"
    changed.write_text(config.read_text().replace("temperature = 0.5", "temperature = 0.4"))
    departed = subprocess.run([str(MPCD), "replay", *files, "--config", str(changed)], capture_output=True, text=True, timeout=120)
    assert departed.returncode == 1, departed.stdout + departed.stderr
    table, _ = read(files)
    first_iterated = next(i for i, n in enumerate(table.column("iterations").to_pylist()) if n > 0)
    tick = table.column("tick")[first_iterated].as_py()
    assert f"first difference: row {first_iterated}, session 0 (replayed), tick {tick}," in departed.stdout, departed.stdout
    # a recording of the layout before plan_std: refused with the reason, not replayed wrongly
    old = tmp_path / "mpcd-old.arrows"
    with pa.ipc.new_stream(str(old), table.schema.remove(table.schema.get_field_index("plan_std"))) as writer:
        writer.write_table(table.drop_columns(["plan_std"]).replace_schema_metadata(table.schema.metadata))
    refused = subprocess.run([str(MPCD), "replay", str(old)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 78 and "no plan_std column: an mpcd before that column recorded it" in refused.stderr, refused.stderr
    # rows the daemon never writes, crafted: refused at once, where they had planned for an hour
    # (10,000 iterations a row of a planner configured for 2) or taken 100 MB a session
    def crafted(name, rows, metadata=None, **columns):
        for column, values in columns.items():
            field = rows.schema.field(column)
            rows = rows.set_column(rows.schema.get_field_index(column), field, pa.array(values, type=field.type))
        path = tmp_path / name
        rows = rows.replace_schema_metadata(metadata or table.schema.metadata)
        with pa.ipc.new_stream(str(path), rows.schema) as writer:
            writer.write_table(rows)
        return subprocess.run([str(MPCD), "replay", str(path)], capture_output=True, text=True, timeout=60)

    first = table.slice(0, 10)
    asking = crafted("mpcd-asking.arrows", first, iterations_requested=[10_000] * 10)
    assert asking.returncode == 78 and "is not one mpcd writes" in asking.stderr, asking.stderr
    metadata = dict(table.schema.metadata)
    metadata[b"configuration"] = metadata[b"configuration"].replace(b"[server]\n", b"[server]\nmax_sessions = 1\n", 1)
    twice = first.take([i // 2 for i in range(20)])  # each row twice: two sessions in step
    crowded = crafted("mpcd-crowded.arrows", twice, metadata, session=[i % 2 for i in range(20)])
    assert crowded.returncode == 78 and "beyond the recorded max_sessions = 1" in crowded.stderr, crowded.stderr


def test_replay_of_a_realtime_run_with_task_parameters(start_daemon, tmp_path):
    """Realtime ticks (advanced observations, warm starts shifted by elapsed steps, deadlines) and
    a goal the client moves: replayed bit for bit."""
    folder = tmp_path / "recordings"
    config = tmp_path / "unicycle.toml"
    config.write_text(UNICYCLE + f'\n[server]\nmode = "realtime"\nrate_hz = 50\n\n[recording]\ndirectory = "{folder}"\nenabled = true\n')
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint, identity=b"unicycle") as client:
        state = np.array([0.0, 0.0, 0.0])
        for step in range(120):
            if step == 60:
                client.set_parameters(goal=[1.0, 2.0])
            client.send_observation(state)
            reply = client.receive(timeout=2.0)
            state = unicycle_step(state, reply.action)
    daemon.stop()
    files = [str(f) for f in recordings(folder)]
    table, _ = read(files)
    assert json.loads(table.column("parameters")[-1].as_py()) == {"goal": [1.0, 2.0]}
    assert table.column("parameters")[0].as_py() == "{}"
    # 50 Hz against the unicycle's 0.1 s step: warm starts shifted by 0 and by 1 step
    assert {0, 1} <= set(table.column("shift").to_pylist())
    result = subprocess.run([str(MPCD), "replay", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "no difference" in result.stdout, result.stdout + result.stderr
    # a recorded parameters value that is not JSON, 200 KB of it: refused, and the message quotes
    # its start only (it once repeated all of it)
    junk = "x" * 200_000
    column = table.column("parameters").to_pylist()
    column[-1] = junk
    edited = tmp_path / "mpcd-edited.arrows"
    index = table.schema.get_field_index("parameters")
    with pa.ipc.new_stream(str(edited), table.schema) as writer:
        writer.write_table(table.set_column(index, table.schema.field(index), pa.array(column, type=table.schema.field(index).type)))
    refused = subprocess.run([str(MPCD), "replay", str(edited)], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "a recorded parameters value is not JSON" in refused.stdout + refused.stderr, refused
    assert "(200000 bytes)" in refused.stdout + refused.stderr and len(refused.stdout + refused.stderr) < 5000


def test_recording_switched_at_run_time_and_refused_without_a_folder(start_daemon, tmp_path):
    plain = start_daemon()
    refused = plain.mpcctl("record", "on", check=False)
    assert refused.returncode != 0 and "[recording]" in refused.stderr
    assert "recording" not in plain.status()
    plain.stop()
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\n')
    daemon = start_daemon("--config", str(config))
    run_pendulum(daemon.endpoint, 1, 20, identity=b"before")
    assert not daemon.status()["recording"]["enabled"] and recordings(folder) == []
    switched = daemon.mpcctl("record", "on")
    assert "recording  on" in switched.stdout
    run_pendulum(daemon.endpoint, 1, 30, identity=b"during")
    daemon.mpcctl("record", "off")
    run_pendulum(daemon.endpoint, 1, 20, identity=b"after")
    assert wait_for(lambda: daemon.status()["recording"]["written"] == 30)
    files = recordings(folder)
    table, _ = read(files)
    assert table.num_rows == 30 and set(table.column("peer").to_pylist()) == {"during"}
    # switched off, the file ends with the stream's end marker
    assert files[-1].read_bytes()[-8:] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    assert "mpcd_recorded_ticks_total 30" in daemon.mpcctl("metrics").stdout


def test_the_disk_budget_holds_and_the_oldest_files_go(start_daemon, tmp_path):
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\nfile_mb = 0.05\nbudget_mb = 0.2\n')
    daemon = start_daemon("--config", str(config))
    run_pendulum(daemon.endpoint, 4, 200)
    assert wait_for(lambda: daemon.status()["recording"]["written"] == 800)
    status = daemon.status()["recording"]
    files = recordings(folder)
    assert status["files"] > len(files) >= 2  # some were deleted
    assert sum(f.stat().st_size for f in files) <= 0.2 * 1048576
    # what is left is the newest: its last rows are the last ticks sent
    table, _ = read(files[-2:-1])
    assert table.num_rows > 0


def test_a_disk_that_refuses_drops_and_counts_records_and_the_daemon_keeps_serving(start_daemon, tmp_path):
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\nfile_mb = 0.02\nbudget_mb = 1\n')
    daemon = start_daemon("--config", str(config))
    run_pendulum(daemon.endpoint, 1, 50, identity=b"fine")
    assert wait_for(lambda: daemon.status()["recording"]["written"] == 50)
    # the folder goes and a file takes its place: no new recording file can be made
    for f in recordings(folder):
        f.unlink()
    folder.rmdir()
    folder.write_text("not a folder")
    run_pendulum(daemon.endpoint, 2, 200, identity=b"refused")  # every reply still comes
    assert wait_for(lambda: daemon.status()["recording"]["dropped"] > 0)
    assert "recording: cannot write" in daemon.logs()
    assert "cannot write" in daemon.status()["recording"]["problem"]
    with Controller(daemon.endpoint, identity=b"still") as client:
        assert np.isfinite(client.act(np.array([0.1, 0.0]))).all()
    # the folder back: recording resumes in a new file
    folder.unlink()
    folder.mkdir()
    time.sleep(1.2)  # the writer leaves a failing disk alone for a second
    written = daemon.status()["recording"]["written"]
    run_pendulum(daemon.endpoint, 1, 200, identity=b"back")
    assert wait_for(lambda: daemon.status()["recording"]["written"] > written + 100), daemon.status()["recording"]
    assert recordings(folder) and daemon.status()["recording"]["problem"] is None


@pytest.mark.parametrize("table, words", [
    ("enabled = true\n", "recording.directory: is needed"),
    ('directory = "r"\nfile_mb = -1\n', "recording.file_mb"),
    ('directory = "r"\nfile_mb = 10\nbudget_mb = 15\n', "recording.budget_mb: must hold at least two files"),
    ('directory = "r"\nqueue_ticks = 3\n', "recording.queue_ticks"),
    ('directory = "r"\nenabled = "yes"\n', "recording.enabled"),
    ('directory = "r"\nrotate = 5\n', "rotate"),
])
def test_a_bad_recording_table_is_refused_by_name(tmp_path, table, words):
    config, _ = default_with(tmp_path, table)
    result = subprocess.run([str(MPCD), "--config", str(config), "--check"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and words in result.stderr, result.stderr


def test_a_recording_folder_that_cannot_be_made_is_reported_and_the_daemon_serves(start_daemon, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config, _ = default_with(tmp_path, f'directory = "{blocker}/recordings"\nenabled = true\n')
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint) as client:
        assert np.isfinite(client.act(np.array([0.1, 0.0]))).all()
    status = daemon.status()["recording"]
    assert not status["enabled"] and "cannot record in" in status["problem"]
    assert "recording did not start" in daemon.logs()


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x00" * 16])
def test_replay_refuses_a_file_that_is_not_a_recording(tmp_path, content):
    path = tmp_path / "bad.arrows"
    path.write_bytes(content)
    result = subprocess.run([str(MPCD), "replay", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "mpcd replay:" in result.stderr and "Fatal" not in result.stderr, result.stderr


def swing(endpoint, identity, angle, steps, events):
    """One pendulum session of `steps` steps from `angle` at rest; `events[step]()` runs before that step."""
    with Controller(endpoint, identity=identity) as client:
        th, thdot = angle, 0.0
        for step in range(steps):
            if step in events:
                events[step]()
            action = client.act(np.array([th, thdot]))
            _, th, thdot = step_model(th, thdot, float(action[0]))


def test_replay_goes_on_across_files_a_reload_began(start_daemon, tmp_path):
    """A reload ends the file and rebuilds every session's planner: the session goes on, and its
    rows in both files replay as one."""
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\n')
    daemon = start_daemon("--config", str(config))
    swing(daemon.endpoint, b"across", 3.0, 160, {80: lambda: daemon.mpcctl("reload")})
    daemon.stop()
    files = [str(f) for f in recordings(folder)]
    assert len(files) == 2
    first, _ = read(files[:1])
    assert 70 <= first.num_rows <= 90
    result = subprocess.run([str(MPCD), "replay", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "replayed 160 of 160" in result.stdout and "no difference" in result.stdout, result.stdout + result.stderr
    # the second file alone replays too: its planners were new at its first row
    second = subprocess.run([str(MPCD), "replay", files[1]], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr


def test_a_recording_begun_mid_session_replays_nothing_of_it_and_says_so(start_daemon, tmp_path):
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\n')
    daemon = start_daemon("--config", str(config))
    swing(daemon.endpoint, b"midway", 2.0, 60, {30: lambda: daemon.mpcctl("record", "on")})
    daemon.stop()
    result = subprocess.run([str(MPCD), "replay", *map(str, recordings(folder))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "replayed 0 of 30" in result.stdout and "before the first row given" in result.stdout


def test_recording_switched_off_stays_off_through_a_reload(start_daemon, tmp_path):
    folder = tmp_path / "recordings"
    config, _ = default_with(tmp_path, f'directory = "{folder}"\nenabled = true\n')
    daemon = start_daemon("--config", str(config))
    assert daemon.status()["recording"]["enabled"]
    daemon.mpcctl("record", "off")
    daemon.mpcctl("reload")
    assert not daemon.status()["recording"]["enabled"]
    daemon.mpcctl("record", "on")
    daemon.mpcctl("reload")
    assert daemon.status()["recording"]["enabled"]


def test_a_full_disk_leaves_no_empty_recordings_behind(start_daemon, tmp_path):
    """On a full disk the recorder tried a new file every second; each one's schema could not be
    written, and each was left behind empty, never counted against budget_mb: a day on a full disk
    would leave 86,400 of them. A file that cannot take its schema is now removed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        config = tmp_path / "full.toml"
        config.write_text(f'[task]\nname = "pendulum"\n[planner]\nsamples = 64\n[server]\nmode = "realtime"\nrate_hz = 50\n'
                          f'[recording]\nenabled = true\ndirectory = "{disk}"\nfile_mb = 0.05\nbudget_mb = 100\n')
        daemon = start_daemon("--config", str(config))
        with Controller(daemon.endpoint, timeout=2.0) as c:
            end = time.monotonic() + 6.0
            while time.monotonic() < end:  # 96 KiB fills in about 2 s at 50 Hz, then a new file is tried every second
                assert np.isfinite(c.act(np.array([3.0, 0.0]))).all()
        daemon.stop()
        sizes = [p.stat().st_size for p in disk.iterdir()]
        assert sizes and 0 not in sizes, sizes
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_recording_folder_deleted_while_recording_is_made_again(start_daemon, tmp_path):
    """The folder was made only when recording started: deleted (a clean-up script, a tired
    operator), every tick after was dropped until a reload, and `mpcctl record on` said "on"."""
    import shutil
    folder = tmp_path / "recordings"
    config = tmp_path / "rec.toml"
    config.write_text(f'[task]\nname = "pendulum"\n[planner]\nsamples = 64\n[server]\nmode = "realtime"\nrate_hz = 50\n'
                      f'[recording]\nenabled = true\ndirectory = "{folder}"\nfile_mb = 0.02\n')
    daemon = start_daemon("--config", str(config))
    with Controller(daemon.endpoint, timeout=2.0) as c:
        c.act(np.array([3.0, 0.0]))
        assert wait_for(lambda: any(recordings(folder)))
        shutil.rmtree(folder)
        end = time.monotonic() + 4.0  # a file of 0.02 MB fills in well under a second at 50 Hz
        while time.monotonic() < end:
            c.act(np.array([3.0, 0.0]))
    assert folder.is_dir() and any(p.stat().st_size > 0 for p in recordings(folder)), list(folder.iterdir()) if folder.exists() else "no folder"
