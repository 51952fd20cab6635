"""``edgedl firmware``: build a bundle's ``mcu/`` project for a Cortex-M core and run it on an emulated board.

What runs is the user's own files (``main.cc``, ``model_data.cc``, ``golden_data.cc``), compiled by
arm-none-eabi-g++ against a TFLite Micro tree with CMSIS-NN kernels, linked with newlib's
semihosting (``--specs=rdimon.specs``), and run by ``qemu-system-arm`` on the board that emulates
the core. edgedl adds one start-up file (``edgedl_start.cc``, written in the build folder, never
into the bundle): a vector table at the board's boot address and an instruction counter around
``MicroInterpreter::Invoke`` (the linker's ``--wrap``). The counter reads SysTick under qemu's
``-icount``, which advances the virtual clock by a fixed 2^shift ns per instruction, so SysTick
ticks are instructions scaled by a constant; the start-up file measures that constant on a loop
of a known number of instructions before ``main``. It counts instructions, not cycles: qemu is not
cycle-accurate, and the latency it reports at a board's clock is an estimate under a stated
cycles-per-instruction assumption.

The report (PASS/FAIL and the worst int8 step, the arena used on the 32-bit core, flash and RAM of
the linked image split into model / TFLite Micro with its kernels / C library and start-up, the
instructions per Invoke, the compiler and the TFLM and CMSIS-NN commits) goes into the bundle's
manifest (``firmware``, per core) and its README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import EdgedlError, UsageError
from ..core.files import read_json, write_json, write_text
from ..core.layout import MANIFEST
from . import firmware_build as build
from .firmware_build import FirmwareError


@dataclass(frozen=True)
class Core:
    """A Cortex-M core, the qemu board that emulates it, and that board's memory for the image."""

    cpu: str  # -mcpu
    board: str  # qemu -M
    boot: int  # where the vector table goes (the core's VTOR at reset)
    code_kb: int  # the memory the image is loaded into, from the boot address
    data_at: int | None  # where .data/.bss go when the code memory is flash (None: after the code)
    ram_kb: int  # the RAM that holds .data, .bss, the heap and the stack
    stack_top: int
    kernels: str  # what CMSIS-NN compiles to on this core
    float_abi: str = "soft"  # hard where the kernels need the FP/vector registers (Helium on M55)


CORES = {
    "cortex-m0plus": Core("cortex-m0plus", "microbit", 0x0, 256, 0x20000000, 16, 0x20004000,
                          "CMSIS-NN, plain C (Armv6-M has no DSP extension)"),
    "cortex-m3": Core("cortex-m3", "mps2-an385", 0x0, 4096, None, 4096, 0x20400000,
                      "CMSIS-NN, plain C (Armv7-M has no DSP extension)"),
    "cortex-m4": Core("cortex-m4", "mps2-an386", 0x0, 4096, None, 4096, 0x20400000, "CMSIS-NN, DSP (SIMD) paths"),
    "cortex-m7": Core("cortex-m7", "mps2-an500", 0x0, 4096, None, 4096, 0x20400000, "CMSIS-NN, DSP (SIMD) paths"),
    "cortex-m33": Core("cortex-m33", "mps2-an505", 0x10000000, 4096, None, 4096, 0x38200000,
                       "CMSIS-NN, DSP (SIMD) paths"),
    "cortex-m55": Core("cortex-m55", "mps3-an547", 0x0, 512, None, 512, 0x20080000, "CMSIS-NN, Helium (MVE) paths",
                       "hard"),
}
ALIASES = {"m0plus": "cortex-m0plus", "m0+": "cortex-m0plus", "cortex-m0+": "cortex-m0plus", "m3": "cortex-m3",
           "m4": "cortex-m4", "m7": "cortex-m7", "m33": "cortex-m33", "m55": "cortex-m55"}
ICOUNT_SHIFT = 6  # 64 ns of virtual time per instruction: every board's SysTick (16–32 MHz) ticks at least once
CPI = 1.0  # the cycles-per-instruction assumption of the latency estimate (stated wherever it is shown)
CALIBRATION_LOOPS = 1_000_000  # of two instructions each
STACK_RESERVE = 4096  # bytes the image must leave free for the stack and newlib's heap


def core(name: str) -> Core:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CORES:
        raise UsageError(f"unknown core {name!r}", hint=f"choose from {', '.join(CORES)}")
    return CORES[key]


def arch_flags(c: Core) -> list[str]:
    return [f"-mcpu={c.cpu}", "-mthumb", f"-mfloat-abi={c.float_abi}"]


