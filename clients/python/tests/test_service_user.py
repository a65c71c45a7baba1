"""docs/security.md's CURVE set-up under the unit's user: the secret key as a systemd credential,
`mpcd --check` judging as the service, and the daemon started with the same user switch the unit
makes (a user with no groups; systemd's copy of the credential) serving a listed client only."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import MPCCTL, MPCD, free_port
from mpcd_client import Controller, MpcdTimeout

# a uid in systemd's range for dynamic users (61184-65519), with no entry in /etc/passwd
SERVICE_UID = 61234

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to the service's user needs root")


@pytest.fixture
def box():
    """A stand-in for /etc/mpcd on a box (not under /tmp, which the unit hides) and a copy of the
    binary the service user can reach, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="mpcd-box-", dir="/run"))
    root.chmod(0o755)
    etc = root / "etc"
    etc.mkdir(mode=0o755)
    (etc / "credentials").mkdir(mode=0o700)  # as install.sh makes it: root's alone
    binary = root / "mpcd"
    shutil.copy2(MPCD, binary)
    yield root, etc, binary
    shutil.rmtree(root, ignore_errors=True)


def keygen(prefix):
    result = subprocess.run([str(MPCCTL), "keygen", str(prefix)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return Path(f"{prefix}.pub").read_text().strip(), Path(f"{prefix}.key")


def write_config(etc, binary, port, runtime, secret_path):
    default = subprocess.run([str(binary), "--print-default"], capture_output=True, text=True, check=True).stdout
    config = etc / "mpcd.toml"
    config.write_text(default + f'''
[control]
endpoint = "ipc://{runtime}/control.sock"

[security]
curve_secret_key_file = "{secret_path}"
authorized_keys_file = "authorized_keys"
''')
    config.chmod(0o644)
    return config


def as_service_user():
    os.setgroups([])
    os.setgid(SERVICE_UID)
    os.setuid(SERVICE_UID)


def start_as_service(binary, config, port, runtime, credentials):
    """mpcd as the unit starts it: as a user of its own with no groups, in its runtime directory,
    with systemd's copies of the credentials (owned by that user, mode 0400, in a 0500 folder)."""
    env = dict(os.environ, RUNTIME_DIRECTORY=str(runtime))
    if credentials is not None:
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return subprocess.Popen([str(binary), "--config", str(config), "--endpoint", f"tcp://127.0.0.1:{port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_service_user)


def copy_credentials(etc, folder):
    """What LoadCredential=mpcd:/etc/mpcd/credentials does at start."""
    folder.mkdir(mode=0o700)
    for source in (etc / "credentials").iterdir():
        target = folder / f"mpcd_{source.name}"
        shutil.copyfile(source, target)
        target.chmod(0o400)
        os.chown(target, SERVICE_UID, SERVICE_UID)
    folder.chmod(0o500)
    os.chown(folder, SERVICE_UID, SERVICE_UID)


def service_runtime(root):
    runtime = root / "runtime"
    runtime.mkdir(mode=0o750)
    os.chown(runtime, SERVICE_UID, SERVICE_UID)
    return runtime


def test_the_documented_curve_set_up_starts_as_the_service_user_and_serves_a_listed_client(box):
    root, etc, binary = box
    server_public, _ = keygen(etc / "credentials" / "server")
    robot_public, robot_secret = keygen(root / "robot-arm")
    stranger_public, stranger_secret = keygen(root / "stranger")
    (etc / "authorized_keys").write_text(f"# robot arm\n{robot_public}\n")
    port, runtime = free_port(), service_runtime(root)
    config = write_config(etc, binary, port, runtime, "credentials/server.key")
    assert oct((etc / "credentials" / "server.key").stat().st_mode & 0o777) == "0o600"

    check = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "service"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr

    copy_credentials(etc, root / "credentials-copy")
    daemon = start_as_service(binary, config, port, runtime, root / "credentials-copy")
    try:
        line = daemon.stdout.readline()
        assert "listening" in line, daemon.stderr.read() if daemon.poll() is not None else line
        with Controller(f"tcp://127.0.0.1:{port}", server_public_key=server_public, public_key=robot_public,
                        secret_key=robot_secret.read_text().split("\n")[1].strip()) as robot:
            action = robot.act(np.array([0.3, 0.0]))
            assert np.all(np.isfinite(action))
        with Controller(f"tcp://127.0.0.1:{port}", server_public_key=server_public, public_key=stranger_public,
                        secret_key=stranger_secret.read_text().split("\n")[1].strip(), timeout=1.0) as stranger:
            with pytest.raises(MpcdTimeout):
                stranger.act(np.array([0.3, 0.0]))
        status = subprocess.run([str(MPCCTL), "status", "--json", "--socket", f"ipc://{runtime}/control.sock"],
                                capture_output=True, text=True, timeout=10)
        assert status.returncode == 0, status.stderr
        curve = json.loads(status.stdout)["curve"]
        assert curve["public_key"] == server_public and curve["authorized_keys"] == 1 and curve["refused_handshakes"] >= 1
        assert int(subprocess.run(["stat", "-c", "%u", f"/proc/{daemon.pid}"], capture_output=True, text=True).stdout) == SERVICE_UID
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_a_secret_key_the_service_user_cannot_read_is_caught_by_check_and_refused_at_start(box):
    root, etc, binary = box
    keygen(etc / "server")  # the old advice: /etc/mpcd/server.key, root's, mode 0600
    robot_public, _ = keygen(root / "robot-arm")
    (etc / "authorized_keys").write_text(f"{robot_public}\n")
    port, runtime = free_port(), service_runtime(root)
    config = write_config(etc, binary, port, runtime, "server.key")
    # root's own check passes: root can read it
    as_root = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "self"], capture_output=True, text=True, timeout=30)
    assert as_root.returncode == 0, as_root.stderr
    # judged as the service, it says why and what to do
    check = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "service"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 78
    assert "security.curve_secret_key_file" in check.stderr and "credentials/" in check.stderr and "not readable by the service" in check.stderr, check.stderr
    daemon = start_as_service(binary, config, port, runtime, None)
    out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 78 and "security.curve_secret_key_file" in err and "cannot read a key" in err, err


def test_check_as_service_names_every_file_the_unit_would_hide_or_deny(box, tmp_path):
    root, etc, binary = box
    hidden = tmp_path / "policy.safetensors"  # under /tmp: PrivateTmp hides it
    shutil.copy2(Path(__file__).resolve().parents[3] / "deploy" / "networks" / "pendulum_policy.safetensors", hidden)
    private = etc / "value.safetensors"
    shutil.copy2(Path(__file__).resolve().parents[3] / "deploy" / "networks" / "pendulum_value.safetensors", private)
    private.chmod(0o600)
    config = etc / "mpcd.toml"
    config.write_text(f'[task]\nname = "pendulum"\n[planner]\ndiscount = 0.99\n[prior]\nfile = "{hidden}"\n[value]\nfile = "value.safetensors"\n')
    config.chmod(0o644)
    check = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "service"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 78
    assert "prior.file" in check.stderr and "PrivateTmp=yes" in check.stderr, check.stderr
    assert "value.file" in check.stderr and "chmod o+r" in check.stderr, check.stderr
    # a configuration only root can read is caught too
    private.chmod(0o644)
    config.chmod(0o600)
    check = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "service"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 78 and "--config" in check.stderr and "value.file" not in check.stderr, check.stderr
    bad = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "nobody"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "--check-as must be service or self" in bad.stderr


def documented_box(box):
    """docs/security.md's set-up in the box; returns (etc, binary, config)."""
    root, etc, binary = box
    keygen(etc / "credentials" / "server")
    robot_public, _ = keygen(root / "robot-arm")
    (etc / "authorized_keys").write_text(f"{robot_public}\n")
    config = write_config(etc, binary, free_port(), root / "runtime", "credentials/server.key")
    return etc, binary, config


def check_as_service(binary, config, cwd=None):
    return subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "service"], capture_output=True, text=True,
                          timeout=30, cwd=cwd)


