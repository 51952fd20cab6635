"""Output folders edgedl may write: claimed before any work, marked as ours, never someone else's.

A folder edgedl writes into must be new, empty, or already carry edgedl's marker for the same
kind of output (a run over a run, a bundle over a bundle). Anything else is refused: edgedl never
deletes or overwrites what it did not make. Names that come from users (recipes, manifests,
architecture references) are sanitized before they become file names, and every path edgedl
writes is proven to stay inside the folder it claimed.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from .errors import UsageError

MARKER = ".edgedl.json"
KINDS = {"run": "training run", "exports": "export folder", "bundle": "bundle", "pipeline": "pipeline output",
         "results": "results folder", "recipe": "pipeline recipe folder",
         "overlays": "Model Explorer overlay folder"}
# Output folders made before markers existed are recognised by the file edgedl wrote into them.
_SIGNATURES = {"run": ("manifest.json", "training-run/"), "bundle": ("manifest.json", "bundle/"),
               "exports": ("artifacts.json", "artifact-index/"), "pipeline": ("pipeline.json", "pipeline/")}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80


def safe_name(text: str, fallback: str = "model") -> str:
    """A file-name part that is the same on Linux, Windows and Android assets: [A-Za-z0-9._-], no
    leading dot, no path separators, no '..', at most 80 characters."""
    name = _SAFE.sub("_", str(text)).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)[:MAX_NAME].strip("._-")
    return name or fallback


def name_from_reference(reference: str) -> str:
    """``path/to/arch.py:build`` → ``arch_build``; ``pkg.module:fn`` → ``module_fn``; ``cnn`` → ``cnn``."""
    target, sep, attr = str(reference).rpartition(":")
    if not sep:
        return safe_name(Path(reference).stem if reference.endswith(".keras") else reference)
    stem = Path(target).stem if target.endswith(".py") else target.rpartition(".")[2]
    return safe_name(f"{stem}_{attr}")


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, after proving it lies inside ``root`` (symlinks followed, '..' collapsed)."""
    resolved_root, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise UsageError(f"refusing to write {path}: it lies outside the output folder {root}")
    return resolved


def kind_of(folder: Path) -> str | None:
    """The kind of edgedl output ``folder`` holds, from its marker or the file edgedl wrote into it."""
    marker = folder / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            return None
    for kind, (file, schema) in _SIGNATURES.items():
        path = folder / file
        if path.is_file() and not path.is_symlink():
            try:
                if str(json.loads(path.read_text(encoding="utf-8")).get("edgedl", "")).startswith(schema):
                    return kind
            except (OSError, ValueError, AttributeError):
                continue
    return None


def protected_paths(extra: tuple = ()) -> list[Path]:
    """Folders no output may be or contain: the working directory, home, the root, and ``extra``."""
    paths = [Path.cwd(), Path.home(), Path(Path.cwd().anchor)]
    return [Path(p).resolve() for p in (*paths, *extra) if p]


