"""Bundles checked and timed on devices over real SSH: an OpenSSH server on a loopback port.

Device (a) is this machine through a login whose Python has only numpy and ai-edge-litert (no
TensorFlow). Faults: unreachable port, wrong key, changed and unknown host keys, a device that
hangs past the time limit, a device without numpy, an interrupt, and a bundle whose name has
spaces and quotes. After each, nothing of edgedl's is left in the device's temporary folder.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import sshd_harness
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.skipif(not sshd_harness.available(), reason="needs openssh-server (/usr/sbin/sshd) and ssh")

ODD_NAME = "my \"odd\" bundle's $HOME `x`"  # spaces, both quotes, and what a shell would expand


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = sshd_harness.Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def device_python(tmp_path_factory):
    return sshd_harness.runtime_only_python(tmp_path_factory.mktemp("device-venv"))


@pytest.fixture(scope="module")
def odd_bundle(tmp_path_factory):
    """A real int8 model laid out as a bundle (golden vectors from LiteRT here), under an awkward name."""
    from edgedl.deploy.device_check import _selfcheck_bundle

    folder = _selfcheck_bundle(tmp_path_factory.mktemp("bundles") / ODD_NAME)
    inputs = np.load(folder / "inputs.npy")[:4]
    (folder / "inputs.npy").unlink()
    sys.path.insert(0, str(folder))
    try:
        import run
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("run", None)
    model = run.Model(folder)
    raw = np.stack([model.raw([x])[0][0] for x in inputs])
    np.savez(folder / "golden.npz", input_0=inputs, raw_0=raw)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["golden"] = {"file": "golden.npz", "count": len(inputs), "tolerance_steps": {"ai-edge-litert": 1},
                          "atol": 1e-5}
    manifest["model"]["precision"] = "int8"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "parity.json").write_text(json.dumps({"model": ""}))
    return folder


def _tmpdir(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    return folder


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_parse_target_and_devices_file(tmp_path):
    from edgedl.core.errors import UsageError
    from edgedl.deploy.fleet import load_devices
    from edgedl.deploy.remote import parse_target

    device = parse_target("pi@raspberrypi.local:2222")
    assert (device.user, device.host, device.port, device.label) == ("pi", "raspberrypi.local", 2222, "raspberrypi.local")
    assert parse_target("[::1]:22").host == "::1"
    for bad in ("pi@-oProxyCommand=x", "pi@host:99999", "a b@host", "pi@host;rm"):
        with pytest.raises(UsageError):
            parse_target(bad)
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nhost = "a"\nthreads = [1, 4]\n[[device]]\nhost = "b"\nlabel = "bee"\nport = 2\n')
    a, b = load_devices(path)
    assert (a.label, a.threads, b.label, b.port) == ("a", [1, 4], "bee", 2)
    for text, message in (('[[device]]\nhost = "a"\ncolour = 1\n', "unknown key 'colour'"),
                          ('[[device]]\nuser = "pi"\n', "host"),
                          ('[[device]]\nhost = "a"\nport = "22"\n', "port must be"),
                          ('[[device]]\nhost = "a"\n[[device]]\nhost = "a"\n', "more than one device"),
                          ("x = 1\n", "names no devices")):
        path.write_text(text)
        with pytest.raises(UsageError, match=message):
            load_devices(path)


def test_remote_options_refuse_local_only_settings(tmp_path, capsys):
    code, out, err = run_cli(["bench", tmp_path, "--ssh", "pi@host", "--batch", "8"], capsys)
    assert code == 2 and "--batch, --pin-cpu and --backend apply to a local benchmark" in err
    code, out, err = run_cli(["device-check", tmp_path, "--ssh", "pi@host", "--profile", "rpi4"], capsys)
    assert code == 2 and "--profile and --runtime choose emulated devices" in err
    code, out, err = run_cli(["device-check", tmp_path, "--ssh", "pi@host;reboot"], capsys)
    assert code == 2 and "--ssh expects USER@HOST[:PORT]" in err and "Traceback" not in err


def test_throttle_flags():
    from edgedl.deploy.remote import throttle_flags

    calm = {"freq_khz": {"cpu0": 1800000}, "max_freq_khz": {"cpu0": 1800000}, "throttled": "0x0"}
    assert throttle_flags(calm, calm) == []
    hot = {"freq_khz": {"cpu0": 1500000}, "max_freq_khz": {"cpu0": 1800000}, "throttled": "0x20004"}
    flags = throttle_flags(calm, hot)
    assert any("throttled after" in f for f in flags) and any("during the run" in f for f in flags)
    assert any("1800 → 1500 MHz" in f for f in flags)


def test_device_check_over_ssh(sshd, device_python, odd_bundle, tmp_path, capsys):
    """Device (a): self-test, outputs vs x86, timings and facts, with no TensorFlow on the device."""
    tmp = _tmpdir(tmp_path, "device tmp 'a'")
    report_path = tmp_path / "report.json"
    code, out, err = run_cli(["device-check", odd_bundle, "--ssh", "good", "--ssh-config", sshd.config,
                              "--python", device_python, "--tmpdir", tmp, "--threads", "1", "--runs", "20",
                              "--warmup", "2", "--json", report_path], capsys)
    assert code == 0, out + err
    assert "bit-identical" in out and "no TensorFlow" in out and "golden vectors" in out
    assert "XNNPACK on" in out and "XNNPACK off" in out and "| threads | XNNPACK | good p50" in out
    report = json.loads(report_path.read_text())
    (device,) = report["devices"]
    assert device["passed"] and device["outputs"]["detail"] == "bit-identical"
    assert device["device"]["tensorflow_installed"] is False and device["device"]["runtime"] == "ai-edge-litert"
    assert device["device"]["cores"] == os.cpu_count() and device["device"]["arch"] == os.uname().machine
    for row in device["measurements"]:
        assert row["cold_start_ms"] > 0 and 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"]
        assert row["peak_rss_kb"] > 0 and row["library"] == "ai-edge-litert" and "flags" in row
    assert {row["xnnpack"] for row in device["measurements"]} == {True, False}
    assert _left(tmp) == []  # the temporary folder is gone


def test_keep_leaves_the_folder(sshd, device_python, odd_bundle, tmp_path, capsys):
    tmp = _tmpdir(tmp_path, "keep")
    code, out, err = run_cli(["bench", odd_bundle, "--ssh", "good", "--ssh-config", sshd.config, "--python",
                              device_python, "--tmpdir", tmp, "--threads", "1", "--runs", "5", "--no-xnnpack",
                              "--keep"], capsys)
    assert code == 0, out + err
    (kept,) = tmp.iterdir()
    assert kept.name.startswith("edgedl.") and (kept / ODD_NAME / "run.py").is_file()
    assert f"kept {kept}" in out and "XNNPACK off" in out and "XNNPACK on" not in out


def test_bench_tflite_file_over_ssh(sshd, device_python, tmp_path, capsys):
    model = ROOT / "edgedl" / "deploy" / "emulator" / "selfcheck_int8.tflite"
    tmp = _tmpdir(tmp_path, "bench")
    code, out, err = run_cli(["bench", model, "--ssh", "good", "--ssh-config", sshd.config, "--python",
                              device_python, "--tmpdir", tmp, "--threads", "1", "--runs", "5"], capsys)
    assert code == 0, out + err
    assert "1 thread(s), XNNPACK on: cold start" in out and _left(tmp) == []


def test_fleet_faults_are_per_device(sshd, device_python, odd_bundle, tmp_path, capsys):
    """Each broken device gets its own clear error; the good one finishes; nothing is left anywhere."""
    hang_marker = tmp_path / "hang-started"
    hang = sshd_harness.hanging_python(tmp_path / "hang-python", device_python, hang_marker)
    bare = sshd_harness.bare_python(tmp_path / "bare-venv")
    dirs = {name: _tmpdir(tmp_path, name) for name in ("good", "hang", "bare")}
    closed = sshd_harness.free_port()
    devices = tmp_path / "devices.toml"
    devices.write_text(f"""