def test_a_relative_configuration_path_is_judged_like_the_absolute_one(box):
    etc, binary, config = documented_box(box)
    result = check_as_service(binary, config.relative_to(etc.parent), cwd=etc.parent)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("spoil,expected", [
    (lambda etc: (etc / "credentials" / ".hidden").write_text("x"), "systemd skips hidden files"),
    (lambda etc: (etc / "credentials" / "server.key:old").write_text("x"), "systemd refuses this name"),
    (lambda etc: (etc / "credentials" / "clé").write_text("x"), "systemd refuses this name"),
    (lambda etc: (etc / "credentials" / "link").symlink_to(etc / "credentials" / "server.key"), "is a link"),
    (lambda etc: (etc / "credentials" / "old").mkdir(), "is a folder"),
    (lambda etc: (etc / "credentials" / "big").write_bytes(b"0" * (1 << 20)), "bytes of credentials"),
])
def test_what_would_keep_systemd_from_passing_the_credentials_is_named(box, spoil, expected):
    etc, binary, config = documented_box(box)
    spoil(etc)
    result = check_as_service(binary, config)
    assert result.returncode == 78 and expected in result.stderr, result.stderr


def test_a_secret_key_behind_a_link_in_the_folder_is_refused_by_the_check(box):
    etc, binary, config = documented_box(box)
    (etc / "credentials" / "server.key").rename(etc / "credentials" / "real.key")
    (etc / "credentials" / "server.key").symlink_to("real.key")
    result = check_as_service(binary, config)
    assert result.returncode == 78 and "security.curve_secret_key_file" in result.stderr and "link" in result.stderr, result.stderr


def test_only_the_secret_key_may_live_in_the_credentials_folder(box):
    etc, binary, config = documented_box(box)
    shutil.move(etc / "authorized_keys", etc / "credentials" / "authorized_keys")
    (etc / "credentials" / "authorized_keys").chmod(0o644)
    config.write_text(config.read_text().replace('authorized_keys_file = "authorized_keys"', 'authorized_keys_file = "credentials/authorized_keys"'))
    result = check_as_service(binary, config)
    assert result.returncode == 78 and "security.authorized_keys_file" in result.stderr and "only the CURVE secret key" in result.stderr, result.stderr


def test_a_missing_credentials_folder_is_named_even_without_curve(box):
    root, etc, binary = box
    config = etc / "mpcd.toml"
    config.write_text(subprocess.run([str(binary), "--print-default"], capture_output=True, text=True, check=True).stdout)
    config.chmod(0o644)
    assert check_as_service(binary, config).returncode == 0
    (etc / "credentials").rmdir()
    result = check_as_service(binary, config)
    assert result.returncode == 78 and "does not start without it" in result.stderr, result.stderr


def test_a_credentials_directory_that_is_not_an_absolute_path_is_ignored(box):
    etc, binary, config = documented_box(box)
    for value in ("", "relative/dir", "../../etc"):
        env = dict(os.environ, CREDENTIALS_DIRECTORY=value)
        result = subprocess.run([str(binary), "--config", str(config), "--check", "--check-as", "self"], capture_output=True, text=True,
                                timeout=30, env=env)
        assert result.returncode == 0, (value, result.stderr)  # the key is read from where the configuration names it
