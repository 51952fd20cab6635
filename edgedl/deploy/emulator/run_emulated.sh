#!/usr/bin/env bash
# run_emulated.sh CACHE_DIR PROFILE RUNTIME script.py [args...]
#
# Runs script.py with the emulated Raspberry Pi OS 64-bit CPython 3.11
# (Debian bookworm arm64 under qemu-user) prepared by setup_rpi_userland.sh.
#
#   PROFILE   rpi4 -> qemu -cpu cortex-a72, /proc/cpuinfo of a Pi 4 (0xd08)
#             rpi5 -> qemu -cpu cortex-a76, /proc/cpuinfo of a Pi 5 (0xd0b)
#   RUNTIME   litert          ai-edge-litert + numpy 2   (CACHE_DIR/site-litert)
#             tflite-runtime  tflite-runtime 2.14 + numpy<2 (CACHE_DIR/site-tflite-runtime)
#             none            bare interpreter, no site folder
#
# Runs setup_rpi_userland.sh first when the cache is not ready (it is a
# no-op on a ready cache). The exit status is the script's.
#
# Environment:
#   RPI_EMU_QEMU_CPU=<model>  override the CPU model (e.g. "max" to reproduce
#                             the wrong-int8 trap; expect wrong results)
#   RPI_EMU_PYTHONPATH=<dirs> extra entries put after the site folder
#   RPI_EMU_PYTHON_ARGS="..." options for the interpreter itself (e.g. "-X faulthandler")
# The host's PYTHONPATH, PYTHONHOME, LD_PRELOAD and LD_LIBRARY_PATH are not
# passed on: they point at x86_64 files.
set -Eeuo pipefail
die() { echo "run_emulated: ERROR: $*" >&2; exit 2; }

[ $# -ge 4 ] || die "usage: $0 CACHE_DIR PROFILE(rpi4|rpi5) RUNTIME(litert|tflite-runtime|none) script.py [args...]"
CACHE_DIR=$1 PROFILE=$2 RUNTIME=$3
shift 3
case "$PROFILE" in
  rpi4) CPU=cortex-a72 ;;
  rpi5) CPU=cortex-a76 ;;
  *) die "unknown PROFILE '$PROFILE' (rpi4|rpi5)" ;;
esac
case "$RUNTIME" in litert|tflite-runtime|none) ;; *) die "unknown RUNTIME '$RUNTIME' (litert|tflite-runtime|none)" ;; esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
site=$CACHE_DIR/site-$RUNTIME
if [ ! -f "$CACHE_DIR/stamps/ready-$PROFILE" ] || [ ! -x "$CACHE_DIR/root/usr/bin/python3.11" ] \
   || { [ "$RUNTIME" != none ] && [ ! -d "$site" ]; }; then
  echo "run_emulated: cache not ready for $PROFILE/$RUNTIME, running setup" >&2
  "$HERE/setup_rpi_userland.sh" "$CACHE_DIR" "$PROFILE" >&2
fi
[ "$RUNTIME" = none ] || [ -d "$site" ] || die "$site missing (is '$RUNTIME' in RPI_EMU_RUNTIMES?)"

if [ -n "${RPI_EMU_QEMU_CPU:-}" ] && [ "$RPI_EMU_QEMU_CPU" != "$CPU" ]; then
  echo "run_emulated: WARNING: qemu -cpu $RPI_EMU_QEMU_CPU instead of $CPU for $PROFILE;" \
       "results may be wrong or crash (see docs/DEPLOY.md: qemu's default CPU picks kernels no Pi has)" >&2
  CPU=$RPI_EMU_QEMU_CPU
fi

pp=""
[ "$RUNTIME" = none ] || pp=$site
[ -z "${RPI_EMU_PYTHONPATH:-}" ] || pp=${pp:+$pp:}$RPI_EMU_PYTHONPATH

envset=(PYTHONNOUSERSITE=1)
[ -z "$pp" ] || envset+=("PYTHONPATH=$pp")
read -r -a pyargs <<<"${RPI_EMU_PYTHON_ARGS:-}"
exec env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u LD_PRELOAD -u LD_LIBRARY_PATH "${envset[@]}" \
  qemu-aarch64-static -cpu "$CPU" -L "$CACHE_DIR/sysroot-$PROFILE" \
  "$CACHE_DIR/root/usr/bin/python3.11" ${pyargs[@]+"${pyargs[@]}"} "$@"
