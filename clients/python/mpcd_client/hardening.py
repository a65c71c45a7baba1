"""How a well-behaved client fares while an attacker loads the daemon.

    python -m mpcd_client.hardening [scenario ...] [--seconds S] [--json] [--mpcd PATH]

Every scenario starts its own mpcd (realtime at 50 Hz, pendulum, K = 256) on a free loopback port,
with a fresh RUNTIME_DIRECTORY so that its control socket is private, runs one attacker against it
(in a separate process, so that Python's GIL never throttles the measurement) and measures one
well-behaved client: a `Controller` that sends the pendulum state [0.5, 0.0], then, for the
measurement window (--seconds), receives the realtime replies and sends a fresh observation after
every reply, so that it is never stale. The scenarios:

  multipart         one multipart observation of many 60 kB frames (each under the 64 KiB
                    per-frame max_message_bytes), --multipart-mb in all, from a DEALER
  idle-connections  the daemon runs with 1024 open files (soft and hard); --connections plain
                    TCP sockets connect to its port and never send a byte; then the good client
                    arrives as a newcomer
  large-flood       a DEALER floods 64 kB observations (a valid header and a 65,000-byte state)
                    as fast as it can
  control-flood     a DEALER pipelines --control-requests {"command":"status"} requests on the
                    control socket at once, then reads the replies
  session-squat     64 DEALERs (the default max_sessions) each send a valid observation every
                    --squat-interval s, from 2 s before the measurement; then the good client
                    arrives as a newcomer

In the newcomer scenarios the window starts when the good client starts; in the others the good
client is connected and served first and the window starts when the attack has started. The good
client waits 0.5 s for a reply; then, as Controller does, it starts over on a new socket and sends
a fresh observation. After an error reply it tries again 0.1 s later.

Measured for every scenario:

  kept_fraction      action replies the good client received in the window / (window s x 50)
  max_gap_ms         the longest stretch of the window without an action reply, counted from
                     the window's start and up to its end (no reply at all: the whole window);
                     longest_gaps: the three longest, [s into the window, ms]
  first_reply_s      newcomers: from the good client's start to its first action reply
  peak_rss_mb        the daemon's VmHWM (peak resident memory since it started), MiB, from
                     /proc/PID/status; also its VmRSS at the window's start and end, and sampled
                     every 0.1 s (rss_timeline_mb, seconds from the window's start)
  daemon_cpu_s       the daemon's utime + stime during the window (/proc/PID/stat), and per
                     thread name (daemon_thread_cpu_s; libzmq's I/O thread is ZMQbg/IO/0);
                     attacker_cpu_s: the attacker processes' own, which share this machine
  alive              whether the daemon still ran at the window's end; if not its exit code or
                     signal, when it died, and its log's last lines
  status_start/end   a few counters of `mpcctl status` (missed ticks, sessions, refused
                     messages) asked on the control socket just before and after the window, or
                     why there was no answer within 2 s (not in control-flood, where the request
                     would queue behind the flood, nor in idle-connections, where a connection to
                     the control socket is itself a probe: that one is made once, after the
                     window, as control_probe_after_window)

Two things to know when reading the figures. libzmq keeps a multipart message in the sender
until its last frame is queued, so the multipart attack reaches the daemon only once the attacker
has queued all of it (on a 2-core machine, 2048 MiB took about 8 s to queue and 14 s more to
transfer): give that scenario a window long enough (--seconds 30 for 2048 MiB), and read
message_read_by_daemon_in_window. And the attackers share the machine's cores with the daemon
and the good client; attacker_cpu_s says how much they took.

Prints a table (stdout; stderr with --json, where stdout gets one JSON object per scenario) and
progress lines on stderr. Exits 0 when every scenario ran (whatever the daemon did), 1 otherwise.
"""
import argparse
import collections
import ctypes
import errno
import json
import math
import multiprocessing
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from . import protocol
from .client import Controller, MpcdError, MpcdTimeout

