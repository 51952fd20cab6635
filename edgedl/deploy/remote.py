"""Check and time a bundle on the user's own Linux device over SSH (``--ssh USER@HOST[:PORT]``).

The system ``ssh`` client does the work, with the user's own ``~/.ssh/config``, keys and agent
(``-F FILE`` or ``EDGEDL_SSH_CONFIG`` names another config). It always runs with
``BatchMode=yes`` (no password prompts) and never touches host-key checking: an unknown or
changed host key stops with its fingerprint and the fix. Every name and path sent to the remote
shell goes through ``shlex.quote``.

On the device, in this order: a preflight with the standard library only (Python, numpy, which
TFLite runtime imports, architecture, free disk, device facts) before anything is copied; one
``mktemp -d`` folder that receives the bundle; the bundle's own ``run.py --self-test``; raw
outputs on golden vectors and held-out samples (compared with the same runtime on x86, as the
emulated check does); then timed runs, each a fresh ``run.py --bench --json`` process between
two thermal snapshots. The folder is removed afterwards, on errors and on interrupts, unless
``keep``. Nothing else is written on the device.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.errors import DeviceError, UsageError

SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
               "-o", "ServerAliveCountMax=4"]
SSH_FAILED = 255  # ssh's own exit status: the connection, not the remote command, failed
TEMP_PATTERN = "edgedl.XXXXXXXXXX"
MIN_FREE_MB = 20  # beside the bundle itself: raw outputs, Python's bytecode caches
LIBRARY = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime"}
_TARGET = re.compile(r"^(?:(?P<user>[^@\s/]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d{1,5}))?$")


@dataclass
class Device:
    """One device: how to reach it, and its optional settings (devices.toml keys of the same names)."""

    label: str
    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"  # the device's interpreter: a command, e.g. /home/pi/venv/bin/python
    tmpdir: str | None = None  # where the temporary folder is made [default: the device's $TMPDIR or /tmp]
    timeout_s: float = 300.0  # the limit for each remote step
    runs: int | None = None
    warmup: int | None = None
    threads: list[int] | None = None  # [default: 1..cores]
    xnnpack: list[bool] | None = None  # [default: on and off]

    @property
    def target(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def parse_target(text: str, label: str | None = None) -> Device:
    """``USER@HOST[:PORT]`` (or a Host alias of the ssh config) → Device."""
    found = _TARGET.match(text.strip())
    if not found or found["host"].startswith("-"):
        raise UsageError(f"--ssh expects USER@HOST[:PORT] (e.g. pi@raspberrypi.local:22), got {text!r}")
    port = int(found["port"]) if found["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"port {port} in {text!r} is not between 1 and 65535")
    host = found["host"].strip("[]")
    return Device(label=label or host, host=host, user=found["user"], port=port)


@dataclass
class Session:
    """The ssh processes in flight, so that an interrupt stops them all before the folders are removed."""

    ssh_config: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    _procs: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            for proc in list(self._procs):
                kill_group(proc)

    def track(self, proc, running: bool) -> None:
        with self._lock:
            (self._procs.add if running else self._procs.discard)(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill an ssh and what it started (a ProxyCommand holds ssh's output pipes open: killing ssh alone
    left an interrupted copy waiting 30 s for the proxy to end)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone, with its group
        pass


class Connection:
    """``ssh`` to one device; every failure becomes a one-line DeviceError naming the device."""

    def __init__(self, device: Device, session: Session):
        self.device, self.session = device, session
        self.python = " ".join(shlex.quote(part) for part in shlex.split(device.python))
        if not self.python:
            raise UsageError(f"{device.label}: python must name the device's interpreter, e.g. python3")

    def argv(self, command: str) -> list[str]:
        config = self.session.ssh_config or os.environ.get("EDGEDL_SSH_CONFIG")
        return ["ssh", *SSH_OPTIONS, *(["-F", config] if config else []),
                *(["-p", str(self.device.port)] if self.device.port else []),
                *(["-l", self.device.user] if self.device.user else []), "--", self.device.host,
                "sh -c " + shlex.quote(command)]  # the same POSIX shell whatever the login shell is

    def run(self, command: str, what: str, stdin=None, data: bytes | None = None, timeout: float | None = None,
            cleanup: bool = False) -> subprocess.CompletedProcess:
        """Run ``command`` on the device; raise DeviceError when ssh itself fails or ``timeout`` passes."""
        if self.session.cancelled.is_set() and not cleanup:
            raise DeviceError(f"{self.device.label}: interrupted before {what}")
        limit = timeout or self.device.timeout_s + 30
        # its own process group: ssh's ProxyCommand inherits its pipes, and must go when ssh is stopped
        proc = subprocess.Popen(self.argv(command), stdin=stdin if stdin is not None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
        self.session.track(proc, True)
        try:
            out, err = proc.communicate(data if stdin is None else None, timeout=limit)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.communicate()
            raise DeviceError(f"{self.device.label}: {what} did not finish within {limit:.0f} s "
                              "(device or network hung)") from None
        finally:
            self.session.track(proc, False)
        if self.session.cancelled.is_set() and not cleanup:
            raise DeviceError(f"{self.device.label}: interrupted during {what}")
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if done.returncode == SSH_FAILED:
            raise DeviceError(f"{self.device.label}: {self._ssh_failure(err.decode(errors='replace'))}")
        return done

    def effective(self) -> dict:
        """What ssh will really use for this device (``ssh -G``: host aliases, ports and files resolved)."""
        argv = self.argv("")
        found = {}
        try:
            done = subprocess.run(["ssh", "-G", *argv[1:-1]], capture_output=True, text=True, timeout=15)
            for line in done.stdout.splitlines():
                key, _, value = line.partition(" ")
                found.setdefault(key, value)
        except (OSError, subprocess.TimeoutExpired):
            pass
        known = (found.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0]
        return {"hostname": found.get("hostname") or self.device.host,
                "port": int(found.get("port") or self.device.port or 22),
                "user": found.get("user") or self.device.user or "", "known_hosts": known}

    def _ssh_failure(self, stderr: str) -> str:
        real = self.effective()
        host, port, known_hosts = real["hostname"], real["port"], shlex.quote(real["known_hosts"])
        where = self.device.target
        entry = f"[{host}]:{port}" if port != 22 else host
        scan = f"ssh-keyscan -p {port} {shlex.quote(host)} >> {known_hosts}"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return (f"the host key of {where} has CHANGED (it now sends {self._fingerprint(stderr, host, port)}); "
                    f"if the device was reinstalled and you trust the new key: ssh-keygen -f {known_hosts} -R "
                    f"{shlex.quote(entry)}, then {scan}")
        if "Host key verification failed" in stderr or "host key is known" in stderr:
            return (f"the host key of {where} is not in your known_hosts (it sends "
                    f"{self._fingerprint(stderr, host, port)}); compare it with the device's "
                    f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on its console), then: {scan}")
        if "Permission denied" in stderr or "Too many authentication failures" in stderr:
            login = f"{real['user']}@{host}" if real["user"] else host
            return (f"{where} refused your SSH key (no passwords are used); install it with: "
                    f"ssh-copy-id{' -p ' + str(port) if port != 22 else ''} {shlex.quote(login)}")
        for reason in ("Connection refused", "Connection timed out", "No route to host", "Could not resolve hostname",
                       "Network is unreachable", "Connection closed", "Connection reset"):
            if reason in stderr:
                return f"cannot reach {where} ({host} port {port}): {reason.lower()}"
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return f"ssh to {where} failed: {lines[-1][:200] if lines else 'exit 255'}"

    @staticmethod
    def _fingerprint(stderr: str, host: str, port: int) -> str:
        found = re.search(r"SHA256:[A-Za-z0-9+/=]+", stderr)
        if found:
            return found[0]
        try:  # ssh does not print it under BatchMode: ask the device, as the fix will
            scan = subprocess.run(["ssh-keyscan", "-T", "5", "-p", str(port), host], capture_output=True, timeout=15)
            listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return "a key ssh-keyscan could not read"
        keys = re.findall(r"(SHA256:[A-Za-z0-9+/=]+).*\((\w+)\)", listed.stdout.decode())
        return ", ".join(f"{kind} {digest}" for digest, kind in keys) or "a key ssh-keyscan could not read"


def _remote_file(name: str) -> Path:
    return Path(str(resources.files("edgedl.deploy.remote_files").joinpath(name)))


def _emulator_file(name: str) -> Path:
    return Path(str(resources.files("edgedl.deploy.emulator").joinpath(name)))


def pip_fix(arch: str) -> str:
    if arch in ("armv7l", "armv6l"):  # 32-bit Pi OS: no ai-edge-litert wheel
        return 'pip install "numpy<2" tflite-runtime==2.14.0'
    return "pip install ai-edge-litert numpy"


SETUP_VENV = '"${XDG_CACHE_HOME:-$HOME/.cache}/edgedl/device-venv"'
SETUP_SCRIPT = """venv=%(venv)s
case "$(uname -m)" in armv6l|armv7l) set -- "numpy<2" "tflite-runtime==2.14.0" ;; *) set -- ai-edge-litert numpy ;; esac
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")" && %(python)s -m venv "$venv" || { echo "EDGEDL-NO-VENV" >&2; exit 3; }
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "$@" >&2 || exit 4
echo "$venv/bin/python"
"""


def setup(conn: Connection) -> str:
    """``--setup``: an edgedl-owned venv on the device (outside the temporary folder, kept for the next run)
    with the runtime pip installs for its architecture. The device needs its own access to PyPI."""
    done = conn.run(SETUP_SCRIPT % {"venv": SETUP_VENV, "python": conn.python}, "--setup (venv + pip install)",
                    timeout=max(conn.device.timeout_s, 900) + 30)
    label, err = conn.device.label, done.stderr.decode(errors="replace").strip()
    if done.returncode == 3:
        raise DeviceError(f"{label}: --setup could not make a venv with {conn.device.python} "
                          "(Debian/Pi OS: sudo apt install python3-venv)")
    if done.returncode != 0:
        tail = err.splitlines()[-1][:200] if err else f"exit {done.returncode}"
        raise DeviceError(f"{label}: --setup: pip install failed on the device ({tail}); it needs its own access "
                          "to PyPI (or a pip.conf with a mirror)")
    python = done.stdout.decode().strip().splitlines()[-1:]
    if not python or not python[0].startswith("/"):
        raise DeviceError(f"{label}: --setup did not report the venv's python")
    return python[0]


def preflight(conn: Connection, bundle_mb: float) -> dict:
    """Facts and readiness of the device, read with the standard library only; nothing is written."""
    tmpdir = shlex.quote(conn.device.tmpdir) if conn.device.tmpdir else '"${TMPDIR:-/tmp}"'
    done = conn.run(f"exec {conn.python} - preflight {tmpdir}", "the preflight",
                    data=_remote_file("facts.py").read_bytes(), timeout=120)
    label = conn.device.label
    if done.returncode in (126, 127):
        raise DeviceError(f"{label}: no Python at {conn.device.python!r} on the device "
                          "(sudo apt install python3, or set python = \"/path/to/python\" for this device)")
    try:
        found = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise DeviceError(f"{label}: the preflight failed on the device: {tail[0][:200]}") from None
    problems = _readiness(found, bundle_mb)
    if problems:
        raise DeviceError(f"{label}: {problems}")
    return found


def _readiness(found: dict, bundle_mb: float) -> str | None:
    major, minor = (int(x) for x in found["python"].split(".")[:2])
    fix = pip_fix(found["arch"])
    if (major, minor) < (3, 8):
        return f"Python {found['python']} on the device is too old for run.py (3.8 or newer)"
    if not found["numpy"]["ok"]:
        return f"numpy does not import on the device ({found['numpy']['error']}); fix: {fix}"
    if not any(r["ok"] for r in found["runtimes"].values()):
        errors = "; ".join(f"{name}: {r['error']}" for name, r in found["runtimes"].items())
        return f"no TFLite runtime imports on the device ({errors}); fix: {fix}"
    missing = [name for name, ok in found["tools"].items() if not ok]
    if missing:
        return f"the device lacks {', '.join(missing)} (coreutils/tar); install them with its package manager"
    if not found["tmpdir_exists"]:
        return f"the temporary folder's parent {found['tmpdir']} does not exist on the device"
    need = bundle_mb * 2 + MIN_FREE_MB
    if found["free_mb"] is not None and found["free_mb"] < need:
        return (f"only {found['free_mb']} MB free in {found['tmpdir']} on the device, {need:.0f} MB needed; "
                "free some space or set tmpdir for this device")
    return None


def runtime_of(found: dict) -> str:
    """The runtime run.py will pick on the device: ai-edge-litert first, as run.py does."""
    return "litert" if found["runtimes"]["ai-edge-litert"]["ok"] else "tflite-runtime"


class RemoteFolder:
    """One ``mktemp -d`` folder on the device, removed on exit (errors and interrupts too) unless ``keep``."""

    def __init__(self, conn: Connection, keep: bool, say):
        self.conn, self.keep, self.say, self.path = conn, keep, say, None

    def __enter__(self) -> str:
        parent = shlex.quote(self.conn.device.tmpdir) if self.conn.device.tmpdir else '"${TMPDIR:-/tmp}"'
        done = self.conn.run(f"mktemp -d {parent}/{TEMP_PATTERN}", "making the temporary folder", timeout=60)
        path = done.stdout.decode().strip()
        if done.returncode != 0 or not path.startswith("/") or "\n" in path or \
                not re.fullmatch(r"edgedl\.[A-Za-z0-9]+", path.rsplit("/", 1)[-1]):
            raise DeviceError(f"{self.conn.device.label}: mktemp -d failed on the device: "
                              f"{done.stderr.decode(errors='replace').strip()[:200] or path[:200]}")
        self.path = path
        return path

    def __exit__(self, *exc) -> None:
        if self.path is None:
            return
        label = self.conn.device.label
        if self.keep:
            self.say(f"{label}: kept {self.path} on the device (--keep)")
            return
        try:
            done = self.conn.run(f"rm -rf -- {shlex.quote(self.path)}", "removing the temporary folder", timeout=60,
                                 cleanup=True)
            if done.returncode != 0:
                raise DeviceError(done.stderr.decode(errors="replace").strip()[:200])
        except DeviceError as err:
            self.say(f"{label}: could not remove {self.path} on the device ({err}); remove it by hand")


def upload(conn: Connection, folder: str, files: dict[str, Path]) -> None:
    """Copy ``{name in folder: local file or folder}`` into ``folder`` as one tar stream (links followed)."""
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w", dereference=True) as tar:
            for name, path in files.items():
                tar.add(str(path), arcname=name)
        archive.seek(0)
        done = conn.run(f"tar -C {shlex.quote(folder)} -xf -", "copying the bundle", stdin=archive)
    if done.returncode != 0:
        raise DeviceError(f"{conn.device.label}: copying to {folder} failed: "
                          f"{done.stderr.decode(errors='replace').strip()[-200:]}")


def fetch(conn: Connection, path: str, what: str) -> bytes:
    done = conn.run(f"cat -- {shlex.quote(path)}", f"fetching {what}")
    if done.returncode != 0:
        raise DeviceError(f"{conn.device.label}: could not fetch {what}: {done.stderr.decode(errors='replace')[:200]}")
    return done.stdout


def in_bundle(conn: Connection, bundle_dir: str, runtime: str, args: str, timed: bool = False) -> str:
    """A remote command that runs the device's Python in the bundle folder, bounded by ``timeout``."""
    limit = int(conn.device.timeout_s)
    stamp = 'EDGEDL_T0_NS="$(date +%s%N)" ' if timed else ""
    return (f"cd {shlex.quote(bundle_dir)} && {stamp}EDGEDL_INTERPRETER={LIBRARY[runtime]} "
            f"exec timeout -k 5 {limit} {conn.python} {args}")


