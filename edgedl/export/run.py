"""``edgedl export``: plan the requested (format, precision) targets and convert them.

Conversions run in one worker process that imports TensorFlow and loads the model once. The
converter can crash the process (a segfault in MLIR): then that one target is reported as a clean
error naming the mode, a fresh worker takes the remaining targets, and nothing half-written stays.

The worker stays warm between exports of one edgedl process (the pipeline, the keep-float search and
the rescue ladder export many times; TensorFlow's import is most of a small export's 6 s). Each
export starts a new session in it: its caches are emptied and Keras' name counters reset, so an
export converts the same bytes whether or not the worker is warm. Each task runs with the caller's
environment and working folder (``core.warm``); a worker made under other start-up settings
(TensorFlow's, threads') is replaced, and an interrupted export kills it.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..core.env import die_with_parent
from ..core.errors import ExportError, UsageError
from ..core.files import locked, read_json, sweep_leftovers, write_json
from ..core.layout import INDEX
from ..core.outputs import MARKER, claim
from ..core.warm import WarmWorker
from .plan import CALIBRATED, CALIBRATION_METHODS, ExportOptions, Target


def export(source: str | Path, targets: list[Target], out: str | Path | None = None,
           options: ExportOptions | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Convert ``source`` (a .keras file or a training run folder) to each target.

    Returns one record per target: the artifact's manifest entry, or ``{"error": ...}``.
    Raises ExportError if any target failed, after all targets were tried.
    """
    from .source import resolve_source

    options = options or ExportOptions()
    if options.calibration_method not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method {options.calibration_method!r}; choose from "
                         f"{', '.join(CALIBRATION_METHODS)}")
    src = resolve_source(source, options, needs_calibration=any(t.precision in CALIBRATED for t in targets))
    folder = Path(out or src.default_out)
    new = not folder.exists()
    out_dir = claim(folder, "exports", protect=tuple(p for p in (src.run_dir,) if p))
    sweep_leftovers(out_dir)
    say = progress or (lambda message: None)
    records: list[dict] = []
    try:
        _run_jobs(src, targets, out_dir, options, say, records)
    except BaseException:  # interrupted: the artifacts that completed stay listed, and the message says so
        done = [r["file"] for r in records if "error" not in r]
        _finish(out_dir, records, new)
        say(f"interrupted: {len(done)} artifact(s) completed and are listed in {out_dir / INDEX}"
            + (f" ({', '.join(done)})" if done else "; nothing was written"))
        raise
    _finish(out_dir, records, new)
    for note in size_notes(records):
        say(f"note: {note}")
    failed = [r for r in records if "error" in r]
    if failed:
        raise ExportError("; ".join(f"{r['target']}: {r['error']}" for r in failed))
    return [{**r, "out_dir": str(out_dir)} for r in records]


def check(source: str | Path, targets: list[Target], options: ExportOptions | None = None) -> dict:
    """Preflight only: what would need a value, Flex ops, or is unsupported; nothing is written."""
    from .source import resolve_source

    options = options or ExportOptions()
    src = resolve_source(source, options)
    return _once(_worker_check, asdict(src), [asdict(t) for t in targets], asdict(options))


def layers_with_ops(source: str | Path, options: ExportOptions | None = None) -> list[str]:
    """The Keras layers that own ops in the converted graph, in graph order: what --keep-float can name."""
    from .source import resolve_source

    options = options or ExportOptions()
    src = resolve_source(source, options)
    return _once(_worker_layers, asdict(src), asdict(options))


# The conversion worker, warm between exports of this process (each export is a session of its own in it).
_WARM = WarmWorker(die_with_parent)
# Export session numbers, never reused in this process: a replaced worker must not restart them, or two
# exports in a row could share one and the second would find the first's cached model.
_SESSIONS = itertools.count(1)


def _session() -> int:
    """A new session number for the worker: its first task of the session empties its caches."""
    return next(_SESSIONS)


def _once(task, *args):
    """One task in the warm worker, in a session of its own; a worker that died is replaced for the next."""
    try:
        return _WARM.run(task, _session(), *args)
    except futures.process.BrokenProcessPool:
        raise ExportError("the converter crashed (process died)") from None


