#!/usr/bin/env python3
"""Standalone runner for an edgedl bundle: needs only numpy and a TFLite interpreter.

    python run.py --self-test        check the model's sha256 and the golden vectors
    python run.py digit.png          top-k classes for an image (needs Pillow)
    python run.py input.npy          top-k classes (or values) for each sample in an array
    python run.py a=x.npy b=y.npy    a model with several inputs: one array per input name
    python run.py -                  read a .npy array from standard input
    python run.py --bench            quick latency figure on this device
    python run.py --bench --json     one JSON line: cold start, p50/p90/p99, peak RSS (edgedl bench --ssh)

Interpreter order: ai-edge-litert, then tflite-runtime (32-bit Pi OS; needs numpy < 2 and cannot
read dynamic-range models from TF >= 2.21), then tf.lite. Quantized inputs and outputs are
converted here with the scale and zero point in manifest.json; variable tensors are reset before
every inference because stateful ops (the fused LSTM) keep state between invokes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_interpreter_class():
    forced = os.environ.get("EDGEDL_INTERPRETER")  # ai-edge-litert | tflite-runtime | tf.lite
    if forced:
        return _forced(forced)
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"
    except ImportError:
        sys.exit("error: no TFLite interpreter found; pip install -r requirements.txt")


def _forced(name: str):
    try:
        if name == "ai-edge-litert":
            from ai_edge_litert.interpreter import Interpreter
        elif name == "tflite-runtime":
            from tflite_runtime.interpreter import Interpreter
        elif name == "tf.lite":
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        else:
            sys.exit(f"error: EDGEDL_INTERPRETER={name!r}; use ai-edge-litert, tflite-runtime or tf.lite")
    except ImportError as exc:
        sys.exit(f"error: EDGEDL_INTERPRETER={name} is not installed: {exc}")
    return Interpreter, name


@contextlib.contextmanager
def quiet_stderr():
    """Hide what native code prints to fd 2 (Python exceptions still carry their messages)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class BundleError(Exception):
    """Something about the bundle or the input is wrong: one line for the user, exit 1."""


def read_manifest(bundle: Path) -> dict:
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        manifest["model"]["file"], manifest["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{bundle / 'manifest.json'} is missing or not an edgedl bundle manifest: {exc}") from exc
    check_manifest(manifest)
    return manifest


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


# Each value this runner reads, and what it must be: a wrong type is one line, never a traceback.
_TYPED = (
    ("model.file", lambda m: isinstance(m["model"]["file"], str), "a file name"),
    ("model.sha256", lambda m: isinstance(m["model"]["sha256"], str), "a sha256 text"),
    ("inputs", lambda m: isinstance(m["inputs"], list) and m["inputs"] and all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("shape"), list)
        and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in s["shape"])
        for s in m["inputs"]), "a list of {name, shape} tables"),
    ("outputs", lambda m: isinstance(m["outputs"], list) and m["outputs"] and all(
        isinstance(s, dict) and isinstance(s.get("name"), str) for s in m["outputs"]), "a list of {name} tables"),
    ("preprocessing.scale", lambda m: _number(m["preprocessing"]["scale"]) and m["preprocessing"]["scale"] != 0,
     "a finite, non-zero number"),
    ("preprocessing.offset", lambda m: _number(m["preprocessing"]["offset"]), "a finite number"),
    ("labels", lambda m: isinstance(m.get("labels", []), list) and all(
        isinstance(x, str) and not any(ord(c) < 32 or ord(c) == 127 for c in x) for x in m.get("labels", [])),
     "a list of one-line names"),
    ("golden.atol", lambda m: _number(m["golden"]["atol"]) and m["golden"]["atol"] >= 0, "a number ≥ 0"),
    ("golden.tolerance_steps", lambda m: m["golden"]["tolerance_steps"] is None or (
        isinstance(m["golden"]["tolerance_steps"], dict)
        and all(_number(v) and v >= 0 for v in m["golden"]["tolerance_steps"].values())), "a table of numbers ≥ 0"),
    ("runtime.reset_variables_before_invoke", lambda m: isinstance(m["runtime"]["reset_variables_before_invoke"],
                                                                    bool), "true or false"),
)


OPTIONAL = ("preprocessing", "labels", "golden")  # checked when present (a minimal bundle has none)


def check_manifest(manifest: dict) -> None:
    for key, valid, meaning in _TYPED:
        if key.split(".")[0] in OPTIONAL and key.split(".")[0] not in manifest:
            continue
        try:
            good = bool(valid(manifest))
        except (KeyError, TypeError, IndexError):
            good = False
        if not good:
            raise BundleError(f"manifest.json: {key} must be {meaning}")


