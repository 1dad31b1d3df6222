"""A private, throw-away Slurm cluster on localhost for tests.

``SlurmCluster(base_dir)`` starts its own munged, one slurmctld and four
slurmd (``n1`` .. ``n4``) that all read a slurm.conf generated in
``base_dir``.  Nothing is exported globally and nothing under /etc/slurm,
/etc/munge or the system munged is touched: pass ``cluster.env`` (or
``cluster.conf_path`` as SLURM_CONF) to whatever should talk to this cluster.

    with SlurmCluster(tmp_path) as cluster:
        subprocess.run(["sinfo"], env=cluster.env, check=True)

Every process is started here and stopped here by PID.  Requires root (the
daemons run as root, ``SlurmUser=root``) and the Debian packages ``munge
slurmctld slurmd slurm-client`` (see ``.ci/slurm-deps``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["SlurmCluster", "SlurmClusterError", "slurm_binaries_missing"]

NODE_NAMES = ("n1", "n2", "n3", "n4")
REQUIRED_BINARIES = (
    "munged", "mungekey", "slurmctld", "slurmd", "scontrol", "sinfo", "sbatch",
    "squeue", "scancel",
)
# Where the Debian packages put the daemons; /usr/sbin is often not on PATH
# for non-login shells.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# Longest path a unix socket may have (sun_path is 108 bytes incl. NUL).
_MAX_SOCKET_PATH = 100


class SlurmClusterError(RuntimeError):
    """The private cluster could not be started (message has the log tails)."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _EXTRA_PATH:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def slurm_binaries_missing() -> list[str]:
    """Names of the binaries needed for a SlurmCluster that are not installed."""
    return [b for b in REQUIRED_BINARIES if _which(b) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports_free(ports) -> bool:
    socks = []
    try:
        for p in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            # No SO_REUSEADDR: fail on anything still bound or in TIME_WAIT.
            s.bind(("0.0.0.0", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _free_port_block(count: int, avoid: set[int]) -> int:
    """First port P of ``count`` consecutive ports that are free now."""
    for _ in range(200):
        p = _free_port()
        block = range(p, p + count)
        if p + count > 65535 or avoid.intersection(block):
            continue
        if _ports_free(block):
            return p
    raise SlurmClusterError(f"could not find {count} consecutive free ports")


def _world_traversable(path: Path) -> bool:
    """True when every directory from / down to ``path`` is o+x (munged wants that)."""
    p = path.resolve()
    for d in [p, *p.parents]:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<{e}>"
    return "\n".join(text.splitlines()[-lines:])


def _alive(proc: subprocess.Popen | None) -> bool:
    return proc is not None and proc.poll() is None


class SlurmCluster:
    """munged + slurmctld + 4 x slurmd, private to ``base_dir``.

    Attributes after construction: ``base_dir``, ``conf_path``, ``env`` (dict
    to pass to subprocesses: os.environ + SLURM_CONF + TZ=UTC),
    ``cluster_name``, ``ctld_port``, ``slurmd_ports``, ``munge_socket``,
    ``partition`` ("debug"), ``nodes`` (("n1", .., "n4")), ``cpus_per_node``.
    """

    partition = "debug"
    nodes = NODE_NAMES

    def __init__(self, base_dir, *, start_timeout: float = 30.0,
                 message_timeout: int = 3, cpus_per_node: int | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.start_timeout = start_timeout
        # Slurm's MessageTimeout: a client talking to a dead slurmctld gives
        # up after about MessageTimeout-1 seconds ("Unable to contact slurm
        # controller (connect failure)").  Slurm's default is 10.
        self.message_timeout = message_timeout
        if cpus_per_node is None:
            try:
                cpus_per_node = len(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                cpus_per_node = os.cpu_count() or 1
        self.cpus_per_node = max(1, cpus_per_node)
        self.conf_path = self.base_dir / "slurm.conf"
        self.cluster_name = ""
        self.ctld_port = 0
        self.slurmd_ports: list[int] = []
        self.munge_socket = ""
        self._socket_dir: Path | None = None
        self._socket_dir_is_temp = False
        self._munged: subprocess.Popen | None = None
        self._ctld: subprocess.Popen | None = None
        self._slurmds: dict[str, subprocess.Popen] = {}
        self._started = False
        self._bins = {b: _which(b) or b for b in REQUIRED_BINARIES}
        self.env = self._make_env()

    # ------------------------------------------------------------------ paths
    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def state_dir(self) -> Path:
        return self.base_dir / "state"

    @property
    def spool_dir(self) -> Path:
        return self.base_dir / "spool"

    @property
    def munge_dir(self) -> Path:
        return self.base_dir / "munge"

    def _make_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf_path)
        env["TZ"] = "UTC"
        path = env.get("PATH", "")
        extra = [d for d in _EXTRA_PATH if d not in path.split(":")]
        env["PATH"] = ":".join([p for p in [path, *extra] if p])
        return env

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start a fresh cluster; returns once sinfo shows 4 idle nodes."""
        if self._started:
            raise SlurmClusterError("cluster already started")
        missing = slurm_binaries_missing()
        if missing:
            raise SlurmClusterError(f"missing binaries: {', '.join(missing)}")
        if os.geteuid() != 0:
            raise SlurmClusterError("SlurmCluster needs root (SlurmUser=root)")
        self._started = True
        atexit.register(self.stop)
        try:
            # Leftovers of an earlier instance on this same base_dir (a run
            # that died without stop()) would hold the old state: end them.
            self._kill_strays()
            self._prepare_dirs()
            self._write_conf()
            self._start_munged()
            deadline = time.monotonic() + self.start_timeout
            self._start_ctld_process()
            for node in NODE_NAMES:
                self._start_slurmd(node)
            self._wait_nodes(deadline, idle_only=True)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything this instance started (by PID) and wait for it."""
        atexit.unregister(self.stop)
        procs = [*self._slurmds.values(), self._ctld]
        self._terminate([p for p in procs if p is not None])
        self._slurmds.clear()
        self._ctld = None
        self._kill_strays()
        if self._munged is not None:
            self._terminate([self._munged])
            self._munged = None
        if self._socket_dir_is_temp and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._socket_dir_is_temp = False
        self._started = False

    def stop_controller(self) -> None:
        """Take slurmctld down (SIGTERM, it saves its state); slurmd keep running."""
        if self._ctld is not None:
            self._terminate([self._ctld])
            self._ctld = None

    def start_controller(self) -> None:
        """Bring slurmctld back (state recovered); waits until all nodes respond."""
        if not self._started:
            raise SlurmClusterError("cluster not started")
        if _alive(self._ctld):
            return
        self._start_ctld_process()
        self._wait_nodes(time.monotonic() + self.start_timeout, idle_only=False)

    @property
    def controller_running(self) -> bool:
        return _alive(self._ctld)

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the daemons currently running, by name."""
        out = {}
        if _alive(self._munged):
            out["munged"] = self._munged.pid
        if _alive(self._ctld):
            out["slurmctld"] = self._ctld.pid
        for n, p in self._slurmds.items():
            if _alive(p):
                out[f"slurmd-{n}"] = p.pid
        return out

    # --------------------------------------------------------------- internals
    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # A fresh cluster every start(): state of an earlier run in the same
        # directory (other ClusterName, old ports) must not be recovered.
        for d in (self.state_dir, self.spool_dir, self.run_dir, self.log_dir,
                  self.munge_dir):
            shutil.rmtree(d, ignore_errors=True)
        for d in (self.state_dir, self.run_dir, self.log_dir, self.spool_dir):
            d.mkdir(mode=0o755)
        for n in NODE_NAMES:
            (self.spool_dir / n).mkdir(mode=0o755)
        # munged refuses group/world-writable dirs for its key, log and seed.
        self.munge_dir.mkdir(mode=0o711)
        for sub in ("etc", "log", "lib"):
            (self.munge_dir / sub).mkdir(mode=0o700)
        # The socket's directory and all its parents must be o+x for munged.
        local = self.munge_dir / "run"
        if (_world_traversable(self.base_dir)
                and len(str(local / "munge.socket")) <= _MAX_SOCKET_PATH):
            local.mkdir(mode=0o755)
            self._socket_dir, self._socket_dir_is_temp = local, False
        else:
            tmp_root = "/tmp"
            if _world_traversable(Path(tempfile.gettempdir())):
                tmp_root = tempfile.gettempdir()
            d = Path(tempfile.mkdtemp(prefix="atsd-munge-", dir=tmp_root))
            os.chmod(d, 0o755)
            self._socket_dir, self._socket_dir_is_temp = d, True
        self.munge_socket = str(self._socket_dir / "munge.socket")
        for d in (self.state_dir, self.run_dir, self.log_dir, self.spool_dir,
                  self.munge_dir / "run", self._socket_dir):
            # mkdir's mode is subject to the umask.
            if d.exists():
                os.chmod(d, 0o755)
        os.chmod(self.munge_dir, 0o711)

    def _write_conf(self) -> None:
        self.cluster_name = "atsd" + uuid.uuid4().hex[:10]
        self.ctld_port = _free_port()
        first = _free_port_block(len(NODE_NAMES), {self.ctld_port})
        self.slurmd_ports = list(range(first, first + len(NODE_NAMES)))
        b = self.base_dir
        nodes = f"n[1-{len(NODE_NAMES)}]"
        lines = [
            f"ClusterName={self.cluster_name}",
            "SlurmctldHost=localhost",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={first}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={b}/state",
            f"SlurmdSpoolDir={b}/spool/%n",
            f"SlurmctldPidFile={b}/run/slurmctld.pid",
            f"SlurmdPidFile={b}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={b}/log/slurmctld.log",
            f"SlurmdLogFile={b}/log/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerParameters=sched_interval=2,bf_interval=1",
            "MinJobAge=10",
            "KillWait=2",
            f"MessageTimeout={self.message_timeout}",
            "ReturnToService=2",
            "MailProg=/bin/true",
            f"NodeName={nodes} NodeHostname=localhost NodeAddr=127.0.0.1 "
            f"Port=[{first}-{first + len(NODE_NAMES) - 1}] "
            f"CPUs={self.cpus_per_node} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={nodes} Default=YES "
            "MaxTime=INFINITE State=UP",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")
        os.chmod(self.conf_path, 0o644)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.out", "ab")
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=self.env, cwd=self.base_dir,
                start_new_session=True)
        finally:
            out.close()

    def _start_munged(self) -> None:
        key = self.munge_dir / "etc" / "munge.key"
        subprocess.run([self._bins["mungekey"], "--create", "--keyfile", str(key)],
                       check=True, capture_output=True, env=self.env)
        os.chmod(key, 0o600)
        self._munged = self._spawn("munged", [
            self._bins["munged"], "--foreground",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--log-file={self.munge_dir / 'log' / 'munged.log'}",
            f"--pid-file={self.munge_dir / 'lib' / 'munged.pid'}",
            f"--seed-file={self.munge_dir / 'lib' / 'munged.seed'}",
        ])
        deadline = time.monotonic() + 10
        while not os.path.exists(self.munge_socket):
            if not _alive(self._munged):
                raise SlurmClusterError("munged exited during startup\n" + self._log_tails())
            if time.monotonic() > deadline:
                raise SlurmClusterError("munged did not create its socket\n" + self._log_tails())
            time.sleep(0.02)

    def _start_ctld_process(self) -> None:
        self._ctld = self._spawn("slurmctld", [self._bins["slurmctld"], "-D"])

    def _start_slurmd(self, node: str) -> None:
        self._slurmds[node] = self._spawn(f"slurmd-{node}",
                                          [self._bins["slurmd"], "-D", "-N", node])

    def _node_states(self) -> dict[str, str] | None:
        try:
            r = subprocess.run([self._bins["sinfo"], "-h", "-N", "-o", "%N %T"],
                               env=self.env, capture_output=True, text=True,
                               timeout=self.message_timeout + 5)
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        states = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def _wait_nodes(self, deadline: float, *, idle_only: bool) -> None:
        ok_states = {"idle"} if idle_only else {
            "idle", "reserved", "mixed", "allocated", "completing", "planned"}
        last = None
        while True:
            dead = [n for n, p in [("slurmctld", self._ctld), *self._slurmds.items()]
                    if not _alive(p)]
            if dead:
                raise SlurmClusterError(
                    f"{', '.join(dead)} exited during startup\n" + self._log_tails())
            last = self._node_states()
            if last is not None and all(last.get(n) in ok_states for n in NODE_NAMES):
                return
            if time.monotonic() > deadline:
                raise SlurmClusterError(
                    f"nodes not {'idle' if idle_only else 'up'} after "
                    f"{self.start_timeout:.0f}s (sinfo: {last})\n" + self._log_tails())
            time.sleep(0.1)

    def _log_tails(self) -> str:
        files = [self.munge_dir / "log" / "munged.log", self.log_dir / "munged.out",
                 self.log_dir / "slurmctld.log", self.log_dir / "slurmctld.out"]
        for n in NODE_NAMES:
            files += [self.log_dir / f"slurmd-{n}.log", self.log_dir / f"slurmd-{n}.out"]
        parts = []
        for f in files:
            if f.exists():
                parts.append(f"==> {f} <==\n{_tail(f)}")
        return "\n".join(parts)

    @staticmethod
    def _terminate(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _kill_strays(self) -> None:
        """SIGKILL, by PID, leftover processes of a cluster on this base_dir.

        slurmstepd daemonizes, so it is not our child; it and the job scripts
        it runs carry this cluster's SLURM_CONF path in their environment,
        which is how they are found (from /proc).  Before start() this also
        ends daemons that an earlier, crashed instance on the same base_dir
        left running.  Our own process and its ancestors are spared, and so
        is our munged (it is stopped last, gracefully).
        """
        marker = f"SLURM_CONF={self.conf_path}".encode()
        me = os.getpid()
        ancestors = set()
        if self._munged is not None:
            ancestors.add(self._munged.pid)  # stopped last, gracefully
        pid = me
        while pid > 1:
            ancestors.add(pid)
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    pid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        for _ in range(3):
            victims = []
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in ancestors:
                    continue
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        env = f.read().split(b"\0")
                except OSError:
                    continue
                if marker in env:
                    victims.append(int(entry))
            if not victims:
                return
            for v in victims:
                try:
                    os.kill(v, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