[[device]]
host = "good"
python = "{device_python}"
tmpdir = "{dirs['good']}"
threads = [1]
xnnpack = [true]
runs = 10
[[device]]
host = "wrongkey"
[[device]]
host = "changedkey"
[[device]]
host = "unknownkey"
[[device]]
label = "closed-port"
host = "127.0.0.1"
port = {closed}
[[device]]
label = "hangs"
host = "good"
python = "{hang}"
tmpdir = "{dirs['hang']}"
timeout_s = 3
[[device]]
label = "no-numpy"
host = "good"
python = "{bare}"
tmpdir = "{dirs['bare']}"
""")
    report_path = tmp_path / "fleet.json"
    code, out, err = run_cli(["device-check", odd_bundle, "--devices", devices, "--ssh-config", sshd.config,
                              "--json", report_path], capsys)
    assert code == 1 and "6 of 7 device(s) failed" in err, out + err
    assert "Traceback" not in out + err
    by_label = {d["label"]: d for d in json.loads(report_path.read_text())["devices"]}
    assert by_label["good"]["passed"] and by_label["good"]["measurements"][0]["p50_us"] > 0
    errors = {label: d.get("error", "") for label, d in by_label.items()}
    assert "refused your SSH key" in errors["wrongkey"] and "ssh-copy-id" in errors["wrongkey"]
    real_key = subprocess.run(["ssh-keygen", "-lf", str(sshd.root / "host_key.pub")], capture_output=True,
                              text=True, check=True).stdout.split()[1]  # the server's own fingerprint
    assert "CHANGED" in errors["changedkey"] and real_key in errors["changedkey"]
    assert f"-R '[127.0.0.1]:{sshd.port}'" in errors["changedkey"]
    assert "not in your known_hosts" in errors["unknownkey"] and real_key in errors["unknownkey"]
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {sshd.root / 'known_hosts_empty'}" in errors["unknownkey"]
    assert "cannot reach" in errors["closed-port"] and "connection refused" in errors["closed-port"]
    assert "timed out" in errors["hangs"] and "self-test" in errors["hangs"] and hang_marker.exists()
    assert "numpy does not import" in errors["no-numpy"] and "pip install ai-edge-litert numpy" in errors["no-numpy"]
    assert all(_left(folder) == [] for folder in dirs.values()), {k: _left(v) for k, v in dirs.items()}
    # the host keys were only read: nothing was added to or removed from the test's known_hosts
    assert (sshd.root / "known_hosts_empty").read_text() == ""


def test_interrupt_removes_the_folder(sshd, device_python, odd_bundle, tmp_path):
    """SIGTERM while the device runs the bundle: exit 130, and the device's folder is removed."""
    marker = tmp_path / "started"
    hang = sshd_harness.hanging_python(tmp_path / "hang-python", device_python, marker)
    tmp = _tmpdir(tmp_path, "interrupted")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edgedl", "device-check", str(odd_bundle), "--ssh", "good",
                             "--ssh-config", str(sshd.config), "--python", str(hang), "--tmpdir", str(tmp),
                             "--timeout", "20"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the event (the device started run.py), bounded
    assert marker.exists() and len(_left(tmp)) == 1, proc.communicate(timeout=60)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and _left(tmp) == []


