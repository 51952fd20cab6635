"""``edgedl device-check``: run a bundle on an emulated Raspberry Pi (aarch64 under qemu-user).

ARM CPUs run other kernels (XNNPACK, ruy) than the x86 machine that validated the export. This
check runs the bundle's own ``run.py --self-test`` and its outputs on the golden vectors and
held-out samples inside an emulated Raspberry Pi OS 64-bit userland, under ai-edge-litert
(numpy 2) and tflite-runtime 2.14 (numpy < 2), and compares them with x86.

Two traps are handled (docs/DEPLOY.md): the emulated CPU is always pinned to the device's chip
with a matching fake /proc/cpuinfo (qemu's default CPU silently gives wrong int8 results), and a
known int8 model must give identical outputs on x86 and the emulated profile before any verdict
on the bundle is trusted. It proves ARM kernels and numerics; it does not prove device timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.errors import DataError, EdgedlError, UsageError
from ..core.files import read_json, sha256_file, temp_dir
from ..core.layout import HELDOUT_FILE, resolve_from

PROFILES = {"rpi4": "Raspberry Pi 4 (Cortex-A72)", "rpi5": "Raspberry Pi 5 (Cortex-A76)"}
RUNTIMES = ("litert", "tflite-runtime")
LIBRARY = {"litert": "ai-edge-litert 2.3.0, numpy 2", "tflite-runtime": "tflite-runtime 2.14.0, numpy<2"}
# Each runtime is compared with the same runtime on x86. Most int8 outputs match bit for bit, but
# ai-edge-litert 2.3 on aarch64 was measured 1 step off in 1 of 1,080 values (seed MLP) and 1 of
# 480 (a test LSTM) on 2026-11-27. One step passes; every difference is reported, never hidden.
INT8_STEPS = {"litert": 1, "tflite-runtime": 1}
FLOAT_ATOL = 1e-5


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEDL_CACHE", Path.home() / ".cache" / "edgedl")) / "rpi-emulated"


def _script(name: str) -> Path:
    return Path(str(resources.files("edgedl.deploy.emulator").joinpath(name)))


def setup(profile: str, cache: Path, say) -> float:
    """Build (or reuse) the emulated userland for ``profile``; return the seconds it took."""
    started = time.perf_counter()
    say(f"preparing the emulated {PROFILES[profile]} userland in {cache} (first time: a few minutes) …")
    done = subprocess.run(["bash", str(_script("setup_rpi_userland.sh")), str(cache), profile],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()[-1:]
        raise EdgedlError(f"could not set up the emulated {profile}: {lines[-1] if lines else 'unknown error'}")
    return time.perf_counter() - started


def _emulated(cache: Path, profile: str, runtime: str, args: list[str], timeout: int = 900):
    env = dict(os.environ, EDGEDL_INTERPRETER="ai-edge-litert" if runtime == "litert" else "tflite-runtime")
    return subprocess.run(["bash", str(_script("run_emulated.sh")), str(cache), profile, runtime, *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _failure(done) -> str:
    if done.returncode in (-signal.SIGSEGV, 139):
        return "crashed with a segmentation fault"
    if done.returncode in (-signal.SIGILL, 132):
        return "died on an illegal instruction (CPU model and cpuinfo disagree?)"
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"exit {done.returncode}: {tail[0][:200]}"


X86_TFLITE_RUNTIME = ["tflite-runtime==2.14.0", "numpy<2"]


def _x86_env(cache: Path, runtime: str, say) -> dict:
    """Environment for the x86 reference of ``runtime``: the same interpreter version as on the device.

    ai-edge-litert is edgedl's own dependency; tflite-runtime 2.14 needs numpy < 2, so it gets a
    site folder of its own, placed before the virtual environment's packages.
    """
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    if runtime == "litert":
        return env | {"EDGEDL_INTERPRETER": "ai-edge-litert"}
    site = cache / "x86-site-tflite-runtime"
    if not (site / ".ready").exists():
        say("installing tflite-runtime 2.14 + numpy<2 for the x86 reference …")
        shutil.rmtree(site, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:", "--target",
                               str(site), *X86_TFLITE_RUNTIME], capture_output=True, text=True)
        if done.returncode != 0:
            raise EdgedlError(f"could not install {' '.join(X86_TFLITE_RUNTIME)} for the x86 reference: "
                              f"{done.stderr.strip().splitlines()[-1:]}")
        (site / ".ready").write_text("ok\n")
    return env | {"PYTHONPATH": str(site), "EDGEDL_INTERPRETER": "tflite-runtime"}


def _host_raw(bundle: Path, inputs: Path, out: Path, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, str(_script("raw_outputs.py")), str(bundle), str(inputs), str(out)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise EdgedlError(f"x86 reference run of {bundle} failed: {_failure(done)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(host: np.ndarray, device: np.ndarray, runtime: str) -> dict:
    if host.shape != device.shape:
        return {"passed": False, "detail": f"output shape {device.shape} differs from x86 {host.shape}"}
    top_host, top_device = host.reshape(len(host), -1, host.shape[-1]), device.reshape(len(device), -1, host.shape[-1])
    agreement = float(np.mean(top_host.argmax(-1) == top_device.argmax(-1)))
    if host.dtype.kind in "iu":
        steps = np.abs(host.astype(np.int32) - device.astype(np.int32))
        identical = int(np.count_nonzero(steps == 0))
        passed = int(steps.max()) <= INT8_STEPS[runtime]
        detail = ("bit-identical" if identical == steps.size else
                  f"{steps.size - identical} of {steps.size} values differ, by at most {int(steps.max())} step(s)")
        return {"passed": passed, "detail": detail, "max_steps": int(steps.max()), "agreement": agreement,
                "identical_values": identical, "values": int(steps.size)}
    diff = float(np.max(np.abs(host.astype(np.float64) - device)))
    return {"passed": diff <= FLOAT_ATOL, "detail": "bit-identical" if diff == 0 else f"max |Δ| {diff:.2e}",
            "max_abs": diff, "agreement": agreement}


def _selfcheck_bundle(folder: Path) -> Path:
    """A known int8 model laid out as a minimal bundle, to prove the emulator before the verdicts."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_script("selfcheck_int8.tflite"), folder / "model.tflite")
    shutil.copyfile(Path(str(resources.files("edgedl.deploy.bundle_files").joinpath("run.py"))), folder / "run.py")
    from ..runners.describe import describe

    tensors = describe(folder / "model.tflite", isolate=False)  # edgedl's own file: its I/O as run.py matches it
    (folder / "manifest.json").write_text(json.dumps({
        "model": {"file": "model.tflite", "sha256": sha256_file(folder / "model.tflite")},
        "inputs": tensors["inputs"], "outputs": tensors["outputs"],
        "runtime": {"reset_variables_before_invoke": False}, "labels": []}))
    inputs = np.random.default_rng(7).random((16, 12, 12, 1)).astype(np.float32)
    np.save(folder / "inputs.npy", inputs)
    return folder


