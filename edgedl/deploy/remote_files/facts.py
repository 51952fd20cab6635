"""Runs on the device, with only the Python standard library: preflight checks and device facts.

    python3 - preflight TMPDIR < facts.py    JSON: Python, numpy, runtimes, arch, free disk, facts
    python3 facts.py thermal                 JSON: temperatures, CPU frequencies, throttling now

It reads files under /proc and /sys and may run ``vcgencmd get_throttled`` (Raspberry Pi); it
writes nothing. Kept compatible with Python 3.7 (older device images).
"""

import glob
import json
import os
import platform
import shutil
import subprocess
import sys


def _read(path, default=None):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return default


def _number(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def thermal():
    """Temperatures (°C), per-CPU frequency (kHz) and frequency cap, and the Pi's throttle flags."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        value = _number(_read(zone + "/temp"))
        if value is not None:
            temps[_read(zone + "/type", os.path.basename(zone))] = value / 1000.0
    freqs, caps = {}, {}
    for cpu in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq")):
        name = cpu.split("/")[-2]
        freqs[name] = _number(_read(cpu + "/scaling_cur_freq"))
        caps[name] = _number(_read(cpu + "/scaling_max_freq"))
    throttled = None
    if shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True, timeout=10).stdout
            throttled = out.strip().split("=")[-1] or None
        except (OSError, subprocess.SubprocessError):
            throttled = None
    return {"kind": "thermal", "temperature_c": temps, "freq_khz": freqs, "max_freq_khz": caps,
            "throttled": throttled}


def _model():
    model = _read("/proc/device-tree/model")
    if model:
        return model.rstrip("\x00")
    fields = {}
    for line in (_read("/proc/cpuinfo", "") or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("Model") or fields.get("model name") or fields.get("Hardware") or platform.processor() or "unknown"


def _os_name():
    for line in (_read("/etc/os-release", "") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system() + " " + platform.release()


def _memory_mb():
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def _version(module):
    try:
        from importlib import metadata
    except ImportError:
        return "unknown"
    names = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "numpy": "numpy"}
    try:
        return metadata.version(names[module])
    except metadata.PackageNotFoundError:
        return "unknown"


def _imports(module):
    """The installed version when ``module`` imports here, else the one-line reason it does not."""
    try:
        __import__(module if module == "numpy" else module + ".interpreter")
    except Exception as exc:  # ImportError, or a broken wheel (numpy ABI) that raises something else
        return {"ok": False, "error": (type(exc).__name__ + ": " + " ".join(str(exc).split()))[:200]}
    return {"ok": True, "version": _version(module)}


def preflight(tmpdir):
    import importlib.util

    governors = sorted({_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")}
                       - {None})
    try:
        stat = os.statvfs(tmpdir)
        free_mb = stat.f_bavail * stat.f_frsize // 2**20
    except OSError:
        free_mb = None
    return {
        "kind": "preflight", "python": platform.python_version(), "executable": sys.executable,
        "arch": platform.machine(), "numpy": _imports("numpy"),
        "runtimes": {"ai-edge-litert": _imports("ai_edge_litert"), "tflite-runtime": _imports("tflite_runtime")},
        "tensorflow_installed": importlib.util.find_spec("tensorflow") is not None,
        "tools": {name: shutil.which(name) is not None for name in ("tar", "mktemp", "timeout", "rm", "date")},
        "tmpdir": tmpdir, "tmpdir_exists": os.path.isdir(tmpdir), "free_mb": free_mb,
        "facts": {"model": _model(), "cores": os.cpu_count(), "governor": ",".join(governors) or None,
                  "memory_mb": _memory_mb(), "os": _os_name(), "kernel": platform.release()},
        "thermal": thermal(),
    }


def main(argv):
    mode = argv[0] if argv else "thermal"
    print(json.dumps(preflight(argv[1] if len(argv) > 1 else "/tmp") if mode == "preflight" else thermal()))


if __name__ == "__main__":
    main(sys.argv[1:])