def timed_out(done: subprocess.CompletedProcess) -> bool:
    return done.returncode in (124, 137)  # timeout(1): the limit passed (137: killed after -k)


def step_failure(conn: Connection, done: subprocess.CompletedProcess) -> str:
    if timed_out(done):
        return f"did not finish within {conn.device.timeout_s:.0f} s on the device (timed out)"
    if done.returncode in (139, -11):
        return "crashed with a segmentation fault"
    text = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    return f"exit {done.returncode}: {text[-1][:200] if text else 'no output'}"


def throttle_flags(before: dict, after: dict) -> list[str]:
    """Why a measurement's numbers cannot be mixed with clean ones (an empty list: clean)."""
    flags = []
    for when, snap in (("before", before), ("after", after)):
        bits = int(snap["throttled"], 16) if snap.get("throttled") else 0
        if bits & 0xF:
            flags.append(f"throttled {when} the run (vcgencmd get_throttled={snap['throttled']})")
    if before.get("throttled") and after.get("throttled") and \
            (int(after["throttled"], 16) & ~int(before["throttled"], 16)) >> 16:
        flags.append(f"throttling occurred during the run (get_throttled {before['throttled']} → {after['throttled']})")
    for key, what in (("freq_khz", "CPU frequency"), ("max_freq_khz", "CPU frequency cap")):
        for cpu, start in before.get(key, {}).items():
            end = after.get(key, {}).get(cpu)
            if start and end and abs(end - start) > 0.05 * start:
                flags.append(f"{what} of {cpu} changed {start // 1000} → {end // 1000} MHz")
                break
    return flags