def start_file(c: Core) -> str:
    """edgedl's start-up: the vector table, a SysTick that counts its wraps, and Invoke wrapped in a counter."""
    return f"""// Written by edgedl for an emulator run; not part of the bundle.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" void _start();
extern "C" int __real__ZN6tflite16MicroInterpreter6InvokeEv(void* self);
static volatile uint32_t wraps;
extern "C" void EdgedlSysTick() {{ wraps = wraps + 1; }}
extern "C" void EdgedlFault() {{ for (;;) {{}} }}
extern "C" void EdgedlReset() {{
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  *reinterpret_cast<volatile uint32_t*>(0xE000ED88u) |= 0xFu << 20;  // CPACR: FPU and Helium on, as SystemInit does
  __asm__ volatile("dsb\\n isb");
#endif
  _start();
}}
extern "C" void (*const edgedl_vectors[16])();  // external: the link keeps it (--undefined)
__attribute__((section(".vectors"), used)) void (*const edgedl_vectors[16])() = {{
    reinterpret_cast<void (*)()>({c.stack_top:#x}u), EdgedlReset, EdgedlFault, EdgedlFault, EdgedlFault, EdgedlFault,
    EdgedlFault, nullptr, nullptr, nullptr, nullptr, EdgedlFault, EdgedlFault, nullptr, EdgedlFault, EdgedlSysTick}};

#define SYST_CSR (*reinterpret_cast<volatile uint32_t*>(0xE000E010u))
#define SYST_RVR (*reinterpret_cast<volatile uint32_t*>(0xE000E014u))
#define SYST_CVR (*reinterpret_cast<volatile uint32_t*>(0xE000E018u))

static uint64_t Ticks() {{
  uint32_t w, v;
  do {{ w = wraps; v = SYST_CVR; }} while (w != wraps);
  return static_cast<uint64_t>(w) * 0x1000000u + (0xFFFFFFu - v);
}}

static uint64_t calibration, invokes, total, fewest = ~0ull, most;

static void Report() {{
  printf("edgedl: calibration %llu ticks for %u instructions\\n", calibration, {2 * CALIBRATION_LOOPS}u);
  printf("edgedl: %llu invokes, ticks total %llu min %llu max %llu\\n", invokes, total, fewest, most);
}}

__attribute__((constructor)) static void EdgedlStart() {{
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7;  // processor clock, interrupt on wrap, enabled
  while (SYST_CVR == 0) {{}}
  uint32_t n = {CALIBRATION_LOOPS}u;
  const uint64_t before = Ticks();
  __asm__ volatile(".syntax unified\\n1: subs %0, %0, #1\\n bne 1b" : "+r"(n));
  calibration = Ticks() - before;
  atexit(Report);
}}

extern "C" int __wrap__ZN6tflite16MicroInterpreter6InvokeEv(void* self) {{
  const uint64_t before = Ticks();
  const int status = __real__ZN6tflite16MicroInterpreter6InvokeEv(self);
  const uint64_t spent = Ticks() - before;
  invokes += 1;
  total += spent;
  if (spent < fewest) fewest = spent;
  if (spent > most) most = spent;
  return status;
}}
"""


def link_flags(c: Core) -> list[str]:
    flags = [f"-Wl,--section-start=.vectors={c.boot:#x}", "-Wl,--undefined=edgedl_vectors", "-Wl,--wrap=_ZN6tflite16MicroInterpreter6InvokeEv"]
    if c.boot:
        flags.append(f"-Wl,-Ttext-segment={c.boot + 0x400:#x}")  # .init and .text after the vectors
    if c.data_at is not None:
        flags.append(f"-Wl,-Tdata={c.data_at:#x}")
    return flags


# ---------------------------------------------------------------- the command

def firmware(source: str | Path, core_name: str | None = None, target: str | None = None, tflm: str | None = None,
             timeout_s: float = 120.0, record: bool = True, say=print) -> dict:
    """Build and run ``source`` (a bundle folder, or its mcu/ folder) for a core; return the report."""
    c, board_info = _choose(core_name, target)
    bundle_dir, mcu_dir = _folders(Path(source))
    tools = build.check_tools()
    tree = build.find_tree(tflm)
    lib = build.library(tree, arch_flags(c), tools["compiler"])
    say(f"building {bundle_dir.name} for {c.cpu} ({c.kernels}) against {tree.root} …")
    log = lib.folder / "last-build.log"
    log.write_text("")
    try:
        memory, run, built_s = _build_and_run(c, lib, mcu_dir, timeout_s, log)
    except FirmwareError as exc:  # the recorded arena is too small on this core (its kernels need more scratch)
        if "AllocateTensors" not in str(exc) or not (record and (bundle_dir / MANIFEST).is_file()):
            raise
        say(f"  the recorded arena is too small on {c.cpu}: searching upward, one emulator run per size …")
        memory, run, built_s = None, {"passed": True, "arena": {}}, 0.0
    refit = None
    if run["passed"] and run["arena"] is not None:
        run["arena"]["minimum"] = _build_and_run(c, lib, mcu_dir, timeout_s, log, probe=True,
                                                 used=run["arena"].get("used"), recorded_passes=memory is not None)
        if record and (bundle_dir / MANIFEST).is_file():
            refit = _refit_arena(bundle_dir, mcu_dir, c, run["arena"])
        if refit or memory is None:  # main.cc now holds the 32-bit arena: build and run what the bundle ships
            if refit:
                say(f"  arena: {refit['from']:,} B -> {refit['to']:,} B (the smallest that passes on {c.cpu}, "
                    f"{run['arena']['minimum']:,} B, + margin); rebuilding to confirm …")
            minimum = run["arena"]["minimum"]
            memory, run, built_s = _build_and_run(c, lib, mcu_dir, timeout_s, log)
            if run["arena"]:
                run["arena"]["minimum"] = minimum
    report = {"core": c.cpu, "board": c.board, "kernels": c.kernels, "passed": run["passed"],
              "max_steps": run["max_steps"], "golden_vectors": run["vectors"], "arena": run["arena"],
              "memory": memory, "instructions": run["instructions"], "estimates": _estimates(run, c, board_info),
              "boards": board_fits(memory, c),
              "build": {"compiler": tools["compiler"], "emulator": tools["emulator"], "flags": lib.arch +
                        list(build.COMMON_FLAGS), "tflm_tree": str(tree.root), "commits": tree.commits,
                        "library": str(lib.folder), "compiled_now": len(lib.compiled), "seconds": round(built_s, 1),
                        "library_seconds": round(lib.seconds, 1)},
              "output": run["output"]}
    if refit:
        report["arena"]["refit"] = refit
    if record and (bundle_dir / MANIFEST).is_file():
        record_in_bundle(bundle_dir, report)
    if target:
        report["target"] = report["boards"][target.lower()] | {"key": target.lower()}
    if run["passed"] and target and not report["target"]["fits"]:
        t = report["target"]
        report["error"] = (f"PASS on {c.cpu}, but the linked image does not fit {t['board']}: RAM headroom "
                           f"{t['ram_headroom'] / 1024:+,.1f} KB, flash headroom {t['flash_headroom'] / 1024:+,.1f} KB")
    if not run["passed"]:
        report["error"] = (f"FAIL on {c.cpu}: the firmware's outputs differ from the golden vectors by up to "
                           f"{run['max_steps']} int8 step(s) (limit {run['limit']}); full log: {log}")
    return report


