"""The local Ray instance that the studies on one machine share.

``iqa-tune run`` without ``--address`` joins the instance another study on this machine started, or starts one
for every study that comes after it. Two studies then queue their trials for the same CPUs and GPUs instead of
starting two instances that fight over ports and oversubscribe the cores.

Who stops it: a small supervisor process (``python -m iqa_tune.instance``), started with the instance, owns
``ray start --head --block`` and ends it (SIGTERM: that instance and no other; never ``ray stop``, which ends every
instance on the machine) once no study has used it for :data:`IDLE_S` seconds. Each study registers its driver
in ``users/`` while it runs; a driver that dies without unregistering (SIGKILL) is pruned by process id and start
time. So no study tears the instance down under another, and a killed driver does not leave it running forever.

No Ray import here: the instance is driven through Ray's command line, and ``study.connected`` joins it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

IDLE_S = 15.0  # the instance outlives its last study by this long, so a study run right after finds it warm
START_TIMEOUT_S = 180.0


def use_token_auth() -> None:
    """Call before Ray is imported, when a driver will use the shared instance. Ray turns token authentication on
    for an instance it starts, but a driver that connects by address sends the token only in token mode, which
    Ray reads at import. Not set for ``--address``: a cluster of one's own may run without tokens, and a driver in
    token mode without a token file would be refused before it reaches it."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def runtime_dir() -> Path:
    """Per user, on this machine: the instance record, the lock and the registered studies."""
    root = os.environ.get("IQA_TUNE_RUNTIME") or Path(tempfile.gettempdir()) / f"iqa-tune-{os.getuid()}"
    path = Path(root)
    (path / "users").mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Instance:
    address: str  # the GCS address, host:port
    supervisor: str  # process key of the supervisor (pid-starttime)
    dashboard_url: str  # "" without a dashboard
    log: str


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the pid, a key that a reused
    pid does not match. None when there is no such process (or it is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def process_key(pid: int) -> str:
    return f"{pid}-{_start_time(pid)}"


def _alive(key: str) -> bool:
    pid, _, start = key.partition("-")
    return pid.isdigit() and _start_time(int(pid)) == start


def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


PROBE_TIMEOUT_S = 5.0  # per step of the --address probe (connect, then the greeting): a cluster answers in ms
# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray Client server) answers
# with a SETTINGS frame of its own (frame type 4) before any request, authentication or version check
H2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
ADDRESS_FIX = ("start a cluster there with `ray start --head` (and give its address as it prints it, host:6379, or "
               "ray://host:10001 for Ray Client), reach it through an SSH tunnel, or omit --address to run on a "
               "local instance")


def _greeting(host: str, port: int, timeout: float) -> bytes | None:
    """The first 9 bytes (a frame header) the server sends back to an HTTP/2 greeting; None: it said nothing
    within ``timeout``. A connection that fails raises OSError (TimeoutError: no answer to the connect)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # TLS first: a connection is all we test
            return bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
        s.settimeout(timeout)
        head = b""
        try:
            s.sendall(H2_GREETING)
            while len(head) < 9:
                chunk = s.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except TimeoutError:
            return None
        except OSError:  # reset by a server that does not speak HTTP/2
            pass
        return head


def check_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """``--address``: something that speaks gRPC, as Ray's GCS and Ray Client do, must answer there within seconds,
    or the study stops with exit 2. ``ray.init`` would retry for minutes against an address where nothing (or
    something else) listens, and inside that wait no signal handler runs, so not even SIGTERM ends it. ``auto`` is
    Ray's own lookup, which fails at once when it finds nothing."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address}: expected host:port (the GCS, port 6379 by default), "
                        "ray://host:port (Ray Client, 10001) or auto")
    try:
        head = _greeting(host, int(port), timeout)
    except TimeoutError:
        raise UserError(f"--address {address}: no answer to a connection within {timeout:g} s (a firewall, or a "
                        f"host that is down); {ADDRESS_FIX}") from None
    except OSError as e:
        raise UserError(f"--address {address}: nothing answers there ({e.strerror or e}); {ADDRESS_FIX}") from None
    if head is None:
        raise UserError(f"--address {address}: something accepts connections there but says nothing within "
                        f"{timeout:g} s: not a Ray cluster; {ADDRESS_FIX}")
    if len(head) < 9 or head[3] != 4:
        raise UserError(f"--address {address}: something listens there, but it is not a Ray cluster (no gRPC "
                        f"answer); {ADDRESS_FIX}")


