"""A real OpenSSH server on a loopback port for the tests: own host key, user key, config and known_hosts.

Nothing of the user's ~/.ssh is read or written: the client side is one ``ssh -F`` config file
whose Host aliases name the scenarios (a good login, a wrong key, a changed or unknown host key).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SLOW_BYTES_PER_S = 400_000
# A link to the device at SLOW_BYTES_PER_S upstream (ssh ProxyCommand): a copy takes seconds. It
# touches MARKER once 200 kB went up in one connection: the bundle is then being copied.
SLOW_PROXY = """
import os, socket, sys, threading, time
host, port, rate, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
link = socket.create_connection((host, port))
def down():
    while True:
        data = link.recv(65536)
        if not data:
            os._exit(0)
        os.write(1, data)
threading.Thread(target=down, daemon=True).start()
sent = 0
while True:
    data = os.read(0, 8192)
    if not data:
        break
    link.sendall(data)
    sent += len(data)
    if sent > 200_000:
        open(marker, "a").close()
    time.sleep(len(data) / rate)
link.shutdown(socket.SHUT_WR)
threading.Event().wait(30)
"""


def available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgedl-test", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    def __init__(self, root: Path):
        self.root, self.port, self.user = root, free_port(), getpass.getuser()
        root.mkdir(parents=True, exist_ok=True)
        host_pub = _keygen(root / "host_key")
        user_pub = _keygen(root / "user_key")
        _keygen(root / "wrong_key")  # never authorized
        other_host = _keygen(root / "other_host_key")  # what a reinstalled device would present
        (root / "authorized_keys").write_text(user_pub + "\n")
        kind_and_key = " ".join(host_pub.split()[:2])
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {kind_and_key}\n")
        (root / "known_hosts_changed").write_text(f"[127.0.0.1]:{self.port} {' '.join(other_host.split()[:2])}\n")
        (root / "known_hosts_empty").write_text("")
        (root / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {root / 'host_key'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers {self.user}
PermitRootLogin prohibit-password
LogLevel ERROR
AcceptEnv XDG_CACHE_HOME
""")
        self.config = root / "ssh_config"
        common = (f"  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n  IdentitiesOnly yes\n"
                  "  IdentityAgent none\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
                  "  LogLevel ERROR\n")
        hosts = {"good": ("user_key", "known_hosts"), "wrongkey": ("wrong_key", "known_hosts"),
                 "changedkey": ("user_key", "known_hosts_changed"), "unknownkey": ("user_key", "known_hosts_empty"),
                 "slowlink": ("user_key", "known_hosts"), "ownhome": ("user_key", "known_hosts")}
        (root / "slow_proxy.py").write_text(SLOW_PROXY)
        self.slow_marker = root / "slowlink-busy"
        self.device_cache = root / "device-cache"  # the login "ownhome" keeps --setup's venv here, not in ~
        slow = (f"  ProxyCommand {sys.executable} {root / 'slow_proxy.py'} 127.0.0.1 {self.port} "
                f"{SLOW_BYTES_PER_S} {self.slow_marker}\n")
        self.config.write_text("".join(
            f"Host {alias}\n{common}  IdentityFile {root / key}\n  UserKnownHostsFile {root / known}\n"
            + (slow if alias == "slowlink" else "")
            + (f"  SetEnv XDG_CACHE_HOME={self.device_cache}\n" if alias == "ownhome" else "")
            for alias, (key, known) in hosts.items()))
        self.proc = None

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege separation folder
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "w"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the port accepts a connection, or sshd exits
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def runtime_only_python(root: Path) -> Path:
    """A venv whose only packages are numpy and ai-edge-litert (linked from the test's own venv): no TensorFlow."""
    import numpy

    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(root)],
                   check=True)
    site = next((root / "lib").glob("python3*/site-packages"))
    packages = Path(numpy.__file__).parent.parent
    for name in ("numpy", "numpy.libs", "ai_edge_litert", "flatbuffers"):
        if (packages / name).exists():
            (site / name).symlink_to(packages / name)
    for info in packages.glob("*.dist-info"):  # versions for importlib.metadata
        if info.name.split("-")[0].lower().replace("_", "-") in ("numpy", "ai-edge-litert", "flatbuffers"):
            (site / info.name).symlink_to(info)
    return root / "bin" / "python"


def bare_python(root: Path) -> Path:
    """A venv without numpy: the preflight must stop with the pip install that fixes it."""
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(root)],
                   check=True)
    return root / "bin" / "python"


def hanging_python(path: Path, real: Path, marker: Path) -> Path:
    """A device whose run.py never returns: the wrapper touches ``marker``, then sleeps."""
    path.write_text(f"""#!/bin/sh
case " $* " in *" run.py "*) : > '{marker}'; exec sleep 600;; esac
exec '{real}' "$@"
""")
    path.chmod(0o755)
    return path