def _build_and_run(c: Core, lib: build.Library, mcu_dir: Path, timeout_s: float, log: Path, probe: bool = False,
                   used: int | None = None, recorded_passes: bool = True):
    """Compile, link, check the fit and run; ``probe``: main.cc built to take its arena size from the
    command line, and the smallest size that passes searched with one emulator run per size."""
    if probe:
        main_cc = (mcu_dir / "main.cc").read_text()
        recorded = _recorded_arena(main_cc)
        if recorded is None:
            probe_main(main_cc, 0)  # raises: main.cc was edited and names no arena
        # the probe's buffer may grow the arena; on a board whose RAM holds the shipped arena but not twice it,
        # a recorded arena that passes is searched downward with a buffer of its own size
        growths = (PROBE_GROWTH, 1) if recorded_passes else (PROBE_GROWTH,)
        for growth in growths:
            try:
                return _build_and_run_once(c, lib, mcu_dir, timeout_s, log, growth * recorded,
                                           (recorded, used, recorded_passes))
            except FirmwareError as exc:
                if growth == growths[-1] or "the image needs" not in str(exc):
                    raise
    return _build_and_run_once(c, lib, mcu_dir, timeout_s, log)


def _build_and_run_once(c: Core, lib: build.Library, mcu_dir: Path, timeout_s: float, log: Path,
                        capacity: int | None = None, search: tuple | None = None):
    """One build: the bundle's main.cc run once, or (``capacity``) the probe image and its arena search."""
    probe = capacity is not None
    with tempfile.TemporaryDirectory(prefix="edgedl-fw-") as tmp:
        work = Path(tmp)
        write_text(work / "edgedl_start.cc", start_file(c))
        main = mcu_dir / "main.cc"
        if probe:
            main = work / "main.cc"
            write_text(main, probe_main((mcu_dir / "main.cc").read_text(), capacity))
        start = time.perf_counter()
        sources = [main, mcu_dir / "model_data.cc", mcu_dir / "golden_data.cc", work / "edgedl_start.cc"]
        objects = build.compile_app(sources, work, arch_flags(c), lib.tree.root, log, include=mcu_dir)
        image = work / "firmware.elf"
        build.link(lib, objects, image, link_flags(c), log)
        built_s = time.perf_counter() - start
        memory = image_memory(image, work / "firmware.map", c, log)
        _check_fits(memory, c, log)
        if probe:
            return smallest_arena(lambda size: _probe_once(image, c, size, min(timeout_s, PROBE_TIMEOUT_S), log),
                                  *search)
        return memory, run_image(image, c, timeout_s, log), built_s


PROBE_GROWTH = 2  # the probe image's buffer: up to twice the recorded arena (CMSIS-NN's LSTM needed 1.14×)
PROBE_TIMEOUT_S = 60.0  # one size's run; a too-small arena that faults into the handler's loop counts as a no