def test_killed_mid_copy_leaves_nothing(sshd, device_python, odd_bundle, tmp_path):
    """SIGTERM while the bundle is on its way (a slow link): exit 130, and the device's folder is removed."""
    bundle = tmp_path / odd_bundle.name
    shutil.copytree(odd_bundle, bundle)
    (bundle / "padding.bin").write_bytes(np.random.default_rng(0).bytes(3_000_000))  # ~7 s over the slow link
    tmp = _tmpdir(tmp_path, "mid-copy")
    sshd.slow_marker.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edgedl", "device-check", str(bundle), "--ssh", "slowlink",
                             "--ssh-config", str(sshd.config), "--python", str(device_python), "--tmpdir", str(tmp)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not sshd.slow_marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the event (200 kB of the copy went up), bounded
    assert sshd.slow_marker.exists() and len(_left(tmp)) == 1, proc.communicate(timeout=60)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and "interrupted" in err, out + err
    assert "self-test" not in out  # it was stopped during the copy, before anything ran
    assert _left(tmp) == []


def test_full_disk_is_refused_before_copying(sshd, device_python, odd_bundle, tmp_path, capsys):
    """A device whose temporary folder sits on a 1 MB filesystem: stopped at the preflight, nothing written."""
    tiny = _tmpdir(tmp_path, "tiny")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        code, out, err = run_cli(["device-check", odd_bundle, "--ssh", "good", "--ssh-config", sshd.config,
                                  "--python", device_python, "--tmpdir", tiny], capsys)
        assert code == 1 and "free in" in err and "MB needed" in err, out + err
        assert _left(tiny) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=True)


