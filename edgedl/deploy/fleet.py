"""One bundle on several SSH devices at once: ``--ssh`` targets or a ``--devices devices.toml`` fleet.

Devices run concurrently, one thread each; on a device the steps (and each timed run) run one
after another, so measurements never overlap on one CPU. A device that cannot be reached, refuses
the key or host key, lacks a runtime or hangs is reported for that device, and the others go on.
An interrupt stops every ssh in flight, then each device's temporary folder is removed.

devices.toml::

    [[device]]
    label = "pi5-desk"            # how reports name it [default: the host]
    host = "raspberrypi.local"    # or a Host alias of your ~/.ssh/config
    user = "pi"                   # [default: the ssh config's, else your login name]
    port = 22
    python = "/home/pi/edgedl-venv/bin/python"   # [default: python3]
    tmpdir = "/tmp"               # where the temporary folder goes [default: the device's $TMPDIR or /tmp]
    timeout_s = 300               # limit for each remote step
    runs = 200                    # timed runs per measurement; warmup, threads = [1, 4], xnnpack = [true, false]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.errors import DeviceError, EdgedlError, UsageError
from ..core.files import read_json, read_toml
from .remote import (
    LIBRARY,
    Connection,
    Device,
    RemoteFolder,
    Session,
    compare_outputs,
    fetch,
    in_bundle,
    measure,
    preflight,
    read_npy,
    runtime_of,
    setup,
    step_failure,
    upload,
)

DEVICE_KEYS = {f.name: f.type for f in fields(Device)}


@dataclass
class Job:
    """What to do on every device. ``parity`` False (bench) skips the self-test and the outputs."""

    bundle: Path
    parity: bool = True
    runs: int = 200
    warmup: int = 20
    threads: list[int] | None = None  # [default: 1..cores of each device]
    xnnpack: tuple[bool, ...] = (True, False)
    samples: int = 100
    keep: bool = False
    cache: Path | None = None
    setup: bool = False  # make (or reuse) an edgedl-owned venv with the runtime on each device first


def load_devices(path: str | Path) -> list[Device]:
    """devices.toml → Devices; a wrong key or value is a one-line UsageError naming the device."""
    document = read_toml(path, "devices file")
    entries = document.get("device")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{path} names no devices: add one [[device]] table per device with at least host = \"...\"")
    devices = [_device(entry, number, path) for number, entry in enumerate(entries, 1)]
    labels = [d.label for d in devices]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UsageError(f"{path}: label {repeated[0]!r} is used by more than one device; give each a label")
    return devices


def _device(entry: dict, number: int, path) -> Device:
    where = f"{path}: device {number} ({entry.get('label') or entry.get('host') or '?'})"
    unknown = sorted(set(entry) - set(DEVICE_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(DEVICE_KEYS)}")
    if not isinstance(entry.get("host"), str) or not entry["host"]:
        raise UsageError(f"{where}: host = \"...\" is required")
    checks = {"label": str, "host": str, "user": str, "python": str, "tmpdir": str, "port": int, "runs": int,
              "warmup": int, "timeout_s": (int, float)}
    for key, kind in checks.items():
        if key in entry and (not isinstance(entry[key], kind) or isinstance(entry[key], bool)):
            raise UsageError(f"{where}: {key} must be a {getattr(kind, '__name__', 'number')}, got {entry[key]!r}")
    for key in ("port", "runs", "timeout_s"):
        if key in entry and entry[key] < 1:
            raise UsageError(f"{where}: {key} must be at least 1, got {entry[key]}")
    if "threads" in entry and (not isinstance(entry["threads"], list) or
                               not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1
                                       for t in entry["threads"]) or not entry["threads"]):
        raise UsageError(f"{where}: threads must be a list of thread counts, e.g. [1, 4]")
    if "xnnpack" in entry and (not isinstance(entry["xnnpack"], list) or not entry["xnnpack"] or
                               not all(isinstance(x, bool) for x in entry["xnnpack"])):
        raise UsageError(f"{where}: xnnpack must be [true], [false] or [true, false]")
    return Device(**({"label": entry["host"]} | entry))


class References:
    """x86 outputs of the bundle per runtime, made once, when the first device needs them."""

    def __init__(self, bundle: Path, work: Path, cache: Path | None, say):
        self.bundle, self.work, self.cache, self.say = bundle, work, cache, say
        self._lock, self._made = threading.Lock(), {}

    def get(self, runtime: str) -> np.ndarray:
        from .device_check import _host_raw, _x86_env, cache_dir

        with self._lock:
            if runtime not in self._made:
                out = self.work / f"x86_{runtime}.npy"
                env = _x86_env(self.cache or cache_dir(), runtime, self.say)
                _host_raw(self.bundle, self.work / "inputs.npy", out, env)
                self._made[runtime] = np.load(out)
            return self._made[runtime]


def remote_check(bundle: str | Path, devices: list[Device], job: Job, ssh_config: str | None = None,
                 say=print) -> dict:
    """Run ``job`` on every device concurrently; one result per device, in the order given."""
    bundle = Path(bundle)
    if not (bundle / "manifest.json").is_file() or not (bundle / "run.py").is_file():
        raise UsageError(f"{bundle} is not an edgedl bundle with run.py (make one with `edgedl bundle`)")
    if not devices:
        raise UsageError("name a device: --ssh USER@HOST[:PORT] or --devices devices.toml")
    if ssh_config and not Path(ssh_config).is_file():
        raise UsageError(f"ssh config not found: {ssh_config}")
    if "--no-xnnpack" not in (bundle / "run.py").read_text(encoding="utf-8", errors="replace"):
        raise UsageError(f"{bundle}/run.py predates `run.py --bench --json` (timing on a device); rebuild the bundle "
                         "with `edgedl bundle`")
    manifest = read_json(bundle / "manifest.json", "bundle manifest")
    report = {"bundle": str(bundle), "model": manifest.get("model", {}), "mode": "check" if job.parity else "bench",
              "devices": []}
    session = Session(ssh_config)
    with tempfile.TemporaryDirectory(prefix="edgedl-remote-") as tmp:
        work = Path(tmp)
        if job.parity:
            from .device_check import _bundle_inputs

            report["golden"], report["heldout"] = _bundle_inputs(bundle, job.samples, work / "inputs.npy")
            say(f"outputs will be compared on {report['golden']} golden vectors and {report['heldout']} held-out "
                "samples, with the same runtime on x86")
        references = References(bundle, work, job.cache, say)
        pool = ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="edgedl-device")
        futures = [pool.submit(_on_device, device, bundle, manifest, job, session, work, references, say)
                   for device in devices]
        try:
            report["devices"] = [future.result() for future in futures]
        except BaseException:
            session.cancel()  # stop every ssh in flight; each device's `finally` then removes its folder
            raise
        finally:
            pool.shutdown(wait=True)
    report["passed"] = all(d["passed"] for d in report["devices"])
    return report


def _on_device(device, bundle, manifest, job, session, work, references, say) -> dict:
    result = {"label": device.label, "target": device.target, "passed": False, "measurements": []}
    try:
        _run(device, bundle, manifest, job, session, work, references, say, result)
    except DeviceError as exc:
        result["error"] = str(exc).removeprefix(f"{device.label}: ")
        say(f"✗ {device.label}: {result['error']}")
    except EdgedlError as exc:  # the x86 reference could not be made: this device's verdict is unknown
        result["error"] = exc.one_line()
        say(f"✗ {device.label}: {result['error']}")
    return result


def _run(device, bundle, manifest, job, session, work, references, say, result) -> None:
    conn = Connection(device, session)
    if job.setup:
        device.python = setup(conn)
        conn = Connection(device, session)
        result["python"] = device.python
        say(f"{device.label}: --setup: using {device.python}")
    size_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 2**20
    found = preflight(conn, size_mb)
    runtime = runtime_of(found)
    result["device"] = found["facts"] | {
        "arch": found["arch"], "python": found["python"], "numpy": found["numpy"]["version"],
        "runtime": LIBRARY[runtime], "runtime_version": found["runtimes"][LIBRARY[runtime]]["version"],
        "tensorflow_installed": found["tensorflow_installed"]}
    result["thermal_preflight"] = found["thermal"]
    say(f"{device.label}: {facts_line(result['device'])}")
    with RemoteFolder(conn, job.keep, say) as folder:
        result["folder"] = folder
        bundle_dir = f"{folder}/{bundle.name}"
        files = {bundle.name: bundle, "_edgedl/facts.py": _file("remote_files", "facts.py")}
        if job.parity:
            files |= {"_edgedl/raw_outputs.py": _file("emulator", "raw_outputs.py"),
                      "_edgedl/inputs.npy": work / "inputs.npy"}
        upload(conn, folder, files)
        if job.parity and not _parity(conn, bundle_dir, folder, runtime, manifest, references, say, result):
            return
        _timings(conn, bundle_dir, runtime, job, found, say, result)
    result["passed"] = all("error" not in m for m in result["measurements"])


def _file(package: str, name: str) -> Path:
    return Path(str(resources.files(f"edgedl.deploy.{package}").joinpath(name)))


def _parity(conn, bundle_dir, folder, runtime, manifest, references, say, result) -> bool:
    label = conn.device.label
    done = conn.run(in_bundle(conn, bundle_dir, runtime, "run.py --self-test"), "run.py --self-test")
    output = done.stdout.decode(errors="replace").strip()
    result["self_test"] = {"passed": done.returncode == 0, "output": output}
    if done.returncode != 0:
        result["error"] = f"run.py --self-test {step_failure(conn, done)}"
        say(f"✗ {label}: {result['error']}")
        return False
    say(f"✓ {label}: run.py --self-test: {' / '.join(output.splitlines())}")
    if runtime == "tflite-runtime" and manifest.get("model", {}).get("precision") == "dynamic":
        result["outputs"] = {"passed": True, "skipped": True,
                             "detail": "tflite-runtime 2.14 cannot read dynamic-range models from TF 2.21"}
        return True
    args = "../_edgedl/raw_outputs.py . ../_edgedl/inputs.npy ../_edgedl/device.npy"
    done = conn.run(in_bundle(conn, bundle_dir, runtime, args), "the outputs on golden and held-out inputs")
    if done.returncode != 0:
        result["error"] = f"outputs on golden and held-out inputs: {step_failure(conn, done)}"
        say(f"✗ {label}: {result['error']}")
        return False
    device_raw = read_npy(fetch(conn, f"{folder}/_edgedl/device.npy", "the outputs"))
    comparison = compare_outputs(references.get(runtime), device_raw, runtime)
    result["outputs"] = comparison | {"interpreter": json.loads(done.stdout.decode().strip().splitlines()[-1])}
    agreement = f", top-1 agreement {comparison['agreement']:.2%}" if "agreement" in comparison else ""
    say(f"{'✓' if comparison['passed'] else '✗'} {label}: outputs vs x86 ({LIBRARY[runtime]} on both): "
        f"{comparison['detail']}{agreement}")
    if not comparison["passed"]:
        result["error"] = f"outputs differ from x86: {comparison['detail']}"
        return False
    return True


def _timings(conn, bundle_dir, runtime, job, found, say, result) -> None:
    device = conn.device
    cores = found["facts"]["cores"] or 1
    threads = device.threads or job.threads or list(range(1, cores + 1))
    for count in threads:
        for xnnpack in device.xnnpack or job.xnnpack:
            row = measure(conn, bundle_dir, runtime, count, xnnpack, device.runs or job.runs,
                          job.warmup if device.warmup is None else device.warmup)
            result["measurements"].append(row)
            say(f"  {device.label}: {measurement_line(row)}")


def facts_line(facts: dict) -> str:
    governor = f"governor {facts['governor']}" if facts.get("governor") else "no cpufreq governor"
    memory = f"{facts['memory_mb']:,} MB" if facts.get("memory_mb") else "memory unknown"
    return (f"{facts['model']}, {facts['arch']}, {facts['cores']} cores, {governor}, {memory}, {facts['os']}; "
            f"Python {facts['python']}, numpy {facts['numpy']}, {facts['runtime']} {facts['runtime_version']}"
            f"{', TensorFlow installed' if facts['tensorflow_installed'] else ', no TensorFlow'}")


def measurement_line(row: dict) -> str:
    where = f"{row['threads']} thread(s), XNNPACK {'on' if row['xnnpack'] else 'off'}"
    if "error" in row:
        return f"✗ {where}: {row['error']}"
    cold = f"cold start {row['cold_start_ms']:.1f} ms, " if row.get("cold_start_ms") is not None else ""
    flags = f"  ⚠ FLAGGED: {'; '.join(row['flags'])}" if row["flags"] else ""
    return (f"{where}: {cold}p50 {row['p50_us']:.1f} µs, p90 {row['p90_us']:.1f} µs, p99 {row['p99_us']:.1f} µs "
            f"over {row['runs']} runs, peak RSS {row['peak_rss_kb'] / 1024:.1f} MB{flags}")


def side_by_side(report: dict) -> list[str]:
    """A Markdown table: one row per (threads, XNNPACK), one p50 column per device; flagged cells say so."""
    devices = [d for d in report["devices"] if d["measurements"]]
    if not devices:
        return []
    keys = sorted({(m["threads"], m["xnnpack"]) for d in devices for m in d["measurements"]},
                  key=lambda k: (k[0], not k[1]))
    lines = ["| threads | XNNPACK | " + " | ".join(f"{d['label']} p50 µs (p99)" for d in devices) + " |",
             "|---|---|" + "---|" * len(devices)]
    for threads, xnnpack in keys:
        cells = []
        for d in devices:
            row = next((m for m in d["measurements"] if (m["threads"], m["xnnpack"]) == (threads, xnnpack)), None)
            if row is None:
                cells.append("–")
            elif "error" in row:
                cells.append("failed")
            else:
                cells.append(f"{row['p50_us']:.1f} ({row['p99_us']:.1f}){' ⚠ flagged' if row['flags'] else ''}")
        lines.append(f"| {threads} | {'on' if xnnpack else 'off'} | " + " | ".join(cells) + " |")
    return lines


def summary_lines(report: dict) -> list[str]:
    lines = []
    for d in report["devices"]:
        if "error" in d:
            lines.append(f"✗ {d['label']} ({d['target']}): {d['error']}")
            continue
        flagged = sum(1 for m in d["measurements"] if m.get("flags"))
        note = f"; {flagged} measurement(s) flagged (throttling/frequency), kept apart" if flagged else ""
        lines.append(f"{'✓' if d['passed'] else '✗'} {d['label']} ({d['target']}): "
                     f"{len(d['measurements'])} measurement(s){note}")
    return lines


def artifact_bundle(artifact: str | Path, folder: Path) -> Path:
    """A .tflite file laid out as the smallest bundle run.py can time: model, manifest, inputs to time."""
    from ..core.files import sha256_file
    from ..runners.describe import describe

    artifact = Path(artifact)
    if artifact.suffix != ".tflite":
        raise UsageError(f"{artifact}: --ssh times .tflite files and bundles (got {artifact.suffix or 'no suffix'})")
    tensors = describe(artifact)  # a user's file: loaded in a bounded child first
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact, folder / artifact.name)
    shutil.copyfile(_file("bundle_files", "run.py"), folder / "run.py")
    rng = np.random.default_rng(0)
    inputs = {f"input_{i}": rng.random([1, *[d if d and d > 0 else 1 for d in spec["shape"][1:]]]).astype(np.float32)
              for i, spec in enumerate(tensors["inputs"])}
    np.savez(folder / "bench_inputs.npz", **inputs)
    (folder / "manifest.json").write_text(json.dumps({
        "model": {"file": artifact.name, "sha256": sha256_file(artifact)}, "inputs": tensors["inputs"],
        "outputs": tensors["outputs"], "runtime": {"reset_variables_before_invoke": tensors.get("stateful", False)},
        "labels": [], "golden": {"file": "bench_inputs.npz", "atol": 0.0, "tolerance_steps": None}}))
    return folder
