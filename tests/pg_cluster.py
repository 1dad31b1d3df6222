"""A private, throw-away PostgreSQL cluster for tests: Unix socket only, in a temp dir.

``PgCluster(base_dir)`` runs initdb and postgres from Debian's ``postgresql`` package
(see ``.ci/pg-deps``) with ``listen_addresses=''``, so no TCP port is used at all; clients
reach it through the socket in ``base_dir``. initdb and postgres refuse to run as root, so
as root they run as the ``postgres`` user (the directory is handed to it; the process is
postgres itself, no wrapper). The server is started and stopped here, by PID; ``stop``
and ``start`` may be called again (a test that takes the database away).

    cluster = PgCluster(tmp_dir).init().start()
    url = cluster.create_database("t1")      # postgresql:///t1?host=...&user=postgres
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

RUN_AS = "postgres"


def pg_bin_dir() -> Path | None:
    """The newest installed server's binaries, or None when there is no server."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


class PgCluster:
    def __init__(self, base_dir: Path) -> None:
        self.base = Path(base_dir)
        self.data = self.base / "data"
        self.bin = pg_bin_dir()
        self.proc: subprocess.Popen | None = None
        self.as_root = os.geteuid() == 0

    def _as(self) -> dict:
        """Popen arguments that run the child as the postgres user when we are root."""
        if not self.as_root:
            return {"cwd": self.base}
        return {"cwd": self.base, "user": RUN_AS, "group": pwd.getpwnam(RUN_AS).pw_gid,
                "extra_groups": []}

    def init(self) -> PgCluster:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            pw = pwd.getpwnam(RUN_AS)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        done = subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", RUN_AS,
                               "--auth=trust", "-E", "UTF8", "--no-instructions"],
                              capture_output=True, text=True, timeout=120, **self._as())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        return self

    def start(self, timeout: float = 30.0) -> PgCluster:
        self.log = open(self.base / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-c", "listen_addresses=",
             "-c", f"unix_socket_directories={self.base}", "-c", "max_connections=60",
             "-c", "shared_buffers=16MB"],
            stdout=self.log, stderr=subprocess.STDOUT, **self._as())
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("postgres did not start:\n" + (
                        self.base / "postgres.log").read_text(errors="replace")[-3000:]) \
                        from None
                time.sleep(0.05)

    def url(self, db: str) -> str:
        return f"postgresql:///{db}?host={self.base}&user={RUN_AS}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to postgres), by PID; SIGKILL if it takes too long."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()
