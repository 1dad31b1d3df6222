"""Deploying under a unit's User=: keys handed to that user, and check-config --as-user naming
every path the daemon could not use as that user (run as root: the tests become nobody)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from daemon import cli_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
NOBODY = pwd.getpwnam("nobody")


def atsd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atsd", *args], capture_output=True,
                          text=True, timeout=60, env={**cli_env(), **(env or {})})


@pytest.fixture
def etc():
    """A config directory others may enter (pytest's tmp_path is root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="atsd-deploy-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_check_config_as_user_names_each_path_that_user_cannot_use(etc):
    (etc / "var").mkdir(mode=0o700)
    (etc / "authorized_keys").mkdir(mode=0o755)
    out = atsd("keygen", str(etc / "keys"))
    assert out.returncode == 0, out.stderr
    config = etc / "atsd.yaml"
    config.write_text(yaml.safe_dump({
        "resources": [{"name": "dut-1"}], "state": "atsd.db",
        "jobs": {"output_dir": "jobs/out"},
        "security": {"curve": {"secret_key": str(etc / "keys/server.key_secret"),
                               "authorized_keys": "authorized_keys"}}}))
    config.chmod(0o644)
    state_dir = {"STATE_DIRECTORY": str(etc / "var")}     # as systemd's StateDirectory= says

    out = atsd("check-config", str(config), "--as-user", "nobody", env=state_dir)
    assert out.returncode == 2
    problems = out.stderr.splitlines()
    assert f"atsd: {config}: security.curve.secret_key: {etc}/keys/server.key_secret: " \
           f"nobody cannot enter {etc}/keys" in problems
    assert f"atsd: {config}: state: {etc}/var: nobody cannot write" in problems
    assert f"atsd: {config}: jobs.output_dir: {etc}/var/jobs/out: nobody cannot enter " \
           f"{etc}/var" in problems
    assert not [p for p in problems if "authorized_keys" in p or "(file)" in p]
    (etc / "keys").chmod(0o755)      # the directory open, the secret still root's own
    out = atsd("check-config", str(config), "--as-user", "nobody", env=state_dir)
    assert f"atsd: {config}: security.curve.secret_key: {etc}/keys/server.key_secret: " \
           "nobody cannot read" in out.stderr.splitlines()

    # what the deploy steps do: the key and the state directory belong to the daemon's user
    shutil.rmtree(etc / "keys")
    out = atsd("keygen", str(etc / "keys"), "--owner", "nobody")
    assert out.returncode == 0, out.stderr
    assert (etc / "keys/server.key_secret").stat().st_uid == NOBODY.pw_uid
    assert (etc / "keys").stat().st_uid == NOBODY.pw_uid        # created: given too
    os.chown(etc / "var", NOBODY.pw_uid, NOBODY.pw_gid)
    out = atsd("check-config", str(config), "--as-user", "nobody", env=state_dir)
    assert out.returncode == 0, out.stderr
    assert "every path usable by nobody" in out.stdout
    out = atsd("check-config", str(config), "--as-user", "no-such-user", env=state_dir)
    assert out.returncode == 2 and "no Unix user named 'no-such-user'" in out.stderr


def test_relative_state_and_job_output_go_under_the_state_directory(etc):
    config = etc / "atsd.yaml"
    config.write_text(yaml.safe_dump({"resources": [{"name": "dut-1"}]}))
    out = atsd("migrate", "--config", str(config), "--dry-run",
               env={"STATE_DIRECTORY": str(etc / "var")})
    assert out.returncode == 2 and f"{etc}/var/atsd.db: no such state file" in out.stderr