def measure(conn: Connection, bundle_dir: str, runtime: str, threads: int, xnnpack: bool, runs: int,
            warmup: int) -> dict:
    """One fresh ``run.py --bench --json`` process between two thermal snapshots."""
    facts = f"{conn.python} ../_edgedl/facts.py thermal"
    args = f"run.py --bench --json --runs {runs} --warmup {warmup} --threads {threads}" + \
        ("" if xnnpack else " --no-xnnpack")
    command = f"cd {shlex.quote(bundle_dir)} && {facts} && ({in_bundle(conn, bundle_dir, runtime, args, True)}); " \
              f"status=$?; {facts}; exit $status"
    done = conn.run(command, f"timing {threads} thread(s), XNNPACK {'on' if xnnpack else 'off'}")
    row = {"threads": threads, "xnnpack": xnnpack}
    records = {}
    for line in done.stdout.decode(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            records.setdefault(record.get("kind"), []).append(record)
    if done.returncode != 0 or "bench" not in records:
        return row | {"error": step_failure(conn, done)}
    snaps = records.get("thermal", [])
    before, after = (snaps[0], snaps[-1]) if len(snaps) == 2 else ({}, {})
    bench = records["bench"][-1]
    bench.pop("kind", None)
    return row | bench | {"thermal_before": before, "thermal_after": after, "flags": throttle_flags(before, after)}


def compare_outputs(host: np.ndarray, device: np.ndarray, runtime: str) -> dict:
    from .device_check import _compare

    return _compare(host, device, runtime)


def read_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