# What the self-test proves unchanged since the bundle was made: how inputs are prepared, what the
# outputs mean, and what the golden vectors and their tolerances are.
CONTRACT = ("inputs", "outputs", "preprocessing", "labels", "golden")


def contract_sha256(manifest: dict) -> str:
    picked = {key: manifest.get(key) for key in CONTRACT}
    picked["model"] = {"file": manifest["model"]["file"], "sha256": manifest["model"]["sha256"]}
    picked["reset_variables_before_invoke"] = manifest["runtime"]["reset_variables_before_invoke"]
    return hashlib.sha256(json.dumps(picked, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Model:
    def __init__(self, bundle: Path, threads: int = 1, xnnpack: bool = True):
        self.manifest = read_manifest(bundle)
        self.path = bundle / Path(self.manifest["model"]["file"]).name
        self.sha256_ok = check_sha256(self.path, self.manifest["model"]["sha256"])  # on every load
        interpreter_class, self.library = load_interpreter_class()
        try:
            with quiet_stderr():  # LiteRT prints an INFO banner when it applies XNNPACK
                self.interpreter = interpreter_class(model_path=str(self.path), num_threads=threads,
                                                     **_delegates(interpreter_class, xnnpack))
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{self.library} cannot load {self.path.name}: {' '.join(str(exc).split())[:200]}") \
                from exc
        # Tensors are found by the name the manifest records, never by position: a converter may list
        # a multi-output model's outputs in another order than the Keras model.
        self.inputs = _match(self.manifest["inputs"], self.interpreter.get_input_details())
        self.outputs = _match(self.manifest["outputs"], self.interpreter.get_output_details())
        self.stateful = self.manifest["runtime"]["reset_variables_before_invoke"]
        self.labels = self.manifest.get("labels", [])
        self.threads, self.xnnpack = threads, xnnpack

    def _quantize(self, x, detail):
        scale, zero_point = detail["quantization"]
        if detail["dtype"] in (np.int8, np.uint8, np.int16) and scale:
            info = np.iinfo(detail["dtype"])
            return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
        if np.dtype(detail["dtype"]).kind in "iu":  # token ids: whole numbers, never scaled
            return np.round(x).astype(detail["dtype"])
        return x.astype(detail["dtype"])

    def _dequantize(self, y, detail):
        scale, zero_point = detail["quantization"]
        if detail["dtype"] in (np.int8, np.uint8, np.int16) and scale:
            return (y.astype(np.float32) - zero_point) * scale
        return y.astype(np.float32)

    def raw(self, samples: list[np.ndarray]) -> list[np.ndarray]:
        """One sample per model input (no batch axis) in, the model's raw output tensors out."""
        if self.stateful:
            self.interpreter.reset_all_variables()
        for detail, sample in zip(self.inputs, samples, strict=True):
            self.interpreter.set_tensor(detail["index"], self._quantize(np.asarray(sample)[None], detail))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.outputs]

    def predict(self, samples: list[np.ndarray]) -> list[np.ndarray]:
        return [self._dequantize(y, d)[0] for y, d in zip(self.raw(samples), self.outputs, strict=True)]


def _delegates(interpreter_class, xnnpack: bool) -> dict:
    """Interpreter options that turn the default XNNPACK delegate off (LiteRT and tflite-runtime)."""
    if xnnpack:
        return {}
    module = sys.modules[interpreter_class.__module__]
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None:
        raise BundleError(f"{interpreter_class.__module__} cannot turn XNNPACK off")
    return {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def _match(specs: list[dict], details: list[dict]) -> list[dict]:
    by_name = {d["name"]: d for d in details}
    found = [by_name.get(spec.get("tensor", spec["name"])) for spec in specs]
    if None in found or len(found) != len(details):
        raise BundleError(f"the model's tensors ({', '.join(by_name)}) are not the ones manifest.json names "
                          f"({', '.join(spec.get('tensor', spec['name']) for spec in specs)})")
    return found


MAX_IMAGE_PIXELS = 40_000_000  # a larger image is refused before it is decoded (a PNG bomb)
MAX_INPUT_BYTES = 512 * 2**20  # the largest .npy accepted on the command line or stdin


def preprocess(raw: np.ndarray, manifest: dict, spec: dict) -> np.ndarray:
    """Raw values (e.g. 0..255 pixels) → samples of model input ``spec``, exactly as in training."""
    pre = manifest["preprocessing"]
    shape = [int(d) for d in spec["shape"][1:]]
    raw = np.asarray(raw)
    if raw.dtype.kind not in "uif" or raw.size == 0:
        raise BundleError(f"input must be a non-empty array of numbers, got {raw.dtype} with shape {raw.shape}")
    scaled = spec["name"] in pre.get("applies_to", [spec["name"]])
    x = raw.astype(np.float32) * pre["scale"] + pre["offset"] if scaled else raw.astype(np.float32)
    if not np.isfinite(x).all():
        raise BundleError("input holds NaN or Inf values")
    per_sample = int(np.prod(shape))
    if x.size % per_sample:
        raise BundleError(f"input of shape {raw.shape} ({raw.size} values) cannot be split into samples of shape "
                          f"{tuple(shape)} ({per_sample} values each)")
    return x.reshape((-1, *shape))


def _load_npy(handle, where: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(handle)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = header[version](handle)
        if dtype.hasobject:
            raise BundleError(f"{where} holds Python objects, which run.py refuses to load")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > MAX_INPUT_BYTES:
            raise BundleError(f"{where} declares {nbytes:,} bytes; run.py reads at most {MAX_INPUT_BYTES:,}")
        data = handle.read(nbytes)
        if len(data) < nbytes:
            raise BundleError(f"{where} is truncated ({len(data):,} of {nbytes:,} bytes)")
        return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    except BundleError:
        raise
    except (ValueError, KeyError, EOFError, OSError) as exc:
        raise BundleError(f"{where} is not a .npy array: {' '.join(str(exc).split())[:120]}") from exc


def _load_image(path: Path, manifest: dict) -> np.ndarray:
    pre = manifest["preprocessing"]
    if "image_size" not in pre:
        raise BundleError(f"{path.name}: this model does not take images; pass a .npy array")
    try:
        from PIL import Image
    except ImportError:
        raise BundleError("reading images needs Pillow: pip install pillow (or pass a .npy array)") from None
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    height, width = pre["image_size"]
    mode = "L" if pre["channels"] == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return np.asarray(image.convert(mode).resize((width, height)), np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BundleError(f"{path.name} is too large to decode safely ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise BundleError(f"{path.name} is not a readable image: {' '.join(str(exc).split())[:120]}") from exc


def read_inputs(sources: list[str], manifest: dict) -> list[list[np.ndarray]]:
    """Samples, each a list with one array per model input. One input: each source is an image, a .npy
    or - (stdin). Several inputs: NAME=file.npy once per input name."""
    specs = manifest["inputs"]
    if len(specs) == 1:
        return [[x] for source in sources for x in _read_one(source, manifest, specs[0])]
    named = dict(source.split("=", 1) for source in sources if "=" in source)
    names = [spec["name"] for spec in specs]
    if sorted(named) != sorted(names) or len(named) != len(sources):
        raise BundleError(f"this model takes {len(names)} inputs: pass NAME=file.npy for each of {', '.join(names)}")
    columns = [_read_one(named[spec["name"]], manifest, spec) for spec in specs]
    if len({len(c) for c in columns}) != 1:
        raise BundleError(f"the inputs hold different numbers of samples: {[len(c) for c in columns]}")
    return [list(sample) for sample in zip(*columns, strict=True)]


def _read_one(source: str, manifest: dict, spec: dict) -> np.ndarray:
    if source == "-":
        return preprocess(_load_npy(io.BytesIO(sys.stdin.buffer.read(MAX_INPUT_BYTES + 1024)), "standard input"),
                          manifest, spec)
    path = Path(source)
    if not path.exists():
        raise BundleError(f"input not found: {path}")
    if not path.is_file():
        raise BundleError(f"{path} is not a file (pass an image, a .npy array, or - for standard input)")
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as handle:
            return preprocess(_load_npy(handle, path.name), manifest, spec)
    return preprocess(_load_image(path, manifest), manifest, spec)


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[tuple[str, float]]:
    if probs.ndim == 2:  # a sequence output: the last step decides
        probs = probs[-1]
    order = np.argsort(-probs.astype(np.float64), kind="stable")[:k]  # ties: the lower class first, as argmax
    return [(labels[i] if i < len(labels) else str(i), float(probs[i])) for i in order]


def describe_outputs(outputs: list[np.ndarray], manifest: dict, k: int) -> dict:
    """Per output: the top-k classes of a classification output, the values of any other."""
    result = {}
    for value, spec in zip(outputs, manifest["outputs"], strict=True):
        if spec.get("kind", "classification") == "classification":
            result[spec["name"]] = [{"label": label, "score": score} for label, score in
                                    top_k(value, manifest.get("labels", []), k)]
        else:
            result[spec["name"]] = np.round(np.asarray(value, np.float64), 6).ravel().tolist()
    return result


def _line(described: dict) -> str:
    parts = []
    for name, value in described.items():
        text = "  ".join(f"{v['label']}: {v['score']:.3f}" for v in value) if value and isinstance(value[0], dict) \
            else " ".join(f"{v:.6g}" for v in value)
        parts.append(text if len(described) == 1 else f"{name}: {text}")
    return " | ".join(parts)


def check_sha256(model_path: Path, expected: str) -> str:
    """Before the interpreter sees it: is the model file the one this bundle was validated with?

    Checked on every load (about 1 ms per MB here), so a replaced model is never run.
    """
    try:
        actual = hashlib.sha256(model_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise BundleError(f"cannot read the model {model_path}: {exc.strerror or exc}") from exc
    if actual != expected:
        raise BundleError(f"{model_path.name} was changed or replaced after it was validated (sha256 {actual[:16]}…, "
                          f"manifest says {expected[:16]}…); refusing to run it")
    return actual


def load_golden(manifest: dict) -> dict:
    """{"inputs": one array per model input, "raw": one array per output}, N samples each."""
    path = HERE / Path(str(manifest.get("golden", {}).get("file", "golden.npz"))).name
    try:
        with np.load(path, allow_pickle=False) as archive:
            golden = {"inputs": [archive[f"input_{i}"] for i in range(len(manifest["inputs"]))],
                      "raw": [archive[f"raw_{j}"] for j in range(len(manifest["outputs"]))],
                      "raw_inputs": {i: archive[f"raw_input_{i}"] for i in range(len(manifest["inputs"]))
                                     if f"raw_input_{i}" in archive.files}}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise BundleError(f"{path.name} is missing or not this bundle's golden vectors: {exc}") from exc
    if len({len(a) for a in golden["inputs"] + golden["raw"]}) != 1 or not len(golden["inputs"][0]):
        raise BundleError(f"{path.name} holds mismatched or no golden vectors")
    return golden


def check_contract(manifest: dict, golden: dict) -> bool:
    """The manifest's preprocessing, labels and golden settings are the bundle's own, and one raw golden
    sample prepared by ``preprocess`` gives the golden input: a changed scale or offset fails here."""
    recorded = manifest.get("contract_sha256")
    if recorded is not None and recorded != contract_sha256(manifest):
        print("✗ manifest.json was changed after the bundle was made (preprocessing, labels, tensors or golden "
              "settings): its contract sha256 no longer matches")
        return False
    for i, spec in enumerate(manifest["inputs"]):
        raw = golden["raw_inputs"].get(i)
        if raw is None:
            continue
        prepared = preprocess(raw, manifest, spec)[0]
        expected = np.asarray(golden["inputs"][i][0], np.float32).reshape(prepared.shape)
        if not np.allclose(prepared, expected, rtol=1e-5, atol=1e-6):
            print(f"✗ a raw golden sample of {spec['name']!r} prepared with the manifest's preprocessing differs "
                  f"from the golden input by {float(np.max(np.abs(prepared - expected))):.3g}")
            return False
    return True


def bench_sample(manifest: dict) -> list[np.ndarray]:
    """The first golden input of each model input: what --bench times (outputs are not needed)."""
    path = HERE / Path(str(manifest.get("golden", {}).get("file", "golden.npz"))).name
    try:
        with np.load(path, allow_pickle=False) as archive:
            return [archive[f"input_{i}"][0] for i in range(len(manifest["inputs"]))]
    except (OSError, ValueError, KeyError, EOFError, IndexError) as exc:
        raise BundleError(f"{path.name} is missing or holds no inputs to time: {exc}") from exc


def self_test(model: Model) -> bool:
    manifest = model.manifest
    golden = load_golden(manifest)
    contract_ok, ok = check_contract(manifest, golden), True
    steps = manifest["golden"]["tolerance_steps"] or {}
    tolerance, atol = steps.get(model.library, max(steps.values(), default=0)), manifest["golden"]["atol"]
    worst = 0.0
    count = len(golden["inputs"][0])
    for i in range(count):
        for raw, expected in zip(model.raw([x[i] for x in golden["inputs"]]), golden["raw"], strict=True):
            raw, expected = raw[0], expected[i]
            if raw.dtype.kind in "iu":
                diff = float(np.max(np.abs(raw.astype(np.int32) - expected.astype(np.int32))))
                good = diff <= tolerance
            else:
                diff = float(np.max(np.abs(raw - expected)))
                good = diff <= atol
            worst = max(worst, diff)
            ok = ok and good
    unit = "quantization steps" if golden["raw"][0].dtype.kind in "iu" else "abs"
    print(f"{'✓' if ok else '✗'} {count} golden vectors, worst difference {worst:g} {unit} "
          f"(interpreter: {model.library})")
    return ok and contract_ok


def _peak_rss_kb() -> int:
    """This process image's peak resident memory (VmHWM; 0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench(model: Model, runs: int, warmup: int = 10, as_json: bool = False, first_s: float | None = None) -> None:
    """Steady-state latency of one sample (the first golden vector); ``first_s``: process start to first prediction."""
    sample = bench_sample(model.manifest)
    if first_s is None:
        model.raw(sample)
    for _ in range(warmup):
        model.raw(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.raw(sample)
        times.append(time.perf_counter() - start)
    times_us = np.asarray(times) * 1e6
    if as_json:
        print(json.dumps({"kind": "bench", "library": model.library, "version": _library_version(model.library),
                          "numpy": np.__version__, "threads": model.threads, "xnnpack": model.xnnpack,
                          "cold_start_ms": None if first_s is None else round(first_s * 1e3, 3),
                          "warmup": warmup, "runs": runs, "p50_us": round(float(np.median(times_us)), 2),
                          "p90_us": round(float(np.percentile(times_us, 90)), 2),
                          "p99_us": round(float(np.percentile(times_us, 99)), 2),
                          "min_us": round(float(times_us.min()), 2), "mean_us": round(float(times_us.mean()), 2),
                          "peak_rss_kb": _peak_rss_kb()}))
        return
    print(f"{runs} runs with {model.library}: p50 {np.median(times_us):.1f} µs, "
          f"p90 {np.percentile(times_us, 90):.1f} µs, min {times_us.min():.1f} µs")


def _library_version(library: str) -> str:
    from importlib import metadata

    try:
        return metadata.version({"tf.lite": "tensorflow"}.get(library, library))
    except metadata.PackageNotFoundError:
        return "unknown"


def _cold_start_s() -> float | None:
    """Seconds since the launcher stamped EDGEDL_T0_NS (wall clock, ns) just before starting this process."""
    stamp = os.environ.get("EDGEDL_T0_NS", "")
    return (time.time_ns() - int(stamp)) / 1e9 if stamp.isdigit() else None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*",
                        help="image file, .npy array, or - for a .npy on stdin; NAME=file.npy per input when the "
                             "model takes several")
    parser.add_argument("--self-test", action="store_true", help="verify sha256 and golden vectors")
    parser.add_argument("--bench", action="store_true", help="quick latency measurement")
    parser.add_argument("--runs", type=_positive, default=500)
    parser.add_argument("--top-k", type=_positive, default=3)
    parser.add_argument("--threads", type=_positive, default=1)
    parser.add_argument("--no-xnnpack", action="store_true", help="run without the default XNNPACK delegate")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs before --bench times")
    parser.add_argument("--json", action="store_true", help="print predictions (or the --bench figures) as JSON")
    args = parser.parse_args(argv)
    if not (args.self_test or args.bench or args.inputs):
        parser.print_help()
        return 0
    try:
        return _run(args)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    manifest = read_manifest(HERE)
    samples = read_inputs(args.inputs, manifest) if args.inputs else []  # bad input fails before the model loads
    model = Model(HERE, threads=args.threads, xnnpack=not args.no_xnnpack)  # checks sha256 before loading
    status = 0
    if args.bench and args.json and not args.self_test:  # the timed figure first: cold start ends here
        model.raw(bench_sample(manifest))
        bench(model, args.runs, max(args.warmup, 0), as_json=True, first_s=_cold_start_s())
        return status
    if args.self_test:
        print(f"✓ sha256 {model.sha256_ok[:16]}… matches the manifest")
        status = 0 if self_test(model) else 1
    if args.bench:
        bench(model, args.runs)
    results = [describe_outputs(model.predict(sample), manifest, args.top_k) for sample in samples]
    if args.json and results:
        print(json.dumps(results))
    else:
        for described in results:
            print(_line(described))
    return status


if __name__ == "__main__":
    sys.exit(main())
