"""TFLite Micro's own interpreter on one model, in a process that imports only numpy and tflite_micro.

    python -m edgedl.deploy.mcu_child SPEC.json

SPEC: {"model": path, "inputs": npz of model-space float inputs (input_0, input_1, …), "out": npz for
the raw outputs (raw_0, raw_1, …), "stateful": bool, "input_tensors"/"output_tensors": the tensor names
of those arrays, in the caller's order}. Prints one JSON object: the op list, the smallest working arena
and how it was found, the outputs' file, the time per inference.

A too-small arena can kill the process with a segfault (seen on the fused LSTM), so every arena
probe runs in a forked child: this process has no threads and no TensorFlow, which makes fork safe.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time

import numpy as np

ALIGN = 16  # TFLM aligns arena allocations to 16 bytes


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _read(model_bytes: bytes):
    """The model through edgedl's one TFLite reader, which uses the schema tflite_micro has loaded."""
    _runtime()
    from ..runners.tflite_model import TFLiteModel

    return TFLiteModel(model_bytes)


def op_list(model) -> list[dict]:
    """Every operator, in order: its builtin name and the name of its first output tensor."""
    ops = []
    for graph, op in model.ops():
        name = f"CUSTOM:{op.custom_code}" if op.name == "CUSTOM" else op.name
        tensor = graph.output_of(op)
        ops.append({"op": name, "tensor": tensor.name if tensor is not None else ""})
    return ops


def io_tensor_names(model) -> tuple[list[str], list[str]]:
    """The names of the model's input and output tensors, in the order TFLite Micro indexes them."""
    graph = model.main
    return [graph.tensors[i].name for i in graph.inputs], [graph.tensors[i].name for i in graph.outputs]


def order(wanted: list[str] | None, actual: list[str]) -> list[int]:
    """For each of TFLite Micro's tensors, the index of the caller's array of that name (else the same index)."""
    if not wanted or sorted(wanted) != sorted(actual):
        return list(range(len(actual)))
    return [wanted.index(name) for name in actual]


def _details(interpreter, which: str) -> list[dict]:
    found = []
    for index in range(64):
        try:
            found.append(getattr(interpreter, f"get_{which}_details")(index))
        except IndexError:
            break
    return found


def _feed(interpreter, samples: list[np.ndarray]) -> None:
    for index, (detail, x) in enumerate(zip(_details(interpreter, "input"), samples, strict=True)):
        q = detail["quantization_parameters"]
        dtype = detail["dtype"]
        if np.dtype(dtype).kind in "iu" and len(q["scales"]) and q["scales"][0]:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / q["scales"][0]) + q["zero_points"][0], info.min, info.max)
        interpreter.set_input(np.asarray(x, dtype).reshape(detail["shape"]), index)


def _works(model_bytes: bytes, arena: int, sample: list[np.ndarray]) -> bool:
    """Load, allocate and invoke once with this arena, in a forked child: a crash only ends the probe."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.dup2(devnull, 1)
        try:
            interpreter = _runtime().Interpreter.from_bytes(model_bytes, arena_size=arena)
            _feed(interpreter, sample)
            interpreter.invoke()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _reported_total(model_bytes: bytes) -> int | None:
    """The arena total TFLM's recording allocator prints (to fd 2, which Python cannot redirect)."""
    with tempfile.TemporaryFile() as capture:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked child
            os.dup2(capture.fileno(), 2)
            try:
                interpreter = _runtime().Interpreter.from_bytes(model_bytes, arena_size=max(1 << 20,
                                                                                          10 * len(model_bytes)))
                interpreter.print_allocations()
                os._exit(0)
            except BaseException:
                os._exit(1)
        os.waitpid(pid, 0)
        capture.seek(0)
        found = re.search(rb"Arena allocation total (\d+) bytes", capture.read())
    return int(found.group(1)) if found else None


def minimal_arena(model_bytes: bytes, sample: list[np.ndarray]) -> dict:
    """The smallest arena (16-byte steps) that loads and runs the model: the interpreter's own total,
    proven by two probes (it works, 16 bytes less does not), else found by bisection."""
    probes = 0

    def works(size: int) -> bool:
        nonlocal probes
        probes += 1
        return _works(model_bytes, size, sample)

    reported = _reported_total(model_bytes)
    if reported:
        size = -(-reported // ALIGN) * ALIGN
        if works(size) and not works(size - ALIGN):
            return {"bytes": size, "method": "reported total, checked ±16 B", "probes": probes}
    low, high = 0, max(1 << 20, 10 * len(model_bytes))
    if not works(high):
        raise RuntimeError(f"the model does not run even with a {high:,}-byte arena")
    while high - low > ALIGN:
        middle = (low + high) // 2 // ALIGN * ALIGN
        low, high = (low, middle) if works(middle) else (middle, high)
    return {"bytes": high, "method": "bisection, 16-byte steps", "probes": probes}


def run(model_bytes: bytes, arena: int, inputs: list[np.ndarray], stateful: bool) -> tuple[list[np.ndarray], float]:
    """Outputs in TFLite Micro's order, for ``inputs`` already in its order."""
    interpreter = _runtime().Interpreter.from_bytes(model_bytes, arena_size=arena)
    outputs = [[] for _ in _details(interpreter, "output")]
    started = time.perf_counter()
    for i in range(len(inputs[0])):
        if stateful:
            interpreter.reset()  # the fused LSTM keeps h/c between invokes, on a microcontroller too
        _feed(interpreter, [x[i : i + 1] for x in inputs])
        interpreter.invoke()
        for j, store in enumerate(outputs):
            store.append(np.array(interpreter.get_output(j)))
    seconds = (time.perf_counter() - started) / max(len(inputs[0]), 1)
    return [np.concatenate(store) for store in outputs], seconds


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    model_bytes = open(spec["model"], "rb").read()
    model = _read(model_bytes)
    report: dict = {"ops": op_list(model)}
    try:
        with np.load(spec["inputs"], allow_pickle=False) as archive:
            given = [archive[f"input_{i}"] for i in range(len(archive.files))]
        # Multi-I/O models: TFLite Micro indexes tensors in graph order, the caller in signature order
        input_names, output_names = io_tensor_names(model)
        inputs = [given[i] for i in order(spec.get("input_tensors"), input_names)]
        report["arena"] = minimal_arena(model_bytes, [x[:1] for x in inputs])
        outputs, seconds = run(model_bytes, report["arena"]["bytes"] + spec.get("margin", 0), inputs, spec["stateful"])
        places = order(spec.get("output_tensors"), output_names)
        report["tflm_order"] = {"inputs": order(spec.get("input_tensors"), input_names), "outputs": places}
        np.savez(spec["out"], **{f"raw_{places[k]}": y for k, y in enumerate(outputs)})
        report["seconds_per_inference"] = seconds
    except Exception as exc:  # reported to the parent as data: a type TFLM refuses, an arena that never fits
        report["error"] = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"
    sys.stdout.write(json.dumps(report))


if __name__ == "__main__":
    main()