def sigterm_as_interrupt() -> None:
    """SIGTERM (``kill``, a job scheduler's stop) ends a study the way Ctrl-C does: Tune stops its trials, the
    records are written, and a start that had not begun is removed. ``ray.init`` replaces the handler with an
    immediate exit, so the driver calls this again after it. Main thread only (Python's rule for handlers)."""
    import threading

    def as_ctrl_c(signum, frame) -> None:
        handler = signal.getsignal(signal.SIGINT)  # Python's (KeyboardInterrupt), or Tune's graceful stop
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, as_ctrl_c)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _record(folder: Path) -> Instance | None:
    try:
        return Instance(**json.loads((folder / "instance.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(folder: Path | None = None) -> Instance | None:
    """The shared instance, if its supervisor lives and its GCS answers."""
    folder = folder or runtime_dir()
    inst = _record(folder)
    return inst if inst and _alive(inst.supervisor) and _reachable(inst.address) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _start(folder: Path, dashboard: bool, host: str, port: int) -> Instance:
    (folder / "instance.json").unlink(missing_ok=True)
    log = folder / "instance.log"
    args = [sys.executable, "-m", "iqa_tune.instance", str(folder), str(_free_port()),
            f"{host}:{port}" if dashboard else ""]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # outlives this driver
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        inst = _record(folder)
        if inst and _reachable(inst.address):
            return inst
        time.sleep(0.25)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise UserError(f"could not start a local Ray instance (log: {log}):\n{tail}")


@contextlib.contextmanager
def shared(dashboard: bool, host: str, port: int) -> Iterator[tuple[Instance, bool]]:
    """Join the shared instance (starting it if there is none) for as long as the block runs; yields
    (instance, started_here). Registered under ``users/`` meanwhile, so the supervisor keeps it up."""
    folder = runtime_dir()
    me = folder / "users" / process_key(os.getpid())
    with _locked(folder):
        inst = running(folder)
        started = inst is None
        me.touch()
        try:
            inst = inst or _start(folder, dashboard, host, port)
        except BaseException:
            me.unlink(missing_ok=True)
            raise
    try:
        yield inst, started
    finally:
        me.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# the supervisor: python -m iqa_tune.instance FOLDER GCS_PORT [DASHBOARD_HOST:PORT]


def _users(folder: Path) -> list[str]:
    keys = []
    for f in (folder / "users").iterdir():
        if _alive(f.name):
            keys.append(f.name)
        else:  # its driver ended without unregistering (SIGKILL)
            f.unlink(missing_ok=True)
    return keys


def supervise(folder: Path, gcs_port: int, dashboard: str) -> int:
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={gcs_port}",
           "--disable-usage-stats"]
    if dashboard:
        dhost, _, dport = dashboard.rpartition(":")
        cmd += ["--include-dashboard=true", f"--dashboard-host={dhost}", f"--dashboard-port={dport}"]
    else:
        cmd += ["--include-dashboard=false"]
    # the instance and its drivers use token authentication (Ray's default for an instance it starts); a fresh
    # machine has no token yet: create one, as ray.init does for its own instances
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                   stdout=subprocess.DEVNULL, check=True)
    head = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    candidates = [f"{socket.gethostbyname(socket.gethostname())}:{gcs_port}", f"127.0.0.1:{gcs_port}"]
    recorded, idle_since = False, None
    try:
        while head.poll() is None and not stop["now"]:
            if not recorded:
                for candidate in candidates:
                    if _reachable(candidate):
                        inst = Instance(candidate, process_key(os.getpid()),
                                        dashboard if dashboard else "", str(folder / "instance.log"))
                        tmp = folder / "instance.json.tmp"
                        tmp.write_text(json.dumps(asdict(inst)))
                        tmp.rename(folder / "instance.json")
                        recorded = True
                        break
                time.sleep(0.25)
                continue  # the driver that started it holds the lock until this record appears
            with _locked(folder):
                users = _users(folder)
                if users:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_S:
                    (folder / "instance.json").unlink(missing_ok=True)  # no study joins it from here on
                    break
            time.sleep(1.0)
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)  # ray start --block ends its own instance, only that one
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                head.kill()
        inst = _record(folder)
        if inst and inst.supervisor == process_key(os.getpid()):
            (folder / "instance.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