def claim(folder: str | os.PathLike, kind: str, protect: tuple = (), option: str = "--out") -> Path:
    """Make ``folder`` an edgedl output of ``kind``, or refuse with the reason and how to fix it.

    ``protect`` names more folders the output may neither be nor contain (e.g. the source run).
    Returns the folder, created if needed, with edgedl's marker in it.
    """
    path = check_output(folder, kind, protect, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write_marker(path, kind)
    except OSError as exc:
        from .errors import EdgedlError

        raise EdgedlError(f"cannot write to output directory {path}: {exc.strerror or exc}",
                          hint=f"choose a writable {option}") from exc
    return path


def check_output(folder: str | os.PathLike, kind: str, protect: tuple = (), option: str = "--out") -> Path:
    """Refuse ``folder`` as an output of ``kind`` unless it is new, empty, or an earlier ``kind``; create nothing."""
    assert kind in KINDS, kind
    path = Path(folder)
    if path.is_symlink():
        raise UsageError(f"{option} {path} is a symbolic link; edgedl writes only into real folders",
                         hint="pass the folder the link points to, or a new folder")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic-link loop, a name too long
        raise UsageError(f"{option} {path} cannot be resolved: {exc}") from exc
    for guarded in protected_paths(protect):
        if resolved == guarded or resolved in guarded.parents:
            raise UsageError(f"{option} {path} is or contains {guarded}, which edgedl must not overwrite",
                             hint="choose a new, empty folder for the output")
    if path.exists():
        _check_existing(path, kind, option)
    return path


def _check_existing(path: Path, kind: str, option: str) -> None:
    if not path.is_dir():
        raise UsageError(f"{option} {path} exists and is not a folder", hint="choose a new folder for the output")
    try:
        entries = [p.name for p in path.iterdir()]
    except OSError as exc:
        from .errors import EdgedlError

        raise EdgedlError(f"cannot read output directory {path}: {exc.strerror or exc}") from exc
    if not entries:
        return
    found = kind_of(path)
    if found == kind:
        return
    what = f"an edgedl {KINDS.get(found, found)}" if found else \
        f"files edgedl did not make ({', '.join(sorted(entries)[:3])}{'…' if len(entries) > 3 else ''})"
    raise UsageError(f"{option} {path} already holds {what}; edgedl writes a {KINDS[kind]} only into a new or "
                     f"empty folder, or over an earlier {KINDS[kind]}", hint="choose a new folder for the output")


def _write_marker(path: Path, kind: str, files: list[str] | None = None) -> None:
    marker = path / MARKER
    if marker.is_symlink():
        raise UsageError(f"{marker} is a symbolic link; refusing to write through it")
    if files is None and kind_of(path) == kind and marker.exists():
        return
    from .files import write_json

    record = {"edgedl": "output/1", "kind": kind, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    if files is not None:
        record["files"] = files
    write_json(marker, record)


def files_in(folder: Path) -> list[str]:
    """Every file and link below ``folder`` (links are not followed), as sorted relative paths."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        found += [(base / n).relative_to(folder).as_posix() for n in names]
        found += [(base / d).relative_to(folder).as_posix() for d in dirs if (base / d).is_symlink()]
    return sorted(set(found) - {MARKER})


def seal(folder: Path, kind: str) -> None:
    """Mark a finished output whose every file edgedl wrote, listing them: replacing it later is safe."""
    _write_marker(folder, kind, files_in(folder))


def foreign_files(folder: Path) -> list[str]:
    """Files in a sealed output that edgedl did not list (the user put them there)."""
    try:
        listed = set(json.loads((folder / MARKER).read_text(encoding="utf-8")).get("files", []))
    except (OSError, ValueError, AttributeError):
        return files_in(folder)
    return [name for name in files_in(folder) if name not in listed]


# ---------------------------------------------------------------- single files (reports, CSV, plots)

OWN_CSV_HEADER = "artifact,backend,precision"  # how bench's CSV begins (bench/render.CSV_COLUMNS)
OWN_MARKDOWN = "<!-- written by edgedl"  # the first line of every Markdown report edgedl writes
OWN_PNG_SOFTWARE = "edgedl"  # the Software text chunk of every PNG edgedl saves


def check_output_file(path: str | os.PathLike, inputs=(), force: bool = False, option: str = "--out") -> Path:
    """Refuse ``path`` as a file to write when it is one of the command's ``inputs``, a link or a folder,
    or an existing file edgedl did not write (unless ``force``). Called before any work starts."""
    path = Path(path)
    if path.is_symlink():
        raise UsageError(f"{option} {path} is a symbolic link; edgedl writes only real files",
                         hint="pass the file the link points to, or a new name")
    resolved = path.resolve()
    for source in inputs:
        if source is not None and resolved == Path(source).resolve():
            raise UsageError(f"{option} {path} is an input of this command; writing there would destroy it",
                             hint="choose another file name for the output")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder", hint="pass a file name")
    if path.exists() and not force and not written_by_edgedl(path):
        raise UsageError(f"{option} {path} exists and edgedl did not write it; it would be replaced",
                         hint="choose a new file name, or pass --force to replace it")
    return path


def written_by_edgedl(path: Path) -> bool:
    """True for a file that carries edgedl's signature: a JSON document with an "edgedl" schema, a Markdown
    report whose first line says so, bench's CSV header, a PNG whose Software chunk names edgedl."""
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return image.info.get("Software") == OWN_PNG_SOFTWARE
        with open(path, "rb") as handle:  # a JSON report is read whole (bench's keeps every latency)
            head = handle.read(256 << 20 if path.suffix == ".json" else 1 << 10)
    except (OSError, ValueError):
        return False
    text = head.decode("utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            return "edgedl" in json.loads(text)
        except (ValueError, TypeError):
            return False
    # ("| artifact | format" is how reports written before the signature began)
    return text.startswith((OWN_MARKDOWN, OWN_CSV_HEADER, "| artifact | format |"))
