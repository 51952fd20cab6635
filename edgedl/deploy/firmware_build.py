"""Compile a TFLite Micro tree for a Cortex-M core, once, into the user's cache; link firmware images.

The library is a folder of object files in the cache, one per TFLite Micro source, keyed by
(tree fingerprint, core, flags, compiler). Only the sources a firmware needs are compiled: the
link starts from the bundle's own files, and each symbol the linker reports missing is looked up
in the tree's source list (``SOURCES-cortex-m-cmsis-nn.txt``, as TFLM's ``create_tflm_tree.py``
writes it, or every source of the tree); the files that define it are compiled and the link is
tried again. The objects go into a static archive, so a source compiled for one model but not
needed by the next adds nothing to the next's image. Every object is compiled to a temporary name
inside the cache and renamed into place when the compiler succeeded: a killed build leaves no
object that a later run trusts (and ``sweep_leftovers`` clears the temporaries).

Most of a TFLite Micro C++ source's compile time is parsing the same headers (the flatbuffers
schema, the interpreter, the kernel helpers): about 2.3 s of each 3.3 s. When a link needs several
C++ sources compiled, those headers are precompiled first (``PCH_HEADERS``, GCC's ``-include`` of a
``.gch``) and every C++ source of the library compiled during that link reads them from there; a
source that does not compile that way is compiled as it is.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import EdgedlError, UsageError
from ..core.files import TEMP_SUFFIX, sweep_leftovers, write_json

TOOLS = ("arm-none-eabi-g++", "arm-none-eabi-gcc", "arm-none-eabi-ar", "arm-none-eabi-size",
         "arm-none-eabi-readelf", "qemu-system-arm")
DEBIAN_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm"
TREE_HINT = ("make one: git clone https://github.com/tensorflow/tflite-micro && cd tflite-micro && python3 "
             "tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py --makefile_options "
             "\"TARGET=cortex_m_generic OPTIMIZED_KERNEL_DIR=cmsis_nn\" /path/to/tflm-tree; then pass --tflm "
             "/path/to/tflm-tree or set EDGEDL_TFLM_ROOT")
SOURCE_LIST = "SOURCES-cortex-m-cmsis-nn.txt"
HOST_SOURCE_LIST = "SOURCES-host.txt"
HOST = ["-m64"]  # the arch of a host build (x86-64, g++, reference kernels): what the bundle's CMakeLists.txt builds
# Left out of the library: the signal library and kissfft (audio front ends no model op uses), test
# helpers, and the cortex_m_generic log and timer, which need a device header (DWT, DCB); under the
# emulator the generic ones print through newlib's semihosting.
SKIP = re.compile(r"^(signal/|third_party/kissfft/|.*test_helper|.*mock_micro_graph|.*fake_micro_context|"
                  r"tensorflow/lite/micro/cortex_m_generic/)")
GENERIC = ("tensorflow/lite/micro/debug_log.cc", "tensorflow/lite/micro/micro_time.cc")
INCLUDES = (".", "third_party/flatbuffers/include", "third_party/gemmlowp", "third_party/ruy", "third_party/cmsis_nn",
            "third_party/cmsis_nn/Include", "third_party/cmsis/CMSIS/Core/Include")
COMMON_FLAGS = ("-Os", "-ffunction-sections", "-fdata-sections", "-DTF_LITE_STATIC_MEMORY", "-DCMSIS_NN",
                "-Wno-psabi")
CXX_FLAGS = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-fno-use-cxa-atexit")
C_FLAGS = ("-std=c11",)
# Included by nearly every C++ source of TFLite Micro and its kernels (or by the headers they include):
# precompiled once per link that compiles sources. Each is guarded, so a source that includes one again reads nothing.
PCH_HEADERS = ("tensorflow/lite/micro/micro_interpreter.h", "tensorflow/lite/micro/micro_mutable_op_resolver.h",
               "tensorflow/lite/micro/kernels/kernel_util.h", "tensorflow/lite/kernels/internal/common.h")
PCH_NAME = "edgedl_tflm_pch.h"
PCH_AFTER = 6  # C++ sources in one round that pay for precompiling (it costs about five sources' time)
MAX_LINKS = 24  # link, look up what is missing, compile it: TFLM's models settle in 4–8 rounds


class FirmwareError(EdgedlError):
    """The firmware could not be built or run (toolchain, tree, compiler, linker, emulator), or it FAILed."""


@dataclass
class Tree:
    root: Path
    sources: list[str]  # relative paths that may go into the library
    fingerprint: str
    commits: dict


@dataclass
class Library:
    """The cached objects of one (tree, core, flags, compiler)."""

    tree: Tree
    arch: list[str]
    folder: Path
    compiled: list[str] = field(default_factory=list)  # compiled by this run (the rest came from the cache)
    seconds: float = 0.0


def check_tools() -> dict:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise FirmwareError(f"{', '.join(missing)} not found: firmware needs the Arm toolchain and qemu",
                            hint=f"apt-get install {DEBIAN_PACKAGES}")
    version = subprocess.run(["arm-none-eabi-g++", "--version"], capture_output=True, text=True).stdout
    qemu = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout
    return {"compiler": version.splitlines()[0].strip(), "emulator": qemu.splitlines()[0].strip()}


def find_tree(option: str | None, host: bool = False) -> Tree:
    """The TFLite Micro tree of --tflm or EDGEDL_TFLM_ROOT, checked to look like one."""
    given = option or os.environ.get("EDGEDL_TFLM_ROOT")
    if not given:
        raise UsageError("no TFLite Micro tree: pass --tflm DIR or set EDGEDL_TFLM_ROOT", hint=TREE_HINT)
    root = Path(given).expanduser().resolve()
    marker = root / "tensorflow" / "lite" / "micro" / "micro_interpreter.h"
    if not marker.is_file():
        raise FirmwareError(f"{root} is not a TFLite Micro tree (no tensorflow/lite/micro/micro_interpreter.h)",
                            hint=TREE_HINT)
    for include in INCLUDES[1:]:
        if not (root / include).is_dir():
            raise FirmwareError(f"{root} is an incomplete TFLite Micro tree: {include}/ is missing "
                                "(the CMSIS-NN build needs flatbuffers, gemmlowp, ruy, CMSIS 6 and CMSIS-NN)",
                                hint=TREE_HINT)
    listed = root / (HOST_SOURCE_LIST if host else SOURCE_LIST)
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    else:  # a tree made by create_tflm_tree.py without the list: every source in it
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".cc", ".c"))
    sources = [n for n in names if not SKIP.match(n)]
    sources += [g for g in GENERIC if (root / g).is_file() and g not in sources]
    missing = [n for n in sources if not (root / n).is_file()]
    if missing:
        raise FirmwareError(f"{root} is a broken TFLite Micro tree: {len(missing)} listed source(s) missing, "
                            f"e.g. {missing[0]}", hint=TREE_HINT)
    return Tree(root, sources, _fingerprint(root, sources), _commits(root))


def _fingerprint(root: Path, sources: list[str]) -> str:
    """Changes when any source or header of the tree changes (path, size, modification time)."""
    digest = hashlib.sha256(str(root).encode())
    for folder in ("tensorflow", "third_party"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in (".h", ".cc", ".c", ".hpp"):
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update("\n".join(sources).encode())
    return digest.hexdigest()[:16]


def _commits(root: Path) -> dict:
    """The TFLM and CMSIS-NN commits, from the tree's README table (as /work/shared/tflm records them) or git."""
    found = {}
    readme = root / "README.md"
    if readme.is_file():
        for line in readme.read_text(errors="replace").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and re.search(r"[0-9a-f]{40}", cells[2]):
                key = "cmsis_nn" if "CMSIS-NN" in cells[0] else "tflite_micro" if "TFLite Micro" in cells[0] else None
                if key:
                    found[key] = re.search(r"[0-9a-f]{40}", cells[2]).group(0)
    if "tflite_micro" not in found and (root / ".git").exists():
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        if done.returncode == 0:
            found["tflite_micro"] = done.stdout.strip()
    return {"tflite_micro": found.get("tflite_micro", "unknown"), "cmsis_nn": found.get("cmsis_nn", "unknown")}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgedl" / "tflm"


