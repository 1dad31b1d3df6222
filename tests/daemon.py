"""A real atsd process for tests: own config, own SQLite file, ports chosen by the OS.

The daemon binds ``tcp://127.0.0.1:*`` and writes the endpoints it got to a file, so there
is no pick-a-port-then-bind race. ``restart`` keeps the state file and the ports.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from atsclient import ATSClient, Unreachable

# Tests run their jobs as whoever runs the tests, said explicitly: atsd refuses to run jobs
# as root unless the config names root (tests/test_job_limits.py runs them as nobody).
JOB_USER = pwd.getpwuid(os.geteuid()).pw_name

BASE_CONFIG = {
    "resources": [
        {"name": "dut-1", "type": "dut", "config": {"firmware": "v1"}, "reconfigure_s": 30},
        {"name": "dut-2", "type": "dut", "config": {"firmware": "v1"}},
        {"name": "scope-1", "type": "scope"},
        {"name": "build-1", "type": "buildhost", "slots": 4},
    ],
    "security": {"admins": ["labadmin"]},
}


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll ``predicate`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    def __init__(self, directory: Path, config: dict | None = None, extra_args=(),
                 env: dict | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "atsd.yaml"
        self.config = dict(config or BASE_CONFIG)
        self.config.setdefault("state", "atsd.db")
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.endpoints_file = self.dir / "endpoints.json"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})       # on top of ours, e.g. SLURM_CONF of a test cluster
        self.proc: subprocess.Popen | None = None
        self.listen = "tcp://127.0.0.1:*"
        self.events = "tcp://127.0.0.1:*"
        self.log_path = self.dir / "atsd.log"
        self.web: str | None = None      # the web page's address, when the config has web

    @property
    def state(self) -> Path:
        return self.dir / self.config["state"]

    @property
    def on_pg(self) -> bool:
        return str(self.config["state"]).startswith("postgresql://")

    def role(self) -> str | None:
        """``leader`` or ``standby`` (PostgreSQL state); None while it does not answer."""
        with self.client(timeout=2.0, retries=1) as c:
            try:
                return c.get_version()["role"]
            except Unreachable:
                return None

    def start(self, timeout: float = 15.0, role: str | None = "leader") -> Daemon:
        """Start, and return when it listens; on PostgreSQL, when it is also the ``role``
        given (None: either; atsd/leader.py)."""
        self.endpoints_file.unlink(missing_ok=True)
        if self.web:     # a restart keeps the web port too, so open pages reconnect
            self.config["web"] = {**self.config["web"], "listen": urlsplit(self.web).netloc}
            self.config_path.write_text(yaml.safe_dump(self.config))
        self._log = open(self.log_path, "ab")
        # every reply is held to the keys its command declares (atsd/commands)
        env = {**cli_env(), "ATSD_CHECK_REPLIES": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atsd", "--config", str(self.config_path),
             "--listen", self.listen, "--events", self.events,
             "--endpoints-file", str(self.endpoints_file), "--log-format", "json",
             *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"atsd exited with {self.proc.returncode}:\n{self.log()}")
            if self.endpoints_file.exists():
                return json.loads(self.endpoints_file.read_text())
        try:
            ep = wait_for(ready, timeout, what="atsd to listen")
            self.listen, self.events = ep["listen"], ep["events"]
            self.web = ep.get("web")
            if self.on_pg and role is not None:
                wait_for(lambda: self.role() == role, timeout, what=f"atsd to be the {role}")
        except BaseException:
            self.kill()          # a daemon that did not come up is not left running
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def client(self, user: str = "alice", **kw) -> ATSClient:
        kw.setdefault("timeout", 5.0)
        return ATSClient(self.listen, user=user, **kw)

    def cli_argv(self, *args: str, user: str = "alice") -> list[str]:
        """``atsclient`` pointed at this daemon, as a user would type it."""
        return [sys.executable, "-m", "atsclient", "--server", self.listen, "--events",
                self.events, "--user", user, *args]

    def cli(self, *args: str, user: str = "alice", timeout: float = 60):
        """Run ``atsclient`` against this daemon and wait for it."""
        return subprocess.run(self.cli_argv(*args, user=user), capture_output=True, text=True,
                              timeout=timeout, env=cli_env())

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def restart(self, kill: bool = True) -> Daemon:
        self.kill() if kill else self.stop()
        return self.start()

    def _close_log(self) -> None:
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