@pytest.mark.slow
def test_pipeline_devices_step_and_report(sshd, device_python, odd_bundle, tmp_path):
    """A recipe's [devices]: the shipped bundle checked and each TFLite artifact timed per device; the report's
    table names every device (a column each), its facts, and a latency plot by device and artifact."""
    from edgedl.bench.render import pyplot
    from edgedl.pipeline.devices import failures, figure, run_devices, section
    from edgedl.recipe import load_recipe

    other = tmp_path / "other_int8.tflite"
    shutil.copyfile(ROOT / "edgedl" / "deploy" / "emulator" / "selfcheck_int8.tflite", other)
    dirs = {name: _tmpdir(tmp_path, name) for name in ("one", "two")}
    (tmp_path / "devices.toml").write_text("".join(f"""
[[device]]
label = "{name}"
host = "good"
python = "{device_python}"
tmpdir = "{folder}"
""" for name, folder in dirs.items()) + '[[device]]\nlabel = "offline"\nhost = "wrongkey"\n')
    (tmp_path / "recipe.toml").write_text('[model]\narchitecture = "mlp"\n[devices]\nfile = "devices.toml"\n'
                                          'ssh_config = "' + str(sshd.config) + '"\nruns = 10\nwarmup = 1\n')
    settings = load_recipe(tmp_path / "recipe.toml").devices
    assert settings["file"] == tmp_path / "devices.toml" and settings["threads"] == [1]
    shipped = next(p.name for p in odd_bundle.glob("*.tflite"))
    lines = []
    summary = run_devices(settings, odd_bundle, shipped, [odd_bundle / shipped, other], tmp_path / "devices.json",
                          lines.append)
    result = json.loads((tmp_path / "devices.json").read_text())
    assert summary == {"devices": 3, "passed": False} and set(result["timed"]) == {shipped, other.name}
    assert [line for line in failures(result) if "offline" in line and "refused your SSH key" in line]
    table = section(result)
    assert "| artifact | one | two | offline |" in table and f"| {shipped} ★ |" in table
    assert "x86_64" in table and "outputs vs x86: bit-identical" in table and "refused your SSH key" in table
    fig = figure(pyplot(), {"tiny": result})
    assert fig is not None and len(fig.axes[0].patches) == 4  # 2 artifacts × 2 reachable devices
    assert all(_left(folder) == [] for folder in dirs.values())


