"""The HTTP metrics endpoint for Prometheus: read by Prometheus's own text parser, rates that match
the tick rate, and hostile or broken clients that change nothing."""
import json
import re
import os
import socket
import threading
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MPCD, REPO, Streamer
from mpcd_client import Controller

RATE_HZ = 50
# a page is made anew at most once a second: a scrape waits this long to see what came before it
MAX_PAGE_AGE = 1.1


def write_config(tmp_path, listen="127.0.0.1:0", extra=""):
    """The embedded default in realtime mode with a [metrics] table."""
    default = subprocess.run([str(MPCD), "--print-default"], capture_output=True, text=True, check=True).stdout
    path = tmp_path / f"metrics-{time.monotonic_ns()}.toml"
    path.write_text(default + f'\n[metrics]\nlisten = "{listen}"\n{extra}')
    return path


def metrics_url(daemon):
    url = daemon.status()["metrics"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url
    return url


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def sample(families, name, **labels):
    """The value of the one sample of family `name` (without _total) whose labels include `labels`."""
    family = families[name]
    found = [s.value for s in family.samples if s.name in (name, name + "_total") and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, family.samples)
    return found[0]


def test_a_real_prometheus_parser_reads_the_endpoint_and_rates_match_the_tick_rate(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)), "--mode", "realtime", "--rate-hz", str(RATE_HZ))
    url = metrics_url(daemon)
    streamers = [Streamer(daemon.endpoint, name) for name in (b"arm-left", b"arm-right")]
    for s in streamers:
        s.start()
    try:
        time.sleep(1.5)  # both sessions open and served
        first, _ = scrape(url)
        t0 = time.monotonic()
        time.sleep(4.0)
        second, text = scrape(url)
        elapsed = time.monotonic() - t0
    finally:
        for s in streamers:
            s.stop()
    # types as Prometheus conventions want them
    for name in ("mpcd_ticks", "mpcd_replies", "mpcd_missed_ticks", "mpcd_fallbacks", "mpcd_iterations", "mpcd_plans",
                 "mpcd_session_ticks", "mpcd_session_iterations", "process_cpu_seconds"):
        assert second[name].type == "counter", name
    for name in ("mpcd_sessions", "process_start_time_seconds", "process_resident_memory_bytes", "mpcd_build_info", "mpcd_target_rate_hertz"):
        assert second[name].type == "gauge", name
    assert second["mpcd_tick_latency_seconds"].type == "histogram" and second["mpcd_session_tick_latency_seconds"].type == "histogram"
    assert sample(second, "mpcd_build_info", version=daemon.status()["version"]) == 1
    assert abs(sample(second, "process_start_time_seconds") - time.time()) < 120
    assert sample(second, "process_resident_memory_bytes") > 1e6
    assert sample(second, "mpcd_target_rate_hertz") == RATE_HZ
    # bucket bounds as people write them, no float noise (4.9999999999999996e-05)
    bounds = set(re.findall(r'le="([^"]+)"', text))
    assert {"5e-05", "0.0001", "0.001", "0.002", "1", "+Inf"} <= bounds and max(map(len, bounds)) <= 7, bounds
    # rate() over the two scrapes: the daemon's ticks and each session's at the configured rate
    daemon_rate = (sample(second, "mpcd_ticks") - sample(first, "mpcd_ticks")) / elapsed
    assert daemon_rate == pytest.approx(RATE_HZ, rel=0.1)
    for name in ("arm-left", "arm-right"):
        rate = (sample(second, "mpcd_session_ticks", session=name) - sample(first, "mpcd_session_ticks", session=name)) / elapsed
        assert rate == pytest.approx(RATE_HZ, rel=0.15), name
        iterations = sample(second, "mpcd_session_iterations", session=name) - sample(first, "mpcd_session_iterations", session=name)
        ticks = sample(second, "mpcd_session_ticks", session=name) - sample(first, "mpcd_session_ticks", session=name)
        assert 0 <= iterations / ticks <= 2  # the embedded default runs at most 2 per tick
        buckets = [s for s in second["mpcd_session_tick_latency_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels["session"] == name]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
        assert counts[-1] == sample(second, "mpcd_session_ticks", session=name)
    # the daemon-wide counters add up the sessions'
    assert sample(second, "mpcd_plans") == sum(sample(second, "mpcd_session_ticks", session=n) for n in ("arm-left", "arm-right"))
    assert sample(second, "mpcd_iterations") == sum(sample(second, "mpcd_session_iterations", session=n) for n in ("arm-left", "arm-right"))


def raw_request(port, data, read=True):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if data:
            s.sendall(data)
        if not read:
            return b""
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_hostile_and_broken_http_clients_get_an_error_and_change_nothing(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)))  # lockstep: one reply per observation
    url = metrics_url(daemon)
    port = int(url.split(":")[2].split("/")[0])
    with Controller(daemon.endpoint, identity=b"robot") as c:
        c.act(np.array([0.2, 0.0]))
        # silent connections take every slot; a scrape still gets through once they time out
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]
        assert raw_request(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        for s in silent:
            s.close()
        assert raw_request(port, b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
        assert raw_request(port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert raw_request(port, b"GET /admin HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        assert raw_request(port, b"GET /metrics HTTP/1.0\n\n").startswith(b"HTTP/1.1 200 ")  # bare line feeds
        head = raw_request(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        raw_request(port, b"GET /metr", read=False)  # gone halfway through
        # a client that sends a request and never reads: the daemon does not wait for it
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        # the session carries on being served, and the endpoint still answers
        for _ in range(20):
            c.act(np.array([0.2, 0.0]))
        time.sleep(MAX_PAGE_AGE)
        families, _ = scrape(url)
        stuck.close()
        assert sample(families, "mpcd_session_ticks", session="robot") == 21
        assert sample(families, "mpcd_session_rejected_messages", session="robot") == 0
        assert daemon.status()["sessions"]["count"] == 1
    assert daemon.process.poll() is None


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_slow_clients_holding_every_connection_give_way_and_cost_no_cpu(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)))
    url = metrics_url(daemon)
    port = int(url.split(":")[2].split("/")[0])
    # more than the daemon's eight slots, each having sent one byte and never finishing
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(24)]
    for s in slow:
        s.sendall(b"G")
    time.sleep(0.3)
    before = cpu_seconds(daemon.process.pid)
    time.sleep(1.5)
    busy = cpu_seconds(daemon.process.pid) - before
    assert busy < 0.3, f"an idle daemon with slow HTTP clients used {busy:.2f} s of CPU in 1.5 s"
    for _ in range(5):
        start = time.monotonic()
        families, _ = scrape(url)  # the oldest incomplete connection gives way to it
        assert time.monotonic() - start < 1.0
        assert "mpcd_replies" in families
    for s in slow:
        s.close()


def test_clients_that_ask_and_never_read_or_close_give_way_to_a_scraper(start_daemon, tmp_path):
    """Eight connections that each sent a whole request and then neither read nor closed held all
    eight slots (an answered connection never gave way) until their 2 s ran out; reconnecting at
    once, they kept Prometheus out. The connection that loses least now gives way."""
    daemon = start_daemon("--config", str(write_config(tmp_path)))
    url = metrics_url(daemon)
    port = int(url.split(":")[2].split("/")[0])
    holders = []
    for _ in range(16):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        holders.append(s)
    time.sleep(0.3)
    for _ in range(5):
        start = time.monotonic()
        families, _ = scrape(url)
        assert time.monotonic() - start < 1.0 and "mpcd_replies" in families
    # a holder that gave way still has its whole answer waiting in its own buffer
    first = holders[0].recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:80]
    for s in holders:
        s.close()


def test_a_scrape_flood_does_not_delay_ticks_and_pages_are_made_at_most_once_a_second(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)), "--mode", "realtime", "--rate-hz", "100")
    url = metrics_url(daemon)
    streamer = Streamer(daemon.endpoint, b"robot")
    streamer.start()
    try:
        time.sleep(1.0)
        # two scrapes in the same second: the same page, although ticks ran in between
        with urllib.request.urlopen(url, timeout=5) as a:
            first = a.read()
        time.sleep(0.1)
        with urllib.request.urlopen(url, timeout=5) as b:
            second = b.read()
        assert first == second
        before, _ = scrape(url)
        stop = time.monotonic() + 3.0

        def flood():
            while time.monotonic() < stop:
                try:
                    raw_request(int(url.split(":")[2].split("/")[0]), b"GET /metrics HTTP/1.1\r\n\r\n")
                except OSError:
                    pass  # a connection that had to give way to a newer one
        threads = [threading.Thread(target=flood) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(MAX_PAGE_AGE)
        after, _ = scrape(url)
    finally:
        streamer.stop()
    ticks = sample(after, "mpcd_ticks") - sample(before, "mpcd_ticks")
    missed = sample(after, "mpcd_missed_ticks") - sample(before, "mpcd_missed_ticks")
    assert ticks > 200 and missed <= 0.05 * ticks, f"{missed} of {ticks} ticks missed under a scrape flood"


def test_two_sessions_whose_names_print_alike_keep_separate_series(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)))
    # " A" prints as its hex, 2041, which another client may take as its name
    with Controller(daemon.endpoint, identity=b"2041") as a, Controller(daemon.endpoint, identity=b" A") as b:
        a.act(np.array([0.2, 0.0]))
        for _ in range(2):
            b.act(np.array([0.2, 0.0]))
        families, _ = scrape(metrics_url(daemon))
    series = {s.labels["index"]: s.value for s in families["mpcd_session_ticks"].samples if s.labels["session"] == "2041"}
    assert sorted(series.values()) == [1, 2], series