def library(tree: Tree, arch: list[str], compiler: str) -> Library:
    """The cache folder of (tree, core flags, compiler); made if new, its leftovers swept."""
    key = hashlib.sha256(json.dumps([tree.fingerprint, arch, COMMON_FLAGS, CXX_FLAGS, compiler]).encode())
    folder = cache_root() / key.hexdigest()[:20]
    try:
        (folder / "objects").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FirmwareError(f"cannot write the firmware cache {folder}: {exc.strerror or exc}",
                            hint="set XDG_CACHE_HOME to a writable folder") from exc
    sweep_leftovers(folder / "objects")
    info = folder / "library.json"
    if not info.exists():
        write_json(info, {"tree": str(tree.root), "fingerprint": tree.fingerprint, "flags": arch + list(COMMON_FLAGS),
                          "compiler": compiler, "commits": tree.commits})
    return Library(tree, arch, folder)


def _object_name(source: str) -> str:
    return source.replace("/", "__") + ".o"


def _compiler(cxx: bool, arch: list[str], root: Path, include: Path | None = None) -> list[str]:
    """The compiler and flags of one C or C++ source of the library (or the bundle) for ``arch``."""
    host = arch == HOST
    flags = [f for f in COMMON_FLAGS if not (host and f == "-DCMSIS_NN")]  # the host build: reference kernels
    tool = ("g++" if cxx else "gcc") if host else ("arm-none-eabi-g++" if cxx else "arm-none-eabi-gcc")
    return [tool, *arch, *flags, *(CXX_FLAGS if cxx else C_FLAGS), *(f"-I{root / i}" for i in INCLUDES),
            *([f"-I{include}"] if include else [])]