@pytest.mark.slow
def test_pipeline_with_devices_end_to_end(sshd, device_python, tmp_path, capsys):
    """edgedl pipeline on a recipe with [devices]: the report's "On your devices" section and plot."""
    tmp = _tmpdir(tmp_path, "device-tmp")
    (tmp_path / "devices.toml").write_text(f'[[device]]\nlabel = "loopback"\nhost = "good"\n'
                                           f'python = "{device_python}"\ntmpdir = "{tmp}"\n')
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[model]\narchitecture = "mlp"\n[data]\nsource = "digits8x8"\n[train]\nepochs = 2\n'
                      '[export]\ntargets = ["tflite:fp32", "tflite:fp16"]\n'
                      '[gates]\nmin_agreement = 0.5\nmax_accuracy_drop = 0.5\n'
                      f'[devices]\nfile = "devices.toml"\nssh_config = "{sshd.config}"\nruns = 10\nwarmup = 1\n')
    out = tmp_path / "p"
    args = ["pipeline", recipe, "--bench-time", "0.05", "--no-layers", "--no-rescue", "--out", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, stdout[-3000:] + err[-2000:]
    report = (out / "report.md").read_text()
    assert "### On your devices" in report and "| artifact | loopback |" in report
    assert "outputs vs x86: bit-identical" in report and (out / "plots" / "devices.png").is_file()
    result = json.loads((out / "tiny" / "devices.json").read_text())
    assert set(result["timed"]) == {"tiny_fp32.tflite", "tiny_fp16.tflite"} and _left(tmp) == []
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "devices   unchanged, skipped" in stdout  # cached like every step


def _pypi_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_setup_installs_the_runtime_in_its_own_venv(sshd, odd_bundle, tmp_path, capsys):
    """--setup on a device whose Python has no numpy: a venv of edgedl's own, the runtime pip installed, then the check."""
    if not _pypi_reachable():
        pytest.skip("--setup installs from PyPI on the device; pypi.org is not reachable from here")
    bare = sshd_harness.bare_python(tmp_path / "bare-venv")
    tmp = _tmpdir(tmp_path, "setup")
    code, out, err = run_cli(["device-check", odd_bundle, "--ssh", "ownhome", "--ssh-config", sshd.config,
                              "--python", bare, "--tmpdir", tmp, "--setup", "--threads", "1", "--xnnpack", "on",
                              "--runs", "5"], capsys)
    assert code == 0, out + err
    venv_python = sshd.device_cache / "edgedl" / "device-venv" / "bin" / "python"
    assert f"--setup: using {venv_python}" in out and "bit-identical" in out and _left(tmp) == []


_CAN_EMULATE = shutil.which("qemu-aarch64-static") is not None or os.geteuid() == 0


@pytest.mark.emulated
@pytest.mark.slow
@pytest.mark.skipif(not _CAN_EMULATE, reason="needs qemu-user-static, or root to install it")
def test_fleet_of_two_cpus(sshd, device_python, odd_bundle, tmp_path, capsys):
    """Device (b): the emulated Raspberry Pi 4 userland (aarch64, Cortex-A72), reached through the same sshd,
    beside device (a): one run, parity and latency and facts side by side."""
    from edgedl.deploy.device_check import _script, cache_dir, setup

    cache = cache_dir()
    setup("rpi4", cache, say=lambda m: None)  # cached after the first time
    emulated = f"bash {shlex.quote(str(_script('run_emulated.sh')))} {shlex.quote(str(cache))} rpi4 litert"
    devices = tmp_path / "devices.toml"
    dirs = {name: _tmpdir(tmp_path, name) for name in ("x86", "pi")}
    devices.write_text(f"""
[[device]]
label = "x86-loopback"
host = "good"
python = "{device_python}"
tmpdir = "{dirs['x86']}"
threads = [1]
runs = 20
[[device]]
label = "rpi4-emulated"
host = "good"
python = {json.dumps(emulated)}
tmpdir = "{dirs['pi']}"
threads = [1]
xnnpack = [true]
runs = 10
""")
    report_path = tmp_path / "fleet.json"
    code, out, err = run_cli(["device-check", odd_bundle, "--devices", devices, "--ssh-config", sshd.config,
                              "--warmup", "2", "--json", report_path], capsys)
    assert code == 0, out + err
    assert "| threads | XNNPACK | x86-loopback p50 µs (p99) | rpi4-emulated p50 µs (p99) |" in out
    by_label = {d["label"]: d for d in json.loads(report_path.read_text())["devices"]}
    assert by_label["x86-loopback"]["device"]["arch"] == os.uname().machine
    pi = by_label["rpi4-emulated"]
    assert pi["device"]["arch"] == "aarch64" and pi["device"]["model"].startswith("Raspberry Pi 4")
    assert pi["outputs"]["passed"] and pi["outputs"]["max_steps"] <= 1  # ARM int8 kernels: at most 1 step
    assert pi["measurements"][0]["p50_us"] > 0 and pi["measurements"][0]["cold_start_ms"] > 0
    assert all(_left(folder) == [] for folder in dirs.values())