def _bundle_inputs(bundle: Path, samples: int, out: Path) -> tuple[int, int]:
    """Golden vectors plus up to ``samples`` held-out samples (from the run the bundle was validated on)."""
    from ..data import read_npz

    golden = read_npz(bundle / "golden.npz", "golden vectors", keys=["input_0"]).get("input_0")
    if golden is None or not len(golden):
        raise DataError(f"{bundle / 'golden.npz'} holds no golden inputs; rebuild the bundle with `edgedl bundle`")
    extra = np.zeros((0, *golden.shape[1:]), golden.dtype)
    parity = read_json(bundle / "parity.json", "parity report")
    heldout = resolve_from(str(parity.get("model") or ""), bundle).parent / HELDOUT_FILE
    if samples and heldout.is_file():
        held = read_npz(heldout, "held-out data", keys=["x"], count=samples).get("x")
        if held is not None and held[0].size == golden[0].size:
            extra = held.reshape((-1, *golden.shape[1:])).astype(golden.dtype)
    np.save(out, np.concatenate([golden, extra]))
    return len(golden), len(extra)


def device_check(bundle: str | Path, profiles=("rpi4", "rpi5"), runtimes=RUNTIMES, samples: int = 100,
                 cache: str | Path | None = None, say=print) -> dict:
    bundle = Path(bundle)
    if not (bundle / "manifest.json").exists() or not (bundle / "run.py").exists():
        raise UsageError(f"{bundle} is not an edgedl bundle with run.py (make one with `edgedl bundle`)")
    for name in profiles:
        if name not in PROFILES:
            raise UsageError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    for name in runtimes:
        if name not in RUNTIMES:
            raise UsageError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    cache = Path(cache) if cache else cache_dir()
    manifest = read_json(bundle / "manifest.json", "bundle manifest")
    report = {"bundle": str(bundle), "model": manifest["model"], "checks": [], "setup_s": {}}
    with temp_dir("device") as tmp:
        work = Path(tmp)
        selfcheck = _selfcheck_bundle(work / "selfcheck")
        golden_count, heldout_count = _bundle_inputs(bundle, samples, work / "inputs.npy")
        report.update(golden=golden_count, heldout=heldout_count)
        for profile in profiles:
            report["setup_s"][profile] = round(setup(profile, cache, say), 1)
        references = {runtime: _references(bundle, manifest, runtime, cache, work, selfcheck, say)
                      for runtime in runtimes}
        for profile in profiles:
            for runtime in runtimes:
                check = _check_one(bundle, manifest, profile, runtime, cache, work, selfcheck, references[runtime])
                report["checks"].append(check)
                say(_line(check))
    report["passed"] = all(c["passed"] for c in report["checks"])
    return report