@pytest.mark.parametrize("listen,reason", [
    ("0.0.0.0:99999", "port in 0-65535"),
    ("[::1]:9464", "expected \"address:port\""),
    ("robot.local:9464", "is not an IPv4 address"),
    ("127.0.0.1", "expected \"address:port\""),
    ("", "expected \"address:port\""),
    ("256.0.0.1:9464", "is not an IPv4 address"),
    ("127.0.0.01:0", "is not an IPv4 address"),
    ("127.0.0.1:+0", "expected \"address:port\""),
    ("127.0.0.1:-1", "expected \"address:port\""),
    ("127.0.0.1: 80", "expected \"address:port\""),
])
def test_a_bad_listen_address_is_refused_with_the_key_named(tmp_path, listen, reason):
    check = subprocess.run([str(MPCD), "--config", str(write_config(tmp_path, listen)), "--check"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 78
    assert "metrics.listen" in check.stderr and reason in check.stderr, check.stderr


def test_an_unknown_key_in_metrics_is_refused(tmp_path):
    check = subprocess.run([str(MPCD), "--config", str(write_config(tmp_path, extra="port = 9464\n")), "--check"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 78 and "metrics" in check.stderr and "port" in check.stderr, check.stderr


def test_a_taken_port_stops_the_start_with_the_reason(start_daemon, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"cannot bind http://127.0.0.1:{port}: Address already in use"):
            start_daemon("--config", str(write_config(tmp_path, f"127.0.0.1:{port}")))


def test_lockstep_exports_no_target_rate(start_daemon, tmp_path):
    families, _ = scrape(metrics_url(start_daemon("--config", str(write_config(tmp_path)))))
    assert "mpcd_target_rate_hertz" not in families and "mpcd_replies" in families


def test_without_the_table_there_is_no_endpoint_and_a_non_loopback_one_is_warned_about(start_daemon, tmp_path):
    assert start_daemon().status()["metrics"] is None
    daemon = start_daemon("--config", str(write_config(tmp_path, "0.0.0.0:0")))
    assert daemon.status()["metrics"].startswith("http://0.0.0.0:")
    time.sleep(0.2)
    assert "metrics endpoint is on a non-loopback address" in daemon.logs()


def test_a_reload_that_moves_the_endpoint_keeps_it_and_says_so(start_daemon, tmp_path):
    config = write_config(tmp_path)
    daemon = start_daemon("--config", str(config))
    url = metrics_url(daemon)
    config.write_text(config.read_text().replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:1"'))
    reload = daemon.mpcctl("reload")
    assert "metrics.listen changed: restart mpcd" in reload.stdout
    assert metrics_url(daemon) == url
    families, _ = scrape(url)
    assert "mpcd_ticks" in families


def test_the_shipped_dashboard_and_alerts_ask_only_for_metrics_the_daemon_exports(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)), "--mode", "realtime")
    with Controller(daemon.endpoint, identity=b"robot") as c:
        c.act(np.array([0.2, 0.0]))
        families, _ = scrape(metrics_url(daemon))
    exported = {s.name for f in families.values() for s in f.samples}
    dashboard = json.loads((REPO / "deploy" / "grafana" / "mpcd-dashboard.json").read_text())
    expressions = re.findall(r'"(?:expr|query)":\s*"((?:[^"\\]|\\.)*)"', json.dumps(dashboard))
    rules = (REPO / "deploy" / "prometheus" / "mpcd-rules.yml").read_text()
    expressions.append(rules)
    used = {name for e in expressions for name in re.findall(r"\b((?:mpcd|process)_[a-z_]+)", e)}
    assert len(used) > 20
    missing = sorted(used - exported)
    assert not missing, f"the dashboard or the rules use metrics the daemon does not export: {missing}"


def test_a_session_named_with_quotes_and_backslashes_reads_back_as_it_is(start_daemon, tmp_path):
    daemon = start_daemon("--config", str(write_config(tmp_path)))
    name = 'robot "7" \\ left'.replace(" ", "_")  # identities mpcd prints as text are printable ASCII without spaces
    with Controller(daemon.endpoint, identity=name.encode()) as c:
        for _ in range(3):
            c.act(np.array([0.2, 0.0]))
        families, _ = scrape(metrics_url(daemon))
    assert sample(families, "mpcd_session_ticks", session=name) == 3


def test_a_listen_of_the_wrong_type_is_refused_with_the_key(tmp_path):
    default = subprocess.run([str(MPCD), "--print-default"], capture_output=True, text=True, check=True).stdout
    for value in ("9464", "true", "[\"127.0.0.1:9464\"]"):
        path = tmp_path / "wrong.toml"
        path.write_text(default + f"\n[metrics]\nlisten = {value}\n")
        check = subprocess.run([str(MPCD), "--config", str(path), "--check"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 78 and "metrics.listen" in check.stderr and "expected a string" in check.stderr, check.stderr