def probe_main(main_cc: str, capacity: int) -> str:
    """The bundle's main.cc with a ``capacity``-byte buffer and its arena size taken from the command line
    (semihosting argv): one emulator run judges one size. A too-small arena can leave TFLite Micro's
    state broken for a later try in the same run (asserts, hangs), so every size gets a fresh run."""
    if not _ARENA_LINE.search(main_cc) or "tensor_arena, kArenaSize)" not in main_cc:
        raise FirmwareError("main.cc was edited (no `constexpr int kArenaSize` or interpreter line): cannot probe "
                            "its arena", hint="regenerate the bundle with `edgedl bundle`")
    text = main_cc.replace("alignas(16) static uint8_t tensor_arena[kArenaSize];",
                           f"static int edgedl_arena_size = kArenaSize;\nalignas(16) static uint8_t tensor_arena[{capacity}];")
    text = text.replace("tensor_arena, kArenaSize)", "tensor_arena, edgedl_arena_size)")
    return "#define EDGEDL_NO_MAIN 1\n#include <cstdio>\n" + text + """
// edgedl: run the golden check with the arena size given on the command line
int main(int argc, char** argv) {
  if (argc > 1) edgedl_arena_size = atoi(argv[argc - 1]);
  const int failed = RunGoldenCheck();
  printf("edgedl-probe: arena %d %s\\n", edgedl_arena_size, failed ? "fails" : "passes");
  return failed;
}
"""


