"""Atomic file writes, hashing and JSON sidecars.

Every artifact edgedl writes goes to a temporary file in the destination folder first and is
renamed into place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ArtifactError, EdgedlError


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove we can write there, before any long work starts."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".edgedl-probe-"):
            pass
    except OSError as exc:
        raise EdgedlError(
            f"cannot write to output directory {folder}: {exc.strerror or exc}",
            hint="choose a writable --out",
        ) from exc
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=f".tmp{final.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts should read like any new file
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_with(path: Path, write) -> None:
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise EdgedlError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _write_with(Path(path), lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    _write_with(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npz(path: str | os.PathLike, **arrays) -> None:
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    _write_with(Path(path), write)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    _write_with(Path(dst), lambda tmp: shutil.copyfile(src, tmp))


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{what} not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {path} is unreadable or corrupt: {exc}") from exc


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def verify_sha256(path: str | os.PathLike, expected: str | None, what: str = "artifact") -> None:
    """Raise ArtifactError when the file on disk is not the one the manifest recorded."""
    if not expected:
        return
    if not Path(path).exists():
        raise ArtifactError(f"{what} {path} is listed in the manifest but missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"{what} {path} was changed or replaced after it was written "
            f"(sha256 {actual[:12]}…, manifest says {expected[:12]}…)",
            hint="re-export it, or pass the file alone to skip the manifest check",
        )