REPO = Path(__file__).resolve().parents[3]
SCENARIO_NAMES = ["multipart", "idle-connections", "large-flood", "control-flood", "session-squat"]
RATE_HZ = 50
GOOD_STATE = (0.5, 0.0)
CONFIG = """[task]
name = "pendulum"

[planner]
samples = 256

[server]
mode = "realtime"
rate_hz = {rate}
"""
RECEIVE_TIMEOUT = 0.5  # the good client's wait for one reply before it starts over on a new socket
ERROR_RETRY_S = 0.1  # after an error reply, the good client tries again this much later
FIRST_REPLY_TIMEOUT = 5.0  # before the attack, for the scenarios where the good client comes first
STATUS_TIMEOUT = 2.0
MIB = 1 << 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FLAG_STALE = 8
MULTIPART_FRAME_BYTES = 60_000
FLOOD_STATE_BYTES = 65_000
FLOOD_SNDHWM = 10_000  # 10,000 x 64 kB: up to 650 MB queued in the attacker
DAEMON_NOFILE = 1024


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Asks the kernel to SIGKILL this process when the process that started it dies, so that no
    daemon or attacker outlives a harness that was killed."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def log(text):
    print(f"[hardening] {text}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- /proc

def proc_memory(pid):
    """{"rss_kib", "hwm_kib", "threads"} from /proc/PID/status, or None when the process is gone
    or a zombie (a zombie has no Vm lines)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads") and rest.split():
            values[key] = int(rest.split()[0])
    if "VmRSS" not in values or "VmHWM" not in values:
        return None
    return {"rss_kib": values["VmRSS"], "hwm_kib": values["VmHWM"], "threads": values.get("Threads")}


def proc_cpu_seconds(pid):
    """utime + stime of PID in seconds (also readable from a zombie), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_thread_cpu(pid):
    """{thread id: (thread name, CPU seconds)} of PID's threads."""
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        threads[tid] = (text[text.index("(") + 1:text.rindex(")")], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return threads


def thread_cpu_delta(before, after, top=4):
    """CPU seconds per thread name between two proc_thread_cpu() readings, the busiest first."""
    spent = collections.Counter()
    for tid, (name, seconds) in after.items():
        spent[name] += seconds - before.get(tid, (name, 0.0))[1]
    return {name: round(seconds, 2) for name, seconds in spent.most_common(top) if seconds > 0}


def proc_open_files(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def proc_nofile_limit(pid):
    """(soft, hard) "Max open files" of PID, as the kernel reports them."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return soft, hard
    except OSError:
        pass
    return None


def mib(kib):
    return None if kib is None else round(kib / 1024, 1)


# ----------------------------------------------------------------------------- the daemon

class DaemonFailed(RuntimeError):
    pass


class Daemon:
    """mpcd on a free loopback port with its own runtime directory (control socket) and log."""

    def __init__(self, mpcd, folder, config_text, nofile=None):
        self.died_at = None  # monotonic time the sampler first saw it gone
        self.folder = Path(folder)
        self.runtime = self.folder / "runtime"
        self.runtime.mkdir()
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.control = f"ipc://{self.runtime}/control.sock"
        config = self.folder / "mpcd.toml"
        config.write_text(config_text)
        self.stdout_path = self.folder / "mpcd.stdout"
        self.log_path = self.folder / "mpcd.log"
        env = dict(os.environ, RUNTIME_DIRECTORY=str(self.runtime))

        def before_exec():
            die_with_parent()
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.stdout_path, "w") as out, open(self.log_path, "w") as err:
            self.process = subprocess.Popen([str(mpcd), "--endpoint", self.endpoint, "--config", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                            preexec_fn=before_exec)
        self.pid = self.process.pid
        deadline = time.monotonic() + 20
        while "listening" not in self.stdout_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.stop()
                raise DaemonFailed(f"mpcd did not start (exit {code}): {self.log_tail(5)}")
            time.sleep(0.02)

    def alive(self):
        return self.process.poll() is None

    def exit_description(self):
        code = self.process.poll()
        if code is None:
            return {"exit_code": None, "exit_signal": None}
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return {"exit_code": code, "exit_signal": name}
        return {"exit_code": code, "exit_signal": None}

    def log_tail(self, lines=8):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line[:300] for line in text.splitlines()[-lines:]]

    def log_count(self, needle):
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s. Returns how it went."""
        if self.process.poll() is not None:
            return {"stopped_by": "already exited"}
        started = time.monotonic()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
            return {"stopped_by": "SIGTERM", "stop_seconds": round(time.monotonic() - started, 2)}
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return {"stopped_by": "SIGKILL (no exit within 5 s of SIGTERM)"}


class Sampler(threading.Thread):
    """Samples the daemon's resident memory and CPU time every `interval` s; notes its death."""

    def __init__(self, daemon, interval=0.1):
        super().__init__(daemon=True)
        self.target = daemon
        self.interval = interval
        self.halt = threading.Event()
        self.timeline = []  # (monotonic, rss KiB)
        self.peak_rss_kib = 0
        self.hwm_kib = 0
        self.last_cpu = None
        self.lock = threading.Lock()

    def sample(self):
        memory = proc_memory(self.target.pid)
        cpu = proc_cpu_seconds(self.target.pid)
        now = time.monotonic()
        with self.lock:
            if cpu is not None:
                self.last_cpu = cpu
            if memory is not None:
                self.timeline.append((now, memory["rss_kib"]))
                self.peak_rss_kib = max(self.peak_rss_kib, memory["rss_kib"])
                self.hwm_kib = max(self.hwm_kib, memory["hwm_kib"])
            if self.target.died_at is None and not self.target.alive():
                self.target.died_at = now
        return memory

    def run(self):
        while not self.halt.is_set():
            self.sample()
            if self.target.died_at is not None:
                return
            self.halt.wait(self.interval)

    def peak_kib(self):
        self.sample()
        with self.lock:
            return max(self.peak_rss_kib, self.hwm_kib) or None

    def cpu(self):
        """The daemon's CPU seconds now, or the last seen before it died."""
        now = proc_cpu_seconds(self.target.pid)
        if now is not None:
            with self.lock:
                self.last_cpu = now
            return now
        with self.lock:
            return self.last_cpu


def control_request(context, endpoint, request, timeout=STATUS_TIMEOUT):
    """One JSON request on the daemon's control socket: (reply dict, None) or (None, why not)."""
    s = context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send(json.dumps(request).encode())
        if not s.poll(int(timeout * 1000)):
            return None, f"no answer within {timeout:g} s"
        return json.loads(s.recv_multipart()[-1]), None
    except (zmq.ZMQError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"
    finally:
        s.close(linger=0)


def status_summary(context, daemon):
    started = time.monotonic()
    reply, why = control_request(context, daemon.control, {"command": "status"})
    elapsed = round(time.monotonic() - started, 3)
    if reply is None or not reply.get("ok"):
        return {"answered": False, "why": why or str(reply), "seconds": elapsed}
    s = reply["status"]
    return {"answered": True, "seconds": elapsed, "missed_ticks": s.get("missed_ticks"), "ticks": s.get("ticks"),
            "sessions": s.get("sessions", {}).get("count"), "sessions_opened": s.get("sessions", {}).get("opened"),
            "replies": s.get("replies"), "dropped_replies": s.get("dropped_replies"),
            "rejected_by_code": {k: v for k, v in (s.get("rejected_by_code") or {}).items() if v}}


# ----------------------------------------------------------------------------- the good client

class GoodClient(threading.Thread):
    """A well-behaved robot: a Controller streaming realtime replies, a fresh observation after
    each one. Records every reply's arrival, every error reply and every timeout."""

    def __init__(self, endpoint):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.halt = threading.Event()
        self.first_reply = threading.Event()
        self.started_at = None
        self.replies = []  # (monotonic arrival, tick, flags, daemon overruns)
        self.errors = []  # (monotonic, error name)
        self.timeouts = []  # monotonic
        self.failure = None

    def run(self):
        self.started_at = time.monotonic()
        context = zmq.Context()
        try:
            controller = Controller(self.endpoint, timeout=RECEIVE_TIMEOUT, context=context)
            try:
                self.serve(controller)
            finally:
                controller.close()
        except Exception as error:  # recorded, never raised: a measurement, not a test
            self.failure = f"{type(error).__name__}: {error}"
        finally:
            context.destroy(linger=0)

    def serve(self, c):
        introduced = False
        while not self.halt.is_set():
            try:
                if not introduced:
                    c.info  # the hello: names and dimensions (raises MpcdTimeout)
                    introduced = True
                    c.send_observation(GOOD_STATE)
                    continue
                reply = c.receive(RECEIVE_TIMEOUT)
                arrival = time.monotonic()
                self.replies.append((arrival, reply.tick, reply.flags, reply.diagnostics.get("overruns", math.nan)))
                self.first_reply.set()
                c.send_observation(GOOD_STATE)
            except MpcdTimeout:
                # the Controller replaced its socket; the session needs an observation again
                self.timeouts.append(time.monotonic())
                if introduced:
                    c.send_observation(GOOD_STATE)
            except MpcdError as error:
                self.errors.append((time.monotonic(), error.name))
                self.halt.wait(ERROR_RETRY_S)
                c.send_observation(GOOD_STATE)

    def stop(self):
        self.halt.set()
        self.join(timeout=RECEIVE_TIMEOUT + 3)

    def window(self, start, end):
        """The figures of the window [start, end)."""
        replies = [r for r in list(self.replies) if start <= r[0] < end]
        seconds = end - start
        marks = [start] + [r[0] for r in replies] + [end]
        gaps = [b - a for a, b in zip(marks, marks[1:])]
        errors = collections.Counter(name for t, name in list(self.errors) if start <= t < end)
        result = {
            "window_s": round(seconds, 3),
            "expected_ticks": round(seconds * RATE_HZ, 1),
            "replies": len(replies),
            "kept_fraction": round(len(replies) / (seconds * RATE_HZ), 4),
            "max_gap_ms": round(1000 * max(gaps), 1),
            # the three longest stretches without a reply: [seconds into the window, milliseconds]
            "longest_gaps": sorted(([round(marks[i] - start, 2), round(1000 * g, 1)] for i, g in enumerate(gaps)),
                                   key=lambda gap: -gap[1])[:3],
            "stale_replies": sum(1 for r in replies if r[2] & FLAG_STALE),
            "error_replies": dict(errors),
            "timeouts": sum(1 for t in list(self.timeouts) if start <= t < end),
        }
        if replies:
            result["ticks_missed_seen"] = (replies[-1][1] - replies[0][1] + 1) - len(replies)
            overruns = [r[3] for r in replies if not math.isnan(r[3])]
            if overruns:
                result["daemon_overruns_seen"] = int(overruns[-1] - overruns[0])
        if self.failure:
            result["client_failure"] = self.failure
        return result


# ----------------------------------------------------------------------------- attackers
# Each runs in its own process (spawned: no ZeroMQ context crosses a fork). `stop` ends the
# attack; `reports` gets ("started", {...}) once the attack has begun and ("done", {...}) at the end;
# `progress` (a shared integer) counts what was sent so far, where that means something.

def multipart_attack(stop, reports, progress, endpoint, total_bytes, frame_bytes):
    die_with_parent()
    context = zmq.Context()
    s = context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    frames = max(1, total_bytes // frame_bytes)
    frame = bytes(frame_bytes)
    started = time.monotonic()
    reports.put(("started", {"frames_planned": frames + 1}))

    def send(data, flags):
        while True:  # non-blocking with retry: the attacker never stalls on a full queue
            try:
                s.send(data, flags | zmq.NOBLOCK, copy=True)
                return True
            except zmq.Again:
                if stop.is_set():
                    return False
                time.sleep(0.001)

    sent = 0
    count = 0
    complete = False
    if send(protocol.header(protocol.OBSERVATION, 1), zmq.SNDMORE):
        sent += protocol.HEADER.size
        count = 1
        for i in range(frames):
            if i % 256 == 0:
                progress.value = sent
                if stop.is_set():
                    break
            if not send(frame, zmq.SNDMORE if i + 1 < frames else 0):
                break
            sent += frame_bytes
            count += 1
        else:
            complete = True
    progress.value = sent
    queued_s = time.monotonic() - started
    reports.put(("queued", {"bytes": sent, "complete": complete, "seconds": queued_s}))
    stop.wait()  # the socket stays open so that libzmq can deliver what it queued
    reports.put(("done", {"bytes_sent": sent, "frames_sent": count, "complete": complete,
                          "queued_in_s": round(queued_s, 3) if complete else None}))
    s.close(linger=0)
    context.destroy(linger=0)


def idle_connections_attack(stop, reports, progress, port, count, batch=50, batch_wait=0.5):
    """Opens `count` TCP connections in batches of `batch`, each batch once the daemon has
    accepted the previous one (libzmq sends its greeting on accepting) or after `batch_wait` s:
    all at once, the kernel's accept queue overflows and the excess become half-open connections
    the daemon never sees. Never sends a byte."""
    die_with_parent()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets, failed, greeted = [], 0, 0
    started = time.monotonic()
    while len(sockets) < count and not stop.is_set():
        poller, waiting = select.poll(), {}
        for _ in range(min(batch, count - len(sockets))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            if s.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
                failed += 1
            sockets.append(s)
            waiting[s.fileno()] = s
            poller.register(s.fileno(), select.POLLIN)
        deadline = time.monotonic() + batch_wait
        while waiting and time.monotonic() < deadline:
            for fd, _ in poller.poll(20):
                if waiting.pop(fd, None) is not None:
                    poller.unregister(fd)
                    greeted += 1
        progress.value = len(sockets)
    connected = 0
    for s in sockets:
        try:
            s.getpeername()
            connected += 1
        except OSError:
            pass
    reports.put(("started", {"opened": len(sockets), "connected": connected, "greeted_by_daemon": greeted,
                             "failed": failed, "seconds": round(time.monotonic() - started, 2), "attacker_fd_limit": hard}))
    stop.wait()
    # What became of them: libzmq sends its greeting on a connection it accepted, and closes it
    # when the handshake times out; a connection the daemon never accepted stays silent.
    greeted = silent = closed = unconnected = 0
    for s in sockets:
        try:
            s.getpeername()
        except OSError:
            unconnected += 1
            continue
        got, eof = 0, False
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            got += len(data)
        if eof:
            closed += 1
        elif got:
            greeted += 1
        else:
            silent += 1
    for s in sockets:
        s.close()
    reports.put(("done", {"accepted_by_daemon_open": greeted, "never_accepted_open": silent,
                          "closed_by_daemon": closed, "never_connected": unconnected}))


def large_flood_attack(stop, reports, progress, endpoint, state_bytes):
    die_with_parent()
    context = zmq.Context()
    s = context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, FLOOD_SNDHWM)
    s.connect(endpoint)
    state = bytes(state_bytes)  # zeros: finite float64s, of a length no observation form has
    sent = refused_by_hwm = 0
    started = time.monotonic()
    reports.put(("started", {}))
    while not stop.is_set():
        for _ in range(64):
            try:
                s.send_multipart([protocol.header(protocol.OBSERVATION, sent + 1), state], zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                refused_by_hwm += 1
                time.sleep(0.00005)
        progress.value = sent
    elapsed = time.monotonic() - started
    reports.put(("done", {"messages_queued": sent, "seconds": round(elapsed, 3),
                          "messages_per_s": round(sent / elapsed, 1), "mb_per_s": round(sent * (state_bytes + 32) / elapsed / 1e6, 1),
                          "queue_full_retries": refused_by_hwm}))
    s.close(linger=0)
    context.destroy(linger=0)


def control_flood_attack(stop, reports, progress, control, count, give_up_after):
    die_with_parent()
    context = zmq.Context()
    s = context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)  # unlimited both ways: nothing is dropped on this side
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(control)
    request = json.dumps({"command": "status"}).encode()
    started = time.monotonic()
    reports.put(("started", {}))
    for _ in range(count):
        s.send(request)
    sent_in = time.monotonic() - started
    replies = ok = 0
    first = last = None
    reply_bytes = 0
    deadline = started + give_up_after
    while replies < count and time.monotonic() < deadline:
        if not s.poll(100):
            continue
        frame = s.recv_multipart()[-1]
        now = time.monotonic() - started
        first = now if first is None else first
        last = now
        replies += 1
        reply_bytes += len(frame)
        ok += b'"ok":true' in frame
    reports.put(("done", {"requests": count, "sent_in_s": round(sent_in, 3), "replies": replies, "ok_replies": ok,
                          "first_reply_s": None if first is None else round(first, 3),
                          "all_replies_s": round(last, 3) if replies == count else None,
                          "gave_up_after_s": None if replies == count else give_up_after,
                          "mean_reply_bytes": round(reply_bytes / replies) if replies else None}))
    s.close(linger=0)
    context.destroy(linger=0)


def session_squat_attack(stop, reports, progress, endpoint, count, interval, spread):
    die_with_parent()
    context = zmq.Context()
    sockets = []
    for i in range(count):
        s = context.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, f"squatter-{i:03d}".encode())
        s.connect(endpoint)
        sockets.append(s)
    started = time.monotonic()
    due = [started + i * spread / count for i in range(count)]  # staggered
    sequence = [0] * count
    reports.put(("started", {"identities": count, "interval_s": interval}))
    sent = 0
    while not stop.is_set():
        now = time.monotonic()
        for i, s in enumerate(sockets):
            if now >= due[i]:
                sequence[i] += 1
                try:
                    s.send_multipart(protocol.observation(sequence[i], [0.3, 0.0]), zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
                due[i] += interval
        stop.wait(max(0.0, min(min(due) - time.monotonic(), 0.05)))
    reports.put(("done", {"observations_sent": sent}))  # replies are never read: cheapest for the squatter
    for s in sockets:
        s.close(linger=0)
    context.destroy(linger=0)


# ----------------------------------------------------------------------------- one scenario

Attacker = collections.namedtuple("Attacker", "process stop reports progress info started_at")


class Run:
    """One scenario: its folder, daemon, sampler, good client and attackers, all cleaned up by close()."""

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix=f"mpcd-hardening-{name}-"))
        self.mp = multiprocessing.get_context("spawn")
        self.context = zmq.Context()
        self.daemon = self.sampler = self.client = None
        self.attackers = []  # (process, stop event, reports queue)
        self.window_start = self.window_end = None
        self.cpu_start, self.threads_start, self.attackers_cpu_start = None, {}, None
        self.result = {"scenario": name, "seconds": args.seconds, "rate_hz": RATE_HZ}

    def progress(self, text):
        log(f"scenario {self.name}: {text}")

    def start_daemon(self, nofile=None):
        self.daemon = Daemon(self.args.mpcd, self.folder, CONFIG.format(rate=RATE_HZ), nofile=nofile)
        self.sampler = Sampler(self.daemon)
        self.sampler.start()
        self.progress(f"daemon started (pid {self.daemon.pid}, {self.daemon.endpoint})")

    def start_client(self):
        self.client = GoodClient(self.daemon.endpoint)
        self.client.start()

    def start_attacker(self, target, *args, timeout=60):
        """Starts `target(stop, reports, progress, *args)` in a new process and waits until it
        reports that the attack has started."""
        stop, reports, progress = self.mp.Event(), self.mp.Queue(), self.mp.Value("q", 0)
        process = self.mp.Process(target=target, args=(stop, reports, progress, *args), daemon=True)
        process.start()
        self.attackers.append((process, stop, reports))
        _, info = self.expect(reports, "started", timeout, process)
        self.progress("attack started")
        return Attacker(process, stop, reports, progress, info, time.monotonic())

    @staticmethod
    def expect(reports, kind, timeout, process=None):
        """The next report of `kind` (others are skipped), or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the attacker sent no {kind!r} report within {timeout:g} s")
            try:
                got, info = reports.get(timeout=min(remaining, 0.5))
            except Exception:  # queue.Empty
                if process is not None and not process.is_alive():
                    raise RuntimeError(f"the attacker exited ({process.exitcode}) before its {kind!r} report")
                continue
            if got == kind:
                return got, info

    def open_window(self, status=True):
        if status:
            self.result["status_start"] = status_summary(self.context, self.daemon)
        self.window_start = time.monotonic()
        self.cpu_start = self.sampler.cpu()
        self.threads_start = proc_thread_cpu(self.daemon.pid)
        self.attackers_cpu_start = self.attackers_cpu()
        memory = proc_memory(self.daemon.pid)
        self.result["rss_start_mb"] = mib(memory["rss_kib"]) if memory else None
        self.progress(f"measuring for {self.args.seconds:g} s")

    def attackers_cpu(self):
        """CPU seconds of the attacker processes (None if one has gone)."""
        readings = [proc_cpu_seconds(process.pid) for process, _, _ in self.attackers]
        return None if any(r is None for r in readings) else sum(readings)

    def wait_window(self):
        end = self.window_start + self.args.seconds
        while time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        self.window_end = time.monotonic()

    def close_window(self, status=True):
        """The daemon's side of the window; call right at its end."""
        r = self.result
        cpu_end = self.sampler.cpu()
        threads_end = proc_thread_cpu(self.daemon.pid)
        attackers_cpu_end = self.attackers_cpu()
        memory = proc_memory(self.daemon.pid)
        r["alive"] = self.daemon.alive()
        r["rss_end_mb"] = mib(memory["rss_kib"]) if memory else None
        r["peak_rss_mb"] = mib(self.sampler.peak_kib())
        if cpu_end is not None and self.cpu_start is not None:
            r["daemon_cpu_s"] = round(cpu_end - self.cpu_start, 2)
        if threads_end:
            r["daemon_thread_cpu_s"] = thread_cpu_delta(self.threads_start, threads_end)
        if attackers_cpu_end is not None and self.attackers_cpu_start is not None:
            r["attacker_cpu_s"] = round(attackers_cpu_end - self.attackers_cpu_start, 2)
        if not r["alive"]:
            r.update(self.daemon.exit_description())
            if self.daemon.died_at is not None:
                r["died_after_s"] = round(self.daemon.died_at - self.window_start, 2)
            r["log_tail"] = self.daemon.log_tail()
            self.progress(f"the daemon died: {r['exit_signal'] or 'exit code ' + str(r['exit_code'])}")
        elif status:
            r["status_end"] = status_summary(self.context, self.daemon)
        r.update(self.client.window(self.window_start, self.window_end))
        with self.sampler.lock:
            r["rss_timeline_mb"] = [[round(t - self.window_start, 2), mib(k)] for t, k in self.sampler.timeline
                                    if t >= self.window_start - 1]

    def close(self):
        """Stops everything this scenario started, each step on its own so that one failing
        never leaves the daemon or an attacker running."""
        def attempt(step, *args):
            try:
                step(*args)
            except Exception as error:
                self.result.setdefault("notes_extra", []).append(f"cleanup: {type(error).__name__}: {error}")

        def stop_attacker(process, reports):
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)
            reports.close()
            reports.cancel_join_thread()

        def stop_daemon():
            was_alive = self.daemon.alive()
            stopped = self.daemon.stop()
            if was_alive:
                self.result["daemon_stop"] = stopped["stopped_by"]
                self.result.setdefault("log_warnings", sum(self.daemon.log_count(f" {level} ") for level in ("warning", "error", "critical")))

        if self.client is not None:
            attempt(self.client.stop)
        for process, stop, reports in self.attackers:
            attempt(stop.set)
        for process, stop, reports in self.attackers:
            attempt(stop_attacker, process, reports)
        if self.daemon is not None:
            attempt(stop_daemon)
        if self.sampler is not None:
            self.sampler.halt.set()
            attempt(self.sampler.join, 2)
        attempt(self.context.destroy, 0)
        shutil.rmtree(self.folder, ignore_errors=True)

    def finish_attacker(self, attacker, timeout=10):
        """The attacker's 'done' report after its stop, or None (noted)."""
        try:
            return self.expect(attacker.reports, "done", timeout, attacker.process)[1]
        except (TimeoutError, RuntimeError) as error:
            self.result.setdefault("notes_extra", []).append(str(error))
            return None


# ----------------------------------------------------------------------------- the scenarios

def wait_first_reply(run):
    run.start_client()
    if not run.client.first_reply.wait(FIRST_REPLY_TIMEOUT):
        raise RuntimeError(f"the good client got no reply within {FIRST_REPLY_TIMEOUT:g} s before any attack")
    run.progress("good client served")


def newcomer_arrives(run):
    """The window starts now, with the good client's arrival."""
    run.window_start = time.monotonic()
    run.cpu_start = run.sampler.cpu()
    run.threads_start = proc_thread_cpu(run.daemon.pid)
    run.attackers_cpu_start = run.attackers_cpu()
    run.start_client()
    run.progress("good client arrives")


def first_reply_seconds(run):
    first = run.client.replies[0][0] if run.client.replies else None
    if first is None or first >= run.window_end:
        return None
    return round(first - run.client.started_at, 3)


def scenario_multipart(run):
    run.start_daemon()
    wait_first_reply(run)
    attacker = run.start_attacker(multipart_attack, run.daemon.endpoint, int(run.args.multipart_mb * MIB), MULTIPART_FRAME_BYTES)
    run.open_window()
    run.wait_window()
    attacker_memory = proc_memory(attacker.process.pid)
    run.close_window()
    attacker.stop.set()
    done = run.finish_attacker(attacker) or {}
    r = run.result
    r["multipart_mb_planned"] = run.args.multipart_mb
    r["attacker_bytes_sent"] = done.get("bytes_sent", attacker.progress.value)
    r["attacker_mb_sent"] = round(r["attacker_bytes_sent"] / MIB, 1)
    r["attacker_message_complete"] = done.get("complete")
    r["attacker_queued_in_s"] = done.get("queued_in_s")
    r["attacker_peak_rss_mb"] = mib(attacker_memory["hwm_kib"]) if attacker_memory else None
    end = r.get("status_end") or {}
    if end.get("answered"):  # the daemon refuses the whole message as malformed once it has read it
        before = (r["status_start"].get("rejected_by_code") or {}).get("malformed", 0)
        r["message_read_by_daemon_in_window"] = (end.get("rejected_by_code") or {}).get("malformed", 0) > before


def scenario_idle_connections(run):
    run.start_daemon(nofile=DAEMON_NOFILE)
    limits = proc_nofile_limit(run.daemon.pid)
    run.result["daemon_nofile_limit"] = list(limits) if limits else None
    run.result["daemon_open_fds_before"] = proc_open_files(run.daemon.pid)
    attacker = run.start_attacker(idle_connections_attack, run.daemon.port, run.args.connections)
    run.result["attacker_connections"] = attacker.info
    # The attack has landed when the daemon's descriptors are all used, or stop growing for 2 s.
    settle_start = time.monotonic()
    fds, last_growth = proc_open_files(run.daemon.pid), settle_start
    while fds is not None and fds < DAEMON_NOFILE and time.monotonic() - last_growth < 2.0 and time.monotonic() - settle_start < 15:
        time.sleep(0.05)
        now_fds = proc_open_files(run.daemon.pid)
        if now_fds is not None and now_fds > fds:
            last_growth = time.monotonic()
        fds = now_fds
    run.result["attack_settled_after_s"] = round(time.monotonic() - settle_start, 2)
    run.result["daemon_open_fds_attacked"] = fds
    run.progress(f"daemon holds {fds} open files (limit {DAEMON_NOFILE})")
    # No status request during the window: a connection to the control socket is itself a probe
    # of how the daemon handles running out of file descriptors (made after the window, below).
    run.open_window(status=False)
    newcomer_arrives(run)
    run.wait_window()
    run.result["daemon_open_fds_end"] = proc_open_files(run.daemon.pid)
    run.close_window(status=False)
    run.result["first_reply_s"] = first_reply_seconds(run)
    if run.result["alive"]:
        run.result["control_probe_after_window"] = control_probe(run)
    attacker.stop.set()
    run.result["attacker_connections_end"] = run.finish_attacker(attacker, 20)


def control_probe(run):
    """After the window, with the attack still on: one status request on the control socket (as
    `mpcctl status` would make), and whether the daemon is alive half a second later."""
    run.progress("after the window: one status request on the control socket")
    probe = status_summary(run.context, run.daemon)
    deadline = time.monotonic() + 0.5
    while run.daemon.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    result = {"answered": probe["answered"], "why": probe.get("why"), "daemon_alive_after": run.daemon.alive()}
    if not result["daemon_alive_after"]:
        result.update(run.daemon.exit_description())
        result["log_tail"] = run.daemon.log_tail(4)
        run.progress(f"the daemon died after the status request: {result['exit_signal'] or result['exit_code']}")
    return result


def scenario_large_flood(run):
    run.start_daemon()
    wait_first_reply(run)
    attacker = run.start_attacker(large_flood_attack, run.daemon.endpoint, FLOOD_STATE_BYTES)
    run.open_window()
    queued_start = attacker.progress.value
    refused_start = (run.result["status_start"].get("rejected_by_code") or {}).get("wrong_dimension", 0)
    run.wait_window()
    queued = attacker.progress.value - queued_start
    run.close_window()
    attacker.stop.set()
    done = run.finish_attacker(attacker) or {}
    r = run.result
    r["attacker_messages_in_window"] = queued
    r["attacker_messages_per_s"] = round(queued / r["window_s"], 1)
    r["attacker_mb_per_s"] = round(queued * (FLOOD_STATE_BYTES + protocol.HEADER.size) / r["window_s"] / 1e6, 1)
    r["attacker_queue_full_retries"] = done.get("queue_full_retries")
    end = r.get("status_end") or {}
    if end.get("answered"):
        refused = (end.get("rejected_by_code") or {}).get("wrong_dimension", 0) - refused_start
        r["daemon_refused_in_window"] = refused
        r["daemon_refused_per_s"] = round(refused / r["window_s"], 1)


def scenario_control_flood(run):
    run.start_daemon()
    wait_first_reply(run)
    give_up = max(30.0, run.args.seconds + 20)
    attacker = run.start_attacker(control_flood_attack, run.daemon.control, run.args.control_requests, give_up)
    run.open_window(status=False)  # a status request now would queue behind the flood
    run.wait_window()
    run.close_window(status=False)
    run.progress("waiting for the attacker's replies")
    run.result["control_flood"] = run.finish_attacker(attacker, give_up + 5)
    # when the good client was served again, even if after the window
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not any(t >= run.window_start for t, *_ in list(run.client.replies)):
        time.sleep(0.02)
    later = [t for t, *_ in list(run.client.replies) if t >= run.window_start]
    run.result["next_reply_after_attack_start_s"] = round(later[0] - run.window_start, 3) if later else None


def scenario_session_squat(run):
    run.start_daemon()
    lead = 2.0
    attacker = run.start_attacker(session_squat_attack, run.daemon.endpoint, run.args.squatters,
                                  run.args.squat_interval, 0.75 * lead)
    time.sleep(max(0.0, attacker.started_at + lead - time.monotonic()))
    run.open_window()  # its status says how many sessions the squatters hold
    newcomer_arrives(run)
    run.wait_window()
    run.close_window()
    r = run.result
    r["first_reply_s"] = first_reply_seconds(run)
    r["got_actions"] = r["first_reply_s"] is not None
    attacker.stop.set()
    r["squatters"] = run.finish_attacker(attacker)


SCENARIOS = {
    "multipart": scenario_multipart,
    "idle-connections": scenario_idle_connections,
    "large-flood": scenario_large_flood,
    "control-flood": scenario_control_flood,
    "session-squat": scenario_session_squat,
}


def run_scenario(name, args):
    run = Run(name, args)
    try:
        SCENARIOS[name](run)
    except Exception as error:
        run.result["error"] = f"{type(error).__name__}: {error}"
        run.progress(f"could not be measured: {run.result['error']}")
        if run.daemon is not None and "alive" not in run.result:
            run.result["alive"] = run.daemon.alive()
            if not run.result["alive"]:
                run.result.update(run.daemon.exit_description())
                run.result["log_tail"] = run.daemon.log_tail()
    finally:
        run.close()
    run.progress("done")
    return run.result


# ----------------------------------------------------------------------------- output

def notes(r):
    parts = []
    if r.get("error"):
        parts.append(f"NOT MEASURED: {r['error']}")
    if r.get("alive") is False:
        how = r.get("exit_signal") or f"exit code {r.get('exit_code')}"
        died = r.get("died_after_s")
        when = "" if died is None else (f" {died:.1f} s into the window" if died >= 0 else f" {-died:.1f} s before the window")
        parts.append(f"daemon DIED{when} ({how})")
    name = r["scenario"]
    if name == "multipart" and "attacker_mb_sent" in r:
        done = "whole message" if r.get("attacker_message_complete") else "message unfinished"
        parts.append(f"attacker queued {r['attacker_mb_sent']:g} of {r['multipart_mb_planned']:g} MiB ({done})")
        if "message_read_by_daemon_in_window" in r:
            parts.append("daemon read it in the window" if r["message_read_by_daemon_in_window"] else "daemon had not read it by the window's end")
        if r.get("rss_end_mb") is not None:
            parts.append(f"daemon RSS {r['rss_end_mb']:.0f} MiB at the end")
    elif name == "idle-connections":
        a = r.get("attacker_connections") or {}
        if a:
            parts.append(f"{a.get('opened')} idle connections, {a.get('greeted_by_daemon')} accepted")
        parts.append("first reply " + (f"after {r['first_reply_s']:.2f} s" if r.get("first_reply_s") is not None else "never"))
        if r.get("daemon_open_fds_end") is not None:
            parts.append(f"daemon fds {r['daemon_open_fds_end']}")
        probe = r.get("control_probe_after_window")
        if probe and not probe["daemon_alive_after"]:
            parts.append(f"then one control request killed it ({probe.get('exit_signal') or probe.get('exit_code')})")
        elif probe:
            parts.append("control socket " + ("answered" if probe["answered"] else "did not answer") + " after the window")
    elif name == "large-flood":
        if r.get("attacker_messages_per_s") is not None:
            parts.append(f"attacker {r['attacker_messages_per_s']:.0f} msg/s queued")
        if r.get("daemon_refused_per_s") is not None:
            parts.append(f"daemon refused {r['daemon_refused_per_s']:.0f}/s")
    elif name == "control-flood":
        c = r.get("control_flood") or {}
        if c.get("all_replies_s") is not None:
            parts.append(f"all {c['requests']} status replies after {c['all_replies_s']:.2f} s")
        elif c:
            parts.append(f"{c.get('replies')}/{c.get('requests')} status replies in {c.get('gave_up_after_s')} s")
        if r.get("next_reply_after_attack_start_s") is not None:
            parts.append(f"good client's first reply after the attack began: {r['next_reply_after_attack_start_s']:.2f} s")
    elif name == "session-squat":
        start = r.get("status_start") or {}
        if start.get("answered"):
            parts.append(f"{start.get('sessions')} sessions held before")
        errors = r.get("error_replies") or {}
        if errors:
            parts.append("newcomer errors " + ", ".join(f"{k} x{v}" for k, v in errors.items()))
        parts.append("got actions" if r.get("got_actions") else "no action")
    if r.get("daemon_cpu_s") is not None:
        busiest = next(iter((r.get("daemon_thread_cpu_s") or {}).items()), None)
        parts.append(f"daemon CPU {r['daemon_cpu_s']:.2f} s" + (f" (most in {busiest[0]}: {busiest[1]:.2f} s)" if busiest else ""))
    if r.get("attacker_cpu_s") is not None:
        parts.append(f"attacker CPU {r['attacker_cpu_s']:.2f} s")
    if r.get("timeouts"):
        parts.append(f"{r['timeouts']} client timeouts")
    if r.get("daemon_stop", "").startswith("SIGKILL"):
        parts.append("ignored SIGTERM")
    for extra in r.get("notes_extra", []):
        parts.append(extra)
    return "; ".join(parts)


def table(results):
    rows = [("scenario", "kept_fraction", "max gap ms", "peak RSS MB", "alive", "notes")]
    for r in results:
        kept = r.get("kept_fraction")
        rows.append((r["scenario"], "-" if kept is None else f"{kept:.3f}",
                     "-" if r.get("max_gap_ms") is None else f"{r['max_gap_ms']:.0f}",
                     "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.1f}",
                     {True: "yes", False: "NO"}.get(r.get("alive"), "?"), notes(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i in (0, 4) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     + "  " + row[5])
        if k == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpcd_client.hardening", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(SCENARIO_NAMES)} (default: all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per scenario (default 10)")
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario on stdout (the table goes to stderr)")
    parser.add_argument("--mpcd", default=os.environ.get("MPCD_BIN", str(REPO / ".build" / "release" / "mpcd")))
    parser.add_argument("--multipart-mb", type=float, default=4096, help="multipart: MiB in the one message (default 4096)")
    parser.add_argument("--connections", type=int, default=1100, help="idle-connections: idle TCP connections (default 1100)")
    parser.add_argument("--control-requests", type=int, default=5000, help="control-flood: status requests (default 5000)")
    parser.add_argument("--squatters", type=int, default=64, help="session-squat: identities (default 64, max_sessions' default)")
    parser.add_argument("--squat-interval", type=float, default=10.0, help="session-squat: seconds between a squatter's observations")
    args = parser.parse_args(argv)
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; known: {', '.join(SCENARIO_NAMES)}")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if not Path(args.mpcd).exists():
        parser.error(f"{args.mpcd} does not exist (build with `swift build -c release`)")
    # SIGTERM unwinds like Ctrl-C, so every scenario's cleanup runs
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    results = []
    for name in args.scenarios or SCENARIO_NAMES:
        result = run_scenario(name, args)
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    print(table(results), file=sys.stderr if args.json else sys.stdout, flush=True)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