def _references(bundle, manifest, runtime, cache, work, selfcheck, say) -> dict | None:
    """x86 outputs of the known model and of the bundle, with the same interpreter as on the device."""
    if runtime == "tflite-runtime" and manifest["model"].get("precision") == "dynamic":
        return None
    env = _x86_env(cache, runtime, say)
    _host_raw(selfcheck, selfcheck / "inputs.npy", work / f"selfcheck_x86_{runtime}.npy", env)
    _host_raw(bundle, work / "inputs.npy", work / f"x86_{runtime}.npy", env)
    return {"selfcheck": np.load(work / f"selfcheck_x86_{runtime}.npy"), "bundle": np.load(work / f"x86_{runtime}.npy")}


def _check_one(bundle, manifest, profile, runtime, cache, work, selfcheck, reference) -> dict:
    check = {"profile": profile, "runtime": runtime, "library": LIBRARY[runtime], "passed": False}
    if runtime == "tflite-runtime" and manifest["model"].get("precision") == "dynamic":
        check.update(passed=True, skipped=True,
                     detail="tflite-runtime 2.14 cannot read dynamic-range models from TF 2.21 (known; use ai-edge-litert)")
        return check
    # 1. the emulator itself: a known int8 model must match x86 exactly, or nothing below is trusted
    out = work / f"selfcheck_{profile}_{runtime}.npy"
    done = _emulated(cache, profile, runtime, [str(_script("raw_outputs.py")), str(selfcheck),
                                              str(selfcheck / "inputs.npy"), str(out)])
    if done.returncode != 0:
        return check | {"step": "emulator self-check", "detail": _failure(done)}
    emulator = _compare(reference["selfcheck"], np.load(out), runtime)
    check["emulator_selfcheck"] = emulator
    if not emulator["passed"]:
        return check | {"step": "emulator self-check",
                        "detail": f"the known int8 model differs from x86 ({emulator['detail']}): emulator mis-set"}
    # 2. the bundle's own self-test (sha256 + golden vectors), as on a real device
    done = _emulated(cache, profile, runtime, [str(bundle / "run.py"), "--self-test"])
    check["self_test_output"] = done.stdout.strip()
    if done.returncode != 0:
        return check | {"step": "run.py --self-test", "detail": _failure(done)}
    # 3. outputs on golden + held-out samples against x86
    out = work / f"bundle_{profile}_{runtime}.npy"
    done = _emulated(cache, profile, runtime, [str(_script("raw_outputs.py")), str(bundle),
                                              str(work / "inputs.npy"), str(out)])
    if done.returncode != 0:
        return check | {"step": "held-out outputs", "detail": _failure(done)}
    check["interpreter"] = json.loads(done.stdout.strip().splitlines()[-1])["library"]
    comparison = _compare(reference["bundle"], np.load(out), runtime)
    return check | comparison | {"step": "done"}


def _line(check: dict) -> str:
    mark = "✓" if check["passed"] else "✗"
    where = f"{check['profile']} / {check['library']}"
    if check.get("skipped"):
        return f"- {where}: skipped: {check['detail']}"
    if check.get("step") != "done":
        return f"{mark} {where}: failed at {check.get('step')}: {check['detail']}"
    agreement = f", top-1 agreement {check['agreement']:.2%}" if "agreement" in check else ""
    return (f"{mark} {where} (ran {check['interpreter']}): self-test passed; outputs vs x86: "
            f"{check['detail']}{agreement}")
