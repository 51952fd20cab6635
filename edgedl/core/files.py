"""Atomic file writes, hashing and JSON sidecars.

Every artifact edgedl writes goes to a temporary file in the destination folder first and is
renamed into place, so an interrupted run never leaves a half-written file behind. Temporary
names are hidden, end in ``.edgedl-tmp`` (never an artifact suffix) and carry the writer's pid:
discovery skips them, and a later run sweeps those whose writer is gone (``sweep_leftovers``).
Everything in flight is registered, so an interrupted command can say truthfully what was kept.
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


TEMP_SUFFIX = ".edgedl-tmp"
STAGING_SUFFIX = ".edgedl-staging"
_IN_FLIGHT: set[Path] = set()  # temporary files and staging folders this process has not finished


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=_temp_prefix(final.name), suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    _IN_FLIGHT.add(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts should read like any new file
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _IN_FLIGHT.discard(tmp)


@contextlib.contextmanager
def staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A hidden folder beside the final one, removed on the way out whatever happened.

    The caller moves what it finished out of it (``os.replace``); what is left is unfinished.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=_temp_prefix(name), suffix=STAGING_SUFFIX))
    _IN_FLIGHT.add(folder)
    os.chmod(folder, 0o777 & ~_umask())  # mkdtemp makes 0700; the finished folder should read like any other
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _IN_FLIGHT.discard(folder)


@contextlib.contextmanager
def locked(folder: Path, name: str = ".edgedl.lock") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (for read-modify-write of a shared index by concurrent runs)."""
    import fcntl

    with open(folder / name, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_in_flight() -> list[Path]:
    """Remove what this process left half-written (after an interrupt); return what could not go."""
    for path in list(_IN_FLIGHT):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            _IN_FLIGHT.discard(path)
    return sorted(_IN_FLIGHT)


def is_leftover(path: Path) -> bool:
    """A temporary file or staging folder written by edgedl (finished or not)."""
    return path.name.startswith(".") and path.name.endswith((TEMP_SUFFIX, STAGING_SUFFIX))


def temp_dir(kind: str) -> tempfile.TemporaryDirectory:
    """A private temporary folder ``edgedl-KIND-PID-…``; those that killed edgedl processes left behind
    are swept first (a SIGKILL runs no cleanup)."""
    sweep_temp(kind)
    return tempfile.TemporaryDirectory(prefix=f"edgedl-{kind}-{os.getpid()}-")


def sweep_temp(kind: str) -> list[Path]:
    """Remove ``edgedl-KIND-PID-…`` folders in the temporary directory whose process has died."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"edgedl-{kind}-*-*"):
        pid = path.name[len(f"edgedl-{kind}-"):].split("-", 1)[0]
        if not pid.isdigit() or path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
            continue
        if not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def replace_dir(staging: Path, out: Path) -> None:
    """Put the finished folder ``staging`` at ``out``, replacing an earlier one whole, never leaving no
    ``out`` behind: an atomic exchange (Linux renameat2 RENAME_EXCHANGE) where the filesystem has it,
    after which ``staging`` holds the old folder for its owner to remove. Elsewhere the old folder is
    moved aside first under a name that ``sweep_leftovers`` moves back should this process die between
    the two renames."""
    if not out.exists():
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        return
    aside = out.with_name(f".{out.name}.{os.getpid()}{ASIDE}{STAGING_SUFFIX}")
    os.rename(out, aside)
    os.rename(staging, out)
    os.rename(aside, staging)  # the old folder goes where the caller removes its staging folder


ASIDE = "-old"  # an earlier output moved aside during replace_dir's fallback


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0


def _restore_aside(path: Path) -> bool:
    """An earlier output moved aside by a writer that died before its replacement landed: put it back."""
    name = path.name[1:-len(STAGING_SUFFIX)].rsplit(".", 1)
    if len(name) != 2 or not name[1].endswith(ASIDE) or not path.is_dir():
        return False
    target = path.with_name(name[0])
    if target.exists():
        return False
    os.rename(path, target)
    return True


def sweep_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove edgedl's own temporary files and staging folders in ``folder`` whose writer has died (an
    earlier output moved aside and never replaced goes back to its place)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if not is_leftover(path) or _writer_alive(path.name) or path.is_symlink():
            continue
        if _restore_aside(path):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _writer_alive(name: str) -> bool:
    """Is the process that made this temporary name (``.NAME.PID-RAND.edgedl-tmp``) still running?"""
    try:
        pid = int(name.rsplit(".", 2)[-2].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    return _alive(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def read_toml(path: str | os.PathLike, what: str) -> dict:
    """A TOML document (a recipe, a model card), or a one-line UsageError saying what is wrong with it."""
    import tomllib

    from .errors import UsageError

    path = Path(path)
    regular_file(path, what, UsageError)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{what} not found: {path}") from exc
    except RecursionError as exc:  # tables nested thousands deep
        raise UsageError(f"{what} {path} nests too deeply to be a {what}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from exc


def regular_file(path: Path, what: str, error=None) -> Path:
    """Refuse a FIFO, device or socket where a file is expected (reading one can hang forever)."""
    if path.exists() and not path.is_file():
        raise (error or ArtifactError)(f"{what} {path} is not a regular file",
                                       hint="pass a file, not a folder, pipe or device")
    return path


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    regular_file(Path(path), what)
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