def compile_one(source: Path, out: Path, arch: list[str], root: Path, log: Path, include: Path | None = None,
                pch: Path | None = None) -> None:
    """One translation unit, compiled to a temporary name and renamed into place only if it succeeded.
    A C++ source is compiled with the precompiled headers ``pch`` where given, and as it is if that fails."""
    cxx = source.suffix != ".c"
    command = [*_compiler(cxx, arch, root, include), "-c", str(source)]
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}-", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        done = None
        if cxx and pch is not None:
            done = subprocess.run([command[0], "-include", str(pch), *command[1:], "-o", tmp], capture_output=True,
                                  text=True)
        if done is None or done.returncode != 0:
            done = subprocess.run([*command, "-o", tmp], capture_output=True, text=True)
        if done.returncode != 0:
            with open(log, "a") as handle:
                handle.write(" ".join(command) + "\n" + done.stdout + done.stderr + "\n")
            raise FirmwareError(f"compiling {source.name} failed: {_first_error(done.stderr)}",
                                hint=f"full log: {log}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class PrecompiledHeaders:
    """``PCH_HEADERS`` precompiled with one library's flags: made the first time a round of compiles has
    ``PCH_AFTER`` C++ sources, removed when the link is done. A ``.gch`` of these headers is about
    250 MB, so it is never kept in the cache; a killed run's is swept as a leftover."""

    def __init__(self, lib: Library, log: Path):
        self.lib, self.log = lib, log
        self.header: Path | None = None
        self.tried = False

    def __enter__(self) -> PrecompiledHeaders:
        return self

    def __exit__(self, *exc) -> None:
        if self.header is not None:
            shutil.rmtree(self.header.parent, ignore_errors=True)

    def for_round(self, sources: list[str]) -> Path | None:
        """The header to ``-include`` in this round's C++ sources, made now if the round is large enough."""
        if not self.tried and sum(not s.endswith(".c") for s in sources) >= PCH_AFTER:
            self.tried = True
            self.header = self._make()
        return self.header

    def _make(self) -> Path | None:
        root = self.lib.tree.root
        headers = [h for h in PCH_HEADERS if (root / h).is_file()]
        if not headers:
            return None
        folder = Path(tempfile.mkdtemp(dir=self.lib.folder / "objects", prefix=f".pch.{os.getpid()}-",
                                       suffix=TEMP_SUFFIX))
        header = folder / PCH_NAME
        header.write_text("".join(f'#include "{h}"\n' for h in headers))
        command = [*_compiler(True, self.lib.arch, root), "-x", "c++-header", str(header), "-o", f"{header}.gch"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:  # headers that do not precompile: every source is compiled as it is
            with open(self.log, "a") as handle:
                handle.write(" ".join(command) + "\n" + done.stderr[-4000:] + "\nprecompiled headers skipped\n")
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return header


def _first_error(text: str) -> str:
    lines = [line for line in text.splitlines() if "error" in line]
    return (lines or text.strip().splitlines() or ["no message"])[0].strip()[:200]


def ensure_objects(lib: Library, sources: list[str], log: Path, headers: PrecompiledHeaders | None = None) -> None:
    """Compile those of ``sources`` that are not in the cache yet, in parallel."""
    todo = [s for s in sources if not (lib.folder / "objects" / _object_name(s)).exists()]
    if not todo:
        return
    start = time.perf_counter()
    pch = headers.for_round(todo) if headers else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        jobs = [pool.submit(compile_one, lib.tree.root / s, lib.folder / "objects" / _object_name(s), lib.arch,
                            lib.tree.root, log, pch=pch) for s in todo]
        for job in jobs:
            job.result()
    lib.compiled += todo
    lib.seconds += time.perf_counter() - start


# ---------------------------------------------------------------- linking, with the library grown as needed

_UNDEFINED = re.compile(r"undefined reference to [`'](.+?)'\s*$", re.M)


class SourceIndex:
    """Which library sources may define a symbol the linker found missing (by its name, in the text)."""

    def __init__(self, tree: Tree):
        self.text = {s: (tree.root / s).read_text(errors="replace") for s in tree.sources}

    def candidates(self, symbol: str) -> list[str]:
        name, owner = _parse_symbol(symbol)
        if not name:
            return []
        word = rf"\b{re.escape(owner)}::~?{re.escape(name)}\b" if owner else rf"\b{re.escape(name)}\b"
        # a definition starts in column 0 (TFLM's and CMSIS-NN's style); a call or a declaration does not,
        # or ends with ';' without an initializer
        definition = re.compile(rf"^(?![#/ \t]|return\b|using\b)(?:[^;\n]*=[^\n]*|[^;\n]*){word}[^;\n]*(?:$|=.*$)",
                                re.M)
        for pattern in (definition, re.compile(word)):
            found = [s for s, text in self.text.items() if pattern.search(text)]
            if found:
                return found
        return []


def _parse_symbol(symbol: str) -> tuple[str, str]:
    """(name, owning class or '') of a demangled symbol: 'tflite::MicroInterpreter::Invoke()' ->
    ('Invoke', 'MicroInterpreter'); 'vtable for tflite::MicroAllocator' -> ('MicroAllocator', '')."""
    for prefix in ("vtable for ", "non-virtual thunk to ", "typeinfo for ", "guard variable for "):
        symbol = symbol.removeprefix(prefix)
    depth, plain = 0, []
    for char in symbol:  # drop template arguments and everything from the parameter list on
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        elif char == "(" and depth == 0:
            break
        elif depth == 0:
            plain.append(char)
    parts = [p for p in "".join(plain).strip().split(" ")[-1].split("::") if p]
    if not parts:
        return "", ""
    name = parts[-1].lstrip("~")
    owner = parts[-2] if len(parts) > 1 and parts[-2][:1].isupper() else ""
    return name, owner


def link(lib: Library, objects: list[Path], out: Path, link_flags: list[str], log: Path) -> dict:
    """Link ``objects`` with the library into ``out``, compiling what the linker finds missing."""
    with PrecompiledHeaders(lib, log) as headers:
        return _link(lib, objects, out, link_flags, log, headers)


def _link(lib: Library, objects: list[Path], out: Path, link_flags: list[str], log: Path,
          headers: PrecompiledHeaders) -> dict:
    index = None
    objects_dir = lib.folder / "objects"
    for _ in range(MAX_LINKS):
        archive = out.parent / "libtflm.a"
        members = sorted(objects_dir.glob("*.o"))
        archive.unlink(missing_ok=True)
        if members:
            _run(["ar" if lib.arch == HOST else "arm-none-eabi-ar", "rcs", str(archive), *map(str, members)], log,
                 "archiving the library")
        start = ["g++", *lib.arch] if lib.arch == HOST else ["arm-none-eabi-g++", *lib.arch, "--specs=rdimon.specs"]
        command = [*start, *map(str, objects),
                   *([str(archive)] if members else []),
                   # the host closure links as CMake will (no section gc: every pulled member must resolve)
                   *([] if lib.arch == HOST else ["-Wl,--gc-sections"]), f"-Wl,-Map={out.with_suffix('.map')}",
                   *link_flags, "-o", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return {"members": len(members)}
        missing = sorted(set(_UNDEFINED.findall(done.stdout + done.stderr)))
        with open(log, "a") as handle:
            handle.write(" ".join(command) + "\n" + done.stderr[-20000:] + "\n")
        if not missing:
            raise FirmwareError(f"linking {out.name} failed: {_first_error(done.stderr)}", hint=f"full log: {log}")
        index = index or SourceIndex(lib.tree)
        have = {p.name for p in members}
        wanted = sorted({s for symbol in missing for s in index.candidates(symbol)
                         if _object_name(s) not in have})
        if not wanted:
            raise FirmwareError(f"linking {out.name} failed: undefined {missing[0]} (no source in the TFLite Micro "
                                "tree defines it)", hint=f"full log: {log}")
        ensure_objects(lib, wanted, log, headers)
    raise FirmwareError(f"linking {out.name} did not settle after {MAX_LINKS} rounds", hint=f"full log: {log}")


def compile_app(sources: list[Path], folder: Path, arch: list[str], root: Path, log: Path,
                include: Path | None = None) -> list[Path]:
    """The bundle's own files and edgedl's start-up file, compiled into the run's temporary folder."""
    objects = []
    for source in sources:
        out = folder / (source.stem + ".o")
        compile_one(source, out, arch, root, log, include)
        objects.append(out)
    return objects


def _run(command: list[str], log: Path, what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        with open(log, "a") as handle:
            handle.write(" ".join(command) + "\n" + done.stdout + done.stderr + "\n")
        raise FirmwareError(f"{what} failed: {_first_error(done.stderr)}", hint=f"full log: {log}")
    return done.stdout