def _finish(out_dir: Path, records: list[dict], new: bool) -> None:
    """List what completed; a folder this export created and filled with nothing is removed again."""
    if new and not any("error" not in r for r in records):
        for name in (MARKER, ".edgedl.lock"):
            (out_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone else wrote there meanwhile; leave it
            out_dir.rmdir()
        return
    _update_index(out_dir, records)


def _run_jobs(src, targets: list[Target], out_dir: Path, options: ExportOptions, say, records: list[dict]) -> None:
    session = _session()
    for number, target in enumerate(targets, 1):
        say(f"[{number}/{len(targets)}] {src.name}: {target.label} …")
        try:  # an interrupt kills the worker (it may be writing) and goes on up
            record = _WARM.run(_worker_convert, session, asdict(src), asdict(target), str(out_dir), asdict(options))
        except futures.process.BrokenProcessPool:  # the next target gets a fresh worker
            record = {"target": target.label, "error": f"the converter crashed (process died) during "
                      f"{target.label}; no file was written"}
        say(_summary(target, record))
        records.append(record)


def _summary(target: Target, record: dict) -> str:
    if "error" in record:
        return f"    ✗ {target.label}: {record['error']}"
    # a no-op dynamic export says so here, not only in its sidecar
    notes = "".join(f"\n      note: {note}" for note in record.get("notes", [])[:1] if record.get("no_effect"))
    return f"    ✓ {record['file']}  {record['size']:,} B  {record['time_s']:.1f} s{_ranges_note(record)}{notes}"


WHY_LARGER = {
    "fp16": "fp16 halves only the weights, and adds a DEQUANTIZE op per weight tensor: a model whose weights are a "
            "small share of the file grows",
    "int8": "QDQ int8 adds QuantizeLinear/DequantizeLinear nodes with a scale and zero point per tensor: with few "
            "weights to shrink, that overhead is larger than the savings",
    "dynamic": "dynamic range adds quantization parameters per weight tensor and shrinks only the large ones",
}


def size_notes(records: list[dict]) -> list[str]:
    """An artifact meant to be smaller than its format's fp32 that is not, with why (said, never hidden)."""
    fp32 = {r["format"]: r["size"] for r in records if "error" not in r and r.get("precision") == "fp32"}
    notes = []
    for r in records:
        if "error" in r or r.get("precision") not in WHY_LARGER or r.get("format") not in fp32:
            continue
        if r["size"] >= fp32[r["format"]]:
            notes.append(f"{r['file']} ({r['size']:,} B) is not smaller than its fp32 ({fp32[r['format']]:,} B): "
                         f"{WHY_LARGER[r['precision']]}")
    return notes


def _ranges_note(record: dict) -> str:
    """The activation-range method an int8 artifact got, when it is not the default, and why (auto's scores)."""
    facts = record.get("onnx_quantization") or record
    method = facts.get("calibration_method")
    if not method or (method == "minmax" and not facts.get("calibration_auto")):
        return ""
    measured = facts.get("calibration_measured") or {}
    why = ", ".join(f"{m} {s['agreement']:.1%}/{s['sqnr_db']:.1f} dB" for m, s in measured.items())
    return f"  ranges: {method}" + (f" (auto, agreement/SQNR on the calibration samples: {why})" if why else "")


def _update_index(out_dir: Path, records: list[dict]) -> None:
    """artifacts.json lists every artifact in the folder; entries for re-exported files are replaced."""
    index_path = out_dir / INDEX
    with locked(out_dir):  # two exports into one folder must not lose each other's entries
        index = read_json(index_path, "artifact index") if index_path.exists() else {}
        index = index if isinstance(index, dict) and isinstance(index.get("artifacts"), list) else {"artifacts": []}
        fresh = {r["file"]: r for r in records if "error" not in r}
        kept = [a for a in index.get("artifacts", []) if isinstance(a, dict) and a.get("file") not in fresh
                and (out_dir / str(a.get("file"))).is_file()]
        write_json(index_path, {"edgedl": "artifact-index/1", "artifacts": kept + list(fresh.values())})


# ---------------------------------------------------------------- worker side (TensorFlow lives here)

def _worker_convert(session: int, src: dict, target: dict, out_dir: str, options: dict) -> dict:
    from ..core.errors import EdgedlError
    from .worker import begin, convert_target

    begin(session)

    label = Target(**target).label
    try:
        return convert_target(src, target, Path(out_dir), options)
    except EdgedlError as exc:
        return {"target": label, "error": exc.one_line()}
    except OSError as exc:  # a full disk or a file-size limit while writing the artifact
        return {"target": label, "error": f"cannot write the artifact: {exc.strerror or exc}"}
    except Exception as exc:  # the converters (TensorFlow, tf2onnx, onnxruntime) fail in their own types
        text = " ".join(str(exc).split())[:300]
        return {"target": label, "error": f"the converter failed: {exc.__class__.__name__}: {text}"}


def _worker_check(session: int, src: dict, targets: list[dict], options: dict) -> dict:
    from .worker import begin, preflight

    begin(session)
    return preflight(src, targets, options)


def _worker_layers(session: int, src: dict, options: dict) -> list[str]:
    from .worker import begin
    from .worker import layers_with_ops as in_worker

    begin(session)
    return in_worker(src, options)