def smallest_arena(passes, recorded: int, used: int | None = None, recorded_passes: bool | None = None) -> int:
    """The smallest arena (16-byte steps) with which ``passes(size)`` holds, by bisection.

    Starts from the recorded size: when it fails, doubles up to PROBE_GROWTH × it; when it passes, the
    search starts at three quarters of what the run reported in use (a passing size below that lowers
    the floor again)."""
    high, low = recorded, None
    if not (passes(high) if recorded_passes is None else recorded_passes):
        low, high = high, _up16(PROBE_GROWTH * recorded)
        if not passes(high):
            raise FirmwareError(f"even {high:,} B ({PROBE_GROWTH}× the recorded arena) is too small on this core")
    if low is None:
        low = (int(0.75 * used) if used else recorded // 2) & ~15
        while low > 16 and passes(low):
            high, low = low, (low // 2) & ~15
    while high - low > 16:
        mid = ((low + high) // 2) & ~15
        if mid <= low:
            break
        low, high = (low, mid) if passes(mid) else (mid, high)
    return high


def _up16(size: int) -> int:
    return (size + 15) & ~15


def _recorded_arena(main_cc: str) -> int | None:
    """The arena main.cc gives a 32-bit core (the refitted one when a firmware run split it), or None."""
    found = _ARENA_32BIT.search(main_cc) or _ARENA_LINE.search(main_cc)
    return int(found.groups()[-1]) if found else None


def _probe_once(image: Path, c: Core, size: int, timeout_s: float, log: Path) -> bool:
    """One emulator run with ``size`` bytes of arena: did the golden check pass? A fault or hang is a no."""
    command = ["qemu-system-arm", "-M", c.board, "-nographic", "-semihosting-config",
               f"enable=on,target=native,arg=firmware,arg={size}", "-kernel", str(image)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        _append(log, command, f"(no answer within {timeout_s:.0f} s: counted as too small)")
        return False
    _append(log, command, done.stdout + done.stderr)
    return f"edgedl-probe: arena {size} passes" in done.stdout + done.stderr


_ARENA_LINE = re.compile(r"constexpr int kArenaSize = (\d+);")
_ARENA_32BIT = re.compile(r"(#else  // 32-bit[^\n]*\nconstexpr int kArenaSize = )(\d+);")
_HOST_BLOCK = """#if UINTPTR_MAX > 0xFFFFFFFFu  // a 64-bit host (the CMakeLists.txt check): wider pointers and structs
constexpr int kArenaSize = {host};  // mcu-check, x86-64
#else  // 32-bit microcontrollers: the smallest that passed on the emulated cores (edgedl firmware) + margin
constexpr int kArenaSize = {mcu};
#endif"""


def _refit_arena(bundle_dir: Path, mcu_dir: Path, c: Core, arena: dict) -> dict | None:
    """Size main.cc's arena from what 32-bit cores used (the most of every firmware run recorded), with
    mcu-check's margin; None when it already is. The manifest's mcu.arena says where the figure came from."""
    from .mcu import with_margin

    manifest = read_json(bundle_dir / MANIFEST, "bundle manifest")
    runs = {k: v["arena"]["minimum"] for k, v in (manifest.get("firmware") or {}).items()
            if (v.get("arena") or {}).get("minimum")}
    runs[c.cpu] = arena["minimum"]
    target = with_margin(max(runs.values()))
    main_cc = (mcu_dir / "main.cc").read_text()
    refitted = _ARENA_32BIT.search(main_cc)  # an earlier firmware run split the arena by pointer width
    old = _recorded_arena(main_cc)
    if old is None or old == target:
        return None
    if refitted:
        text = _ARENA_32BIT.sub(lambda m: f"{m.group(1)}{target};", main_cc)
    else:  # x86-64 keeps mcu-check's arena (the host CMake build runs there); 32-bit cores get theirs
        text = _ARENA_LINE.sub(_HOST_BLOCK.format(host=old, mcu=target), main_cc, count=1)
    write_text(mcu_dir / "main.cc", text)
    mcu = manifest.get("mcu") or {}
    if "arena" in mcu:
        mcu["arena"].update(with_margin=target, minimum_32bit=max(runs.values()), cores_32bit=sorted(runs),
                            basis="the smallest arena that passes on the 32-bit cores (bisected by edgedl "
                                  "firmware; the most of them), plus the margin; minimum is mcu-check's x86-64 figure")
        if "ram" in mcu:
            mcu["ram"].update(arena=target, total=target + mcu["ram"].get("io_buffers", 0))
        write_json(bundle_dir / MANIFEST, manifest)
    readme = mcu_dir / "README.md"
    if readme.is_file():
        write_text(readme, readme.read_text().replace(f"**{old:,} bytes**", f"**{target:,} bytes** (from a 32-bit "
                                                                          "firmware run, `edgedl firmware`)"))
    return {"from": old, "to": target, "minimum_32bit": max(runs.values()), "cores": sorted(runs)}


def _choose(core_name: str | None, target: str | None):
    from .boards import board, board_core

    if target:
        b = board(target)
        found = board_core(b)
        if found is None:
            raise UsageError(f"{b.name} ({b.chip}) has no Cortex-M core that qemu emulates here",
                             hint="pass --core for the nearest Cortex-M, or check it with `edgedl mcu-check`")
        if core_name and core(core_name).cpu != found[0]:
            raise UsageError(f"--core {core_name} disagrees with --target {target} ({b.chip})")
        return core(found[0]), (b.name, found[1])
    if not core_name:
        raise UsageError("pass --core (one of " + ", ".join(CORES) + ") or --target BOARD")
    return core(core_name), None


def _folders(source: Path) -> tuple[Path, Path]:
    if (source / "mcu" / "main.cc").is_file():
        return source, source / "mcu"
    if (source / "main.cc").is_file() and (source / "model_data.cc").is_file():
        return (source.parent, source) if (source.parent / MANIFEST).is_file() else (source, source)
    if source.suffix == ".tflite":
        raise UsageError(f"{source.name}: firmware builds a bundle's mcu/ project",
                         hint=f"make one first: edgedl bundle {source} --out BUNDLE --target mcu")
    raise UsageError(f"{source} is not a bundle with an mcu/ folder (main.cc, model_data.cc, golden_data.cc)",
                     hint="make one with: edgedl bundle ARTIFACT --out BUNDLE --target mcu")


# ---------------------------------------------------------------- memory of the linked image

_MAP_ENTRY = re.compile(r"^ (?:(\S+)\s+|\s+)0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_MAP_SECTION = re.compile(r"^(\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")


def image_memory(image: Path, map_file: Path, c: Core, log: Path) -> dict:
    """Flash (loaded bytes: code, constants, .data's initial values) and RAM (.data + .bss) of the image,
    split by where each input section came from (the linker's map)."""
    sections = _sections(image, log)
    size = build._run(["arm-none-eabi-size", str(image)], log, "arm-none-eabi-size").splitlines()[-1].split()
    flash = {"model": 0, "tflm": 0, "libc_startup": 0, "app": 0, "golden": 0}
    ram = dict.fromkeys(flash, 0)
    current, lines = None, map_file.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Linker script and memory map")), 0)
    pending = None
    for line in lines[start:]:
        header = _MAP_SECTION.match(line)
        if header:
            current = header.group(1)
            continue
        if line.startswith(" ") and not line.startswith("  ") and len(line.split()) == 1:
            pending = line.strip()  # an input section whose address follows on the next line
            continue
        entry = _MAP_ENTRY.match(line)
        if not entry or current not in sections or not (entry.group(1) or pending):
            pending = None
            continue
        name, pending = entry.group(1) or pending, None
        amount, origin = int(entry.group(3), 16), entry.group(4)
        if ".str1." in name:  # mergeable strings: the map gives their size before merging
            continue
        kind = _category(origin)
        flags = sections[current]
        if flags["loaded"]:
            flash[kind] += amount
        if flags["writable"]:
            ram[kind] += amount
    text, data, bss = (int(v) for v in size[:3])
    return {"flash": {"total": text + data, **flash, "strings_padding": text + data - sum(flash.values())},
            "ram": {"total": data + bss, **ram, "other": data + bss - sum(ram.values())},
            "size": {"text": text, "data": data, "bss": bss},
            "end": max(f["end"] for f in sections.values()),
            "data_end": max((f["end"] for f in sections.values() if f["writable"]), default=0),
            "code_end": max((f["end"] for f in sections.values() if not f["writable"]), default=0),
            "note": "flash = text + data of the linked image; RAM = data + bss (stack and heap not included). "
                    "golden = the test vectors, which an application does not ship; strings_padding = string "
                    "constants (merged across files by the linker, so not attributed) and alignment"}


def _sections(image: Path, log: Path) -> dict:
    out = build._run(["arm-none-eabi-readelf", "-S", "-W", str(image)], log, "arm-none-eabi-readelf")
    sections = {}
    for line in out.splitlines():
        match = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
        if not match or "A" not in match.group(5):
            continue
        name, kind, addr, length, flags = match.groups()
        sections[name] = {"loaded": kind != "NOBITS", "writable": "W" in flags,
                          "end": int(addr, 16) + int(length, 16)}
    return sections


def _category(origin: str) -> str:
    name = Path(origin.split("(")[0]).name
    if name == "model_data.o":
        return "model"
    if name == "golden_data.o":
        return "golden"
    if name in ("main.o", "edgedl_start.o"):
        return "app"
    if name == "libtflm.a":
        return "tflm"
    return "libc_startup"


def _check_fits(memory: dict, c: Core, log: Path) -> None:
    code_limit = c.boot + c.code_kb * 1024
    if c.data_at is None:  # code and data share the board's memory
        if memory["end"] + STACK_RESERVE > code_limit:
            raise FirmwareError(f"the image needs {memory['end'] - c.boot + STACK_RESERVE:,} B with the stack; "
                                f"{c.board} has {c.code_kb} KB for it ({c.cpu})",
                                hint="try a core with more memory (cortex-m4: 4 MB), or a smaller model")
        return
    if memory["code_end"] > code_limit:
        raise FirmwareError(f"the image needs {memory['code_end'] - c.boot:,} B of flash; {c.board} has "
                            f"{c.code_kb} KB ({c.cpu})", hint="try cortex-m4 (4 MB), or a smaller model")
    if memory["data_end"] + STACK_RESERVE > c.data_at + c.ram_kb * 1024:
        raise FirmwareError(f"the image needs {memory['data_end'] - c.data_at + STACK_RESERVE:,} B of RAM with the "
                            f"stack; {c.board} has {c.ram_kb} KB ({c.cpu})",
                            hint="try cortex-m4 (4 MB), or a smaller model")


# ---------------------------------------------------------------- running it

_ARENA = re.compile(r"arena used: (\d+) of (\d+) bytes")
_VERDICT = re.compile(r"(PASS|FAIL): (\d+) golden vectors, worst difference (\d+) step\(s\), limit (\d+)")
_CALIBRATION = re.compile(r"edgedl: calibration (\d+) ticks for (\d+) instructions")
_INVOKES = re.compile(r"edgedl: (\d+) invokes, ticks total (\d+) min (\d+) max (\d+)")


def run_image(image: Path, c: Core, timeout_s: float, log: Path) -> dict:
    command = ["qemu-system-arm", "-M", c.board, "-nographic", "-semihosting", "-icount",
               f"shift={ICOUNT_SHIFT}", "-kernel", str(image)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        _append(log, command, (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes)
                else exc.stdout or "")
        raise FirmwareError(f"the firmware did not finish on {c.board} within {timeout_s:.0f} s (hung, or faulted "
                            "into the fault handler's loop)", hint=f"full log: {log}") from exc
    output = done.stdout + done.stderr
    _append(log, command, output)
    arena, verdict = _ARENA.search(output), _VERDICT.search(output)
    if verdict is None:
        said = next((line for line in output.splitlines() if "FAIL" in line), None)
        what = said.strip() if said else f"the emulator stopped (exit {done.returncode}) without a verdict"
        raise FirmwareError(f"the firmware did not complete its golden check on {c.board}: {what}",
                            hint=f"full log: {log}")
    calibration, invokes = _CALIBRATION.search(output), _INVOKES.search(output)
    instructions = None
    if calibration and invokes and int(calibration.group(1)):
        per_tick = int(calibration.group(2)) / int(calibration.group(1))
        count, total, fewest, most = (int(v) for v in invokes.groups())
        instructions = {"per_invoke": round(total * per_tick / max(count, 1)), "min": round(fewest * per_tick),
                        "max": round(most * per_tick), "invokes": count,
                        "resolution": round(per_tick, 3),
                        "method": f"qemu -icount shift={ICOUNT_SHIFT}, read through SysTick around "
                                  "MicroInterpreter::Invoke, scaled by a counted calibration loop"}
    return {"passed": verdict.group(1) == "PASS", "vectors": int(verdict.group(2)),
            "max_steps": int(verdict.group(3)), "limit": int(verdict.group(4)),
            "arena": {"used": int(arena.group(1)), "recorded": int(arena.group(2))} if arena else None,
            "instructions": instructions, "output": [line for line in output.splitlines() if line.strip()][-6:]}


def _append(log: Path, command: list[str], output: str) -> None:
    with open(log, "a") as handle:
        handle.write(" ".join(command) + "\n" + output + "\n")


def board_fits(memory: dict, c: Core) -> dict:
    """The fit on each board, from this linked image where the board has this core: flash without the
    golden vectors (an application does not ship them), RAM = the image's static data + bss. Boards with
    another core keep mcu-check's estimate; a core qemu cannot emulate (Xtensa) is said to be one."""
    from .boards import BOARDS, board_core, fit

    flash = memory["flash"]["total"] - memory["flash"]["golden"]
    fits = {}
    for key, b in BOARDS.items():
        found = board_core(b)
        if found is None:
            fits[key] = {"board": b.name, "basis": f"not emulated: {b.chip} is not a Cortex-M core"}
        elif found[0] != c.cpu:
            fits[key] = {"board": b.name, "basis": f"no firmware run for its {found[0]} here: mcu-check's estimate "
                                                   "applies"}
        else:
            fits[key] = fit(memory["ram"]["total"], flash, b) | {"basis": f"firmware: the {c.cpu} image, linked"}
    return fits


def _estimates(run: dict, c: Core, board_info) -> dict:
    """Latency at each board's clock whose core this is: instructions × CPI / clock, an estimate."""
    from .boards import BOARDS, board_core

    if not run["instructions"]:
        return {}
    per_invoke = run["instructions"]["per_invoke"]
    clocks = {b.name: found[1] for b in BOARDS.values() if (found := board_core(b)) and found[0] == c.cpu}
    if board_info:
        clocks[board_info[0]] = board_info[1]
    return {"cpi_assumed": CPI, "label": f"estimate: instructions × {CPI} cycle per instruction ÷ clock; qemu counts "
                                         "instructions, not cycles (flash wait states and stalls not modelled)",
            "ms_at": {name: round(per_invoke * CPI / (mhz * 1e3), 4) for name, mhz in sorted(clocks.items())}}


# ---------------------------------------------------------------- the optional check of bundle and pipeline

def firmware_check(bundle_dir: Path, target: str, tflm: str | None = None, say=print) -> dict:
    """The firmware run a bundle for ``target`` gets when a tree and the toolchain are here: a compact
    verdict, or ``skipped`` with the reason. A skipped check is never a pass; a fault is a FAIL with its line."""
    from .boards import board, board_core

    b = board(target)
    reason = _skip_reason(bundle_dir, b, board_core(b), tflm)
    if reason:
        say(f"firmware check skipped: {reason}")
        return {"skipped": reason, "passed": None}
    try:
        report = firmware(bundle_dir, target=target, tflm=tflm, say=say)
    except EdgedlError as exc:
        say(f"✗ firmware: {exc.one_line()}")
        return {"passed": False, "error": exc.one_line()}
    for line in render(report):
        say(line)
    return compact(report)


def _skip_reason(bundle_dir: Path, b, found, tflm: str | None) -> str | None:
    if not (bundle_dir / "mcu" / "main.cc").is_file():
        return f"{bundle_dir.name} has no mcu/ folder"
    if found is None:
        return f"{b.name}'s {b.chip} is not a Cortex-M core; qemu cannot emulate it here"
    missing = [tool for tool in build.TOOLS if shutil.which(tool) is None]
    if missing:
        return f"no {', '.join(missing)} (apt-get install {build.DEBIAN_PACKAGES})"
    if not (tflm or os.environ.get("EDGEDL_TFLM_ROOT")):
        return "no TFLite Micro tree (pass --tflm DIR or set EDGEDL_TFLM_ROOT)"
    return None


def compact(report: dict) -> dict:
    """What a report table shows of a firmware run."""
    memory, arena, ins = report["memory"], report.get("arena") or {}, report.get("instructions") or {}
    estimates = (report.get("estimates") or {}).get("ms_at", {})
    return {"passed": report["passed"], "core": report["core"], "board": report["board"],
            "max_steps": report["max_steps"], "arena": arena.get("recorded"), "arena_minimum": arena.get("minimum"),
            "flash": memory["flash"]["total"], "ram": memory["ram"]["total"],
            "instructions": ins.get("per_invoke"), "estimate_ms": estimates,
            "cpi_assumed": (report.get("estimates") or {}).get("cpi_assumed"), "error": report.get("error")}


def firmware_cell(verdict: dict | None) -> str:
    """The shipped bundle's firmware run on the board's emulated core: PASS with arena, flash and
    instructions (and the latency estimate, labelled), FAIL with its line, or skipped with the reason."""
    if not verdict:
        return "–"
    if verdict.get("skipped"):
        return f"skipped: {verdict['skipped']}"
    if not verdict.get("passed"):
        return f"**FAIL** {verdict.get('error') or ''}".strip()
    estimate = "; ".join(f"≈ {ms:g} ms at {board} (estimate, CPI {verdict.get('cpi_assumed')})"
                         for board, ms in (verdict.get("estimate_ms") or {}).items())
    return (f"PASS on {verdict['core']}, {verdict['max_steps']} step(s); arena {verdict['arena'] or 0:,} B; flash "
            f"{verdict['flash'] / 1024:,.1f} KB; {verdict['instructions'] or 0:,} instructions per inference"
            + (f"; {estimate}" if estimate else ""))


# ---------------------------------------------------------------- the bundle's record

def record_in_bundle(bundle_dir: Path, report: dict) -> None:
    """Add the firmware run to the bundle's manifest (``firmware.<core>``) and its README."""
    manifest_path = bundle_dir / MANIFEST
    if not manifest_path.is_file():
        return
    manifest = read_json(manifest_path, "bundle manifest")
    record = {k: v for k, v in report.items() if k not in ("output",)}
    manifest.setdefault("firmware", {})[report["core"]] = record
    write_json(manifest_path, manifest)
    readme = bundle_dir / "README.md"
    if readme.is_file():
        text = readme.read_text()
        marker = "\n## Firmware on emulated Cortex-M cores (edgedl firmware)\n"
        text = text.split(marker)[0].rstrip("\n") + "\n" + marker + "\n" + "\n".join(
            "- " + line.strip() for r in manifest["firmware"].values() for line in render(r)[:1]) + "\n"
        write_text(readme, text)


def render(report: dict) -> list[str]:
    mem, ins = report["memory"], report["instructions"]
    flash, ram = mem["flash"], mem["ram"]
    arena = report["arena"]
    mark = "PASS" if report["passed"] else "FAIL"
    lines = [f"{mark} on {report['core']} ({report['board']}, {report['kernels']}): {report['golden_vectors']} golden "
             f"vectors, worst difference {report['max_steps']} int8 step(s)"
             + (f"; arena: {arena.get('minimum', 0):,} B smallest that passes, {arena['used']:,} B in use after "
                f"allocation, {arena['recorded']:,} B in main.cc" if arena else ""),
             f"  flash {flash['total']:,} B = model {flash['model']:,} + TFLite Micro and kernels {flash['tflm']:,} + "
             f"C library and start-up {flash['libc_startup']:,} + app {flash['app']:,} + golden vectors "
             f"{flash['golden']:,} + strings and padding {flash['strings_padding']:,}",
             f"  RAM {ram['total']:,} B static (data + bss: arena and app {ram['app']:,}, TFLite Micro {ram['tflm']:,}, "
             f"C library {ram['libc_startup']:,}, other {ram['other']:,}; stack and heap not included)"]
    if ins:
        lines.append(f"  {ins['per_invoke']:,} instructions per Invoke (min {ins['min']:,}, max {ins['max']:,}, "
                     f"{ins['invokes']} invokes; ±{ins['resolution']} per reading)")
        for name, ms in report["estimates"].get("ms_at", {}).items():
            lines.append(f"  ≈ {ms:g} ms per inference at {name}'s clock (estimate, CPI {report['estimates']['cpi_assumed']} "
                         "assumed)")
    for key, fit in report.get("boards", {}).items():
        if "fits" in fit:
            lines.append(f"  {'✓' if fit['fits'] else '✗'} {key:<12} {fit['board']}: RAM headroom "
                         f"{fit['ram_headroom'] / 1024:+,.1f} KB, flash headroom {fit['flash_headroom'] / 1024:+,.1f} KB "
                         "(from the linked image)")
    b = report["build"]
    lines.append(f"  {b['compiler']}; TFLM {b['commits']['tflite_micro'][:12]}, CMSIS-NN {b['commits']['cmsis_nn'][:12]}; "
                 f"built in {b['seconds']} s ({b['compiled_now']} library sources compiled now, cache {b['library']})")
    return lines


# ---------------------------------------------------------------- the host build, through the bundle's CMakeLists.txt

def host_cmake(source: str | Path, tflm: str | None = None, timeout_s: float = 120.0, say=print) -> dict:
    """Build the bundle's mcu/ folder on this machine the way its README tells a user (CMake, g++,
    reference kernels), against a TFLite Micro library edgedl compiles into the cache, and run it."""
    import shutil

    bundle_dir, mcu_dir = _folders(Path(source))
    missing = [tool for tool in ("g++", "gcc", "ar", "cmake") if shutil.which(tool) is None]
    if missing:
        raise FirmwareError(f"{', '.join(missing)} not found: the host build needs them", hint="apt-get install g++ cmake")
    tree = build.find_tree(tflm, host=True)
    compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lib = build.library(tree, build.HOST, compiler)
    log = lib.folder / "last-build.log"
    log.write_text("")
    say(f"building {bundle_dir.name}'s CMake project on this machine (g++, reference kernels) …")
    with tempfile.TemporaryDirectory(prefix="edgedl-host-") as tmp:
        work = Path(tmp)
        sources = [mcu_dir / "main.cc", mcu_dir / "model_data.cc", mcu_dir / "golden_data.cc"]
        objects = build.compile_app(sources, work, build.HOST, tree.root, log)
        build.link(lib, objects, work / "closure", [], log)  # grows the library to what the model needs
        started = time.perf_counter()
        build._run(["cmake", "-S", str(mcu_dir), "-B", str(work / "cmake"), f"-DTFLM_ROOT={tree.root}",
                    f"-DTFLM_LIB={work / 'libtflm.a'}"], log, "cmake (configure)")
        build._run(["cmake", "--build", str(work / "cmake")], log, "cmake --build")
        seconds = time.perf_counter() - started
        try:
            done = subprocess.run([str(work / "cmake" / "golden_check")], capture_output=True, text=True,
                                  timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise FirmwareError(f"the host golden check did not finish within {timeout_s:.0f} s",
                                hint=f"full log: {log}") from exc
    _append(log, ["golden_check"], done.stdout + done.stderr)
    verdict = _VERDICT.search(done.stdout + done.stderr)
    if verdict is None:
        raise FirmwareError(f"the host golden check stopped (exit {done.returncode}) without a verdict",
                            hint=f"full log: {log}")
    return {"passed": verdict.group(1) == "PASS" and done.returncode == 0, "max_steps": int(verdict.group(3)),
            "exit": done.returncode, "compiler": compiler, "cmake_seconds": round(seconds, 1),
            "library": str(lib.folder), "compiled_now": len(lib.compiled),
            "output": (done.stdout + done.stderr).strip().splitlines()[-2:]}
