#!/usr/bin/env bash
# setup_rpi_userland.sh CACHE_DIR PROFILE
#
# Prepares an emulated Raspberry Pi OS 64-bit userland (Debian bookworm
# arm64, CPython 3.11) on an x86_64 Linux host, for use with qemu-user.
# No root filesystem is built: the arm64 .deb files that python3.11 needs
# are resolved by a private, throw-away apt configuration (the host's apt
# state and dpkg architectures are left alone) and simply unpacked.
#
#   PROFILE   rpi4 (Cortex-A72, qemu -cpu cortex-a72)
#             rpi5 (Cortex-A76, qemu -cpu cortex-a76)
#
# Layout of CACHE_DIR:
#   root/                   unpacked arm64 packages (shared by all profiles)
#   sysroot-<profile>/      what qemu -L points at: symlinks into root/ plus
#                           a profile-specific proc/cpuinfo
#   site-litert/            ai-edge-litert + numpy 2 (aarch64 wheels)
#   site-tflite-runtime/    tflite-runtime 2.14 + numpy<2 (aarch64 wheels)
#   apt/  wheels/           download caches
#   stamps/                 one stamp per phase; a phase whose inputs did not
#                           change is skipped, so a second run is a no-op
#   timings.log             per-phase wall-clock times of every run
#
# Environment overrides (all optional):
#   RPI_EMU_DEBIAN_MIRROR    default http://deb.debian.org/debian
#   RPI_EMU_SECURITY_MIRROR  default http://deb.debian.org/debian-security
#   RPI_EMU_SUITE            default bookworm (Raspberry Pi OS 12 base)
#   RPI_EMU_KEYRING          default /usr/share/keyrings/debian-archive-keyring.gpg
#   RPI_EMU_EXTRA_DEBS       extra arm64 packages to unpack into root/
#   RPI_EMU_RUNTIMES         which site folders to build (default "litert tflite-runtime")
#   RPI_EMU_LITERT_REQS      default "ai-edge-litert==2.3.0 numpy>=2"
#   RPI_EMU_TFLITE_REQS      default "tflite-runtime==2.14.0 numpy<2"
#   RPI_EMU_HOST_PYTHON      host interpreter that runs pip (default python3)
#   RPI_EMU_SKIP_SMOKE=1     skip the final emulated import test
#   RPI_EMU_PRUNE=1          delete the download caches (apt/, wheels/) once
#                            ready: ~80 MB less to store, but a changed input
#                            then downloads again
set -Eeuo pipefail

die()  { echo "setup_rpi_userland: ERROR: $*" >&2; exit 1; }
info() { echo "setup_rpi_userland: $*" >&2; }

[ $# -eq 2 ] || die "usage: $0 CACHE_DIR PROFILE(rpi4|rpi5)"
CACHE_DIR=$1
PROFILE=$2
case "$PROFILE" in
  rpi4|rpi5) ;;
  *) die "unknown PROFILE '$PROFILE' (expected rpi4 or rpi5)" ;;
esac
[ "$(uname -m)" = x86_64 ] || info "warning: host is $(uname -m), this was written for x86_64"

MIRROR=${RPI_EMU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${RPI_EMU_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=${RPI_EMU_SUITE:-bookworm}
KEYRING=${RPI_EMU_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
DEBS="python3.11-minimal libpython3.11-stdlib libstdc++6 ${RPI_EMU_EXTRA_DEBS:-}"
RUNTIMES=${RPI_EMU_RUNTIMES:-litert tflite-runtime}
LITERT_REQS=${RPI_EMU_LITERT_REQS:-ai-edge-litert==2.3.0 numpy>=2}
TFLITE_REQS=${RPI_EMU_TFLITE_REQS:-tflite-runtime==2.14.0 numpy<2}
HOST_PYTHON=${RPI_EMU_HOST_PYTHON:-python3}
# glibc of bookworm is 2.36: every manylinux tag up to 2_36 is installable.
PIP_PLATFORMS=(--platform manylinux2014_aarch64)
for n in $(seq 17 36); do PIP_PLATFORMS+=(--platform "manylinux_2_${n}_aarch64"); done

mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
STAMPS=$CACHE_DIR/stamps
mkdir -p "$STAMPS"

# One setup at a time per cache (parallel CI jobs sharing a cache).
exec 9>"$CACHE_DIR/.lock"
flock 9 || die "cannot lock $CACHE_DIR/.lock"

T_ALL=$(date +%s.%N)
timed() {  # timed NAME CMD...  -- runs CMD, logs its wall time
  local name=$1; shift
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" || rc=$?
  t1=$(date +%s.%N)
  local dt; dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  info "phase $name: ${dt}s$([ $rc -eq 0 ] || echo " (FAILED rc=$rc)")"
  echo "$(date -u +%FT%TZ) $PROFILE $name ${dt}s rc=$rc" >> "$CACHE_DIR/timings.log"
  return $rc
}
# stamp_ok NAME KEY: true when phase NAME already ran with the same inputs.
stamp_ok()    { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_write() { printf '%s' "$2" > "$STAMPS/$1.tmp" && mv -f "$STAMPS/$1.tmp" "$STAMPS/$1"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# Byte-compile a tree once, so that emulated runs do not recompile every
# imported module (Debian ships the stdlib without .pyc: its postinst makes
# them). .pyc files are portable across 3.11.x, so a host 3.11 does it fast;
# otherwise the emulated interpreter does it.
compile_tree() {
  local dir=$1
  if [ "$("$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = 3.11 ]; then
    "$HOST_PYTHON" -m compileall -q -j0 "$dir" >/dev/null 2>&1 || true
  else
    env -u PYTHONDONTWRITEBYTECODE qemu-aarch64-static -cpu cortex-a72 -L "$CACHE_DIR/root" \
      "$CACHE_DIR/root/usr/bin/python3.11" -m compileall -q "$dir" >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------- qemu
phase_qemu() {
  if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
    command -v apt-get >/dev/null || die "qemu-aarch64-static missing and no apt-get to install it"
    info "installing qemu-user-static with apt-get"
    as_root apt-get update -q >/dev/null 2>&1 || die "apt-get update failed: is the Debian registry reachable?"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null \
      || die "apt-get install qemu-user-static failed (registry unreachable?)"
  fi
  local cpus; cpus=$(qemu-aarch64-static -cpu help 2>&1 || true)   # exits 1 by design
  grep -q "Available CPUs" <<<"$cpus" || die "qemu-aarch64-static does not run: $cpus"
  for c in cortex-a72 cortex-a76; do
    grep -qw -- "$c" <<<"$cpus" || die "this qemu ($(qemu-aarch64-static --version | head -1)) has no '$c' CPU model"
  done
}

# ---------------------------------------------------------- arm64 debs
APT=$CACHE_DIR/apt
apt_opts() {
  printf '%s\n' \
    -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64" \
    -o "Dir::State=$APT/state" -o "Dir::State::Lists=$APT/state/lists" \
    -o "Dir::State::status=$APT/state/status" -o "Dir::Cache=$APT/cache" \
    -o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=-" \
    -o "Dir::Etc::preferencesparts=$APT/preferences.d" -o "Dir::Etc::preferences=$APT/preferences" \
    -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" \
    -o "APT::Install-Recommends=false" -o "APT::Install-Suggests=false" \
    -o "Acquire::Retries=3" -o "Acquire::http::Timeout=30"
}
phase_debs() {
  command -v apt-get >/dev/null || die "apt-get is needed to resolve the arm64 packages"
  command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack the arm64 packages"
  [ -r "$KEYRING" ] || die "Debian archive keyring $KEYRING not found (apt-get install debian-archive-keyring, or set RPI_EMU_KEYRING)"
  mkdir -p "$APT/state/lists/partial" "$APT/cache/archives/partial" "$APT/preferences.d"
  : > "$APT/state/status"           # empty dpkg status: resolve the full closure
  : > "$APT/preferences"
  cat > "$APT/sources.list" <<EOF
deb [arch=arm64 signed-by=$KEYRING] $MIRROR $SUITE main
deb [arch=arm64 signed-by=$KEYRING] $MIRROR $SUITE-updates main
deb [arch=arm64 signed-by=$KEYRING] $SEC_MIRROR $SUITE-security main
EOF
  local -a opts; mapfile -t opts < <(apt_opts)
  local log=$APT/last-apt.log
  if ! apt-get "${opts[@]}" update >"$log" 2>&1 || grep -qE '^(Err:|E:|W: Failed to fetch)' "$log"; then
    cat "$log" >&2
    die "cannot fetch arm64 package lists for '$SUITE' from $MIRROR / $SEC_MIRROR (Debian registry unreachable?)"
  fi
  # shellcheck disable=SC2086
  if ! apt-get "${opts[@]}" install -y -q --download-only $DEBS >"$log" 2>&1; then
    cat "$log" >&2
    die "apt-get could not download the arm64 packages: $DEBS"
  fi
  # The closure apt resolves for an empty system is exactly what we unpack
  # (older versions left in the archive cache by earlier runs are ignored).
  # "apt-get -s" prints: Inst NAME (VERSION SUITE [ARCH])
  local -a want; mapfile -t want < <(apt-get "${opts[@]}" -s install $DEBS 2>/dev/null \
      | awk '$1=="Inst"{v=$3; sub(/^\(/,"",v); gsub(/:/,"%3a",v); a="";
               for(i=4;i<=NF;i++) if($i ~ /^\[[a-z0-9]+\]\)$/) a=substr($i,2,length($i)-3);
               print $2"_"v"_"a".deb"}')
  [ ${#want[@]} -gt 0 ] || die "could not list the resolved arm64 packages"
  local tmp=$CACHE_DIR/root.tmp
  rm -rf "$tmp"; mkdir -p "$tmp"
  local deb n=0
  for deb in "${want[@]}"; do
    deb=$(basename "$deb")
    [ -f "$APT/cache/archives/$deb" ] || die "expected $deb in the apt cache"
    dpkg-deb -x "$APT/cache/archives/$deb" "$tmp" || die "dpkg-deb -x $deb failed"
    n=$((n+1))
  done
  [ -x "$tmp/usr/bin/python3.11" ] || die "python3.11 missing after unpacking"
  [ -e "$tmp/lib/ld-linux-aarch64.so.1" ] || die "arm64 dynamic loader missing after unpacking"
  printf '%s\n' "${want[@]}" > "$tmp/.rpi_emu_packages"
  rm -rf "$CACHE_DIR/root"; mv "$tmp" "$CACHE_DIR/root"
  compile_tree "$CACHE_DIR/root/usr/lib/python3.11"
  info "unpacked $n arm64 packages into $CACHE_DIR/root"
}

# ------------------------------------------------------ profile sysroot
cpuinfo_text() {  # what a Raspberry Pi OS 64-bit kernel shows, 4 cores
  local part variant revision features hw rev model i
  case "$1" in
    rpi4) part=0xd08 variant=0x0 revision=3 hw=BCM2835 rev=c03114
          model="Raspberry Pi 4 Model B Rev 1.4"
          features="fp asimd evtstrm crc32 cpuid" ;;
    rpi5) part=0xd0b variant=0x4 revision=1 hw=BCM2835 rev=d04170
          model="Raspberry Pi 5 Model B Rev 1.0"
          features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  esac
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$i" "$features" "$variant" "$part" "$revision"
  done
  printf 'Hardware\t: %s\nRevision\t: %s\nSerial\t\t: 10000000deadbeef\nModel\t\t: %s\n' "$hw" "$rev" "$model"
}
phase_sysroot() {
  local sr=$CACHE_DIR/sysroot-$PROFILE tmp=$CACHE_DIR/sysroot-$PROFILE.tmp e
  rm -rf "$tmp"; mkdir -p "$tmp/proc"
  # qemu -L looks every absolute path up under the sysroot first: link the
  # shared userland in, and shadow /proc/cpuinfo only (the rest of /proc
  # still comes from the host because those paths do not exist here).
  for e in "$CACHE_DIR"/root/*; do ln -s "../root/$(basename "$e")" "$tmp/$(basename "$e")"; done
  cpuinfo_text "$PROFILE" > "$tmp/proc/cpuinfo"
  rm -rf "$sr"; mv "$tmp" "$sr"
}

# --------------------------------------------------------------- wheels
phase_site() {  # phase_site RUNTIME REQS...
  local rt=$1; shift
  local wh=$CACHE_DIR/wheels/$rt site=$CACHE_DIR/site-$rt tmp=$CACHE_DIR/site-$rt.tmp log
  mkdir -p "$wh"; log=$wh/last-pip.log
  "$HOST_PYTHON" -m pip --version >/dev/null 2>&1 || die "'$HOST_PYTHON -m pip' does not work (set RPI_EMU_HOST_PYTHON)"
  local -a common=(--only-binary=:all: "${PIP_PLATFORMS[@]}" --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
                   --disable-pip-version-check --no-input --progress-bar off)
  if ! "$HOST_PYTHON" -m pip download "${common[@]}" -d "$wh" "$@" >"$log" 2>&1; then
    grep -v 'is ignored: it is neither a file nor a directory' "$log" | tail -25 >&2
    die "pip download of aarch64 wheels for '$*' failed (PyPI unreachable, or no cp311 manylinux aarch64 wheel)"
  fi
  rm -rf "$tmp"
  if ! "$HOST_PYTHON" -m pip install "${common[@]}" --no-index --find-links "$wh" --no-compile --target "$tmp" "$@" >"$log" 2>&1; then
    tail -25 "$log" >&2
    die "pip install --target of the downloaded wheels failed for '$*'"
  fi
  rm -rf "$tmp/bin"   # console scripts carry host shebangs; not usable anyway
  rm -rf "$site"; mv "$tmp" "$site"
  compile_tree "$site"
}

# ---------------------------------------------------------------- smoke
phase_smoke() {
  local rt=$1 mod
  case "$rt" in litert) mod=ai_edge_litert.interpreter ;; tflite-runtime) mod=tflite_runtime.interpreter ;; *) return 0 ;; esac
  local out
  out=$(env -u LD_PRELOAD -u LD_LIBRARY_PATH -u PYTHONHOME -u PYTHONSTARTUP PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
        PYTHONPATH="$CACHE_DIR/site-$rt" \
        qemu-aarch64-static -cpu "$QEMU_CPU" -L "$CACHE_DIR/sysroot-$PROFILE" "$CACHE_DIR/root/usr/bin/python3.11" -c \
        "import platform, numpy, $mod as m; print(platform.machine(), platform.python_version(), 'numpy', numpy.__version__, m.__name__)" 2>&1) \
    || { echo "$out" >&2; die "emulated import of $mod failed"; }
  info "smoke $PROFILE/$rt: $out"
}

case "$PROFILE" in rpi4) QEMU_CPU=cortex-a72 ;; rpi5) QEMU_CPU=cortex-a76 ;; esac

timed qemu phase_qemu

DEBS_KEY="v2|$SUITE|$MIRROR|$SEC_MIRROR|$(echo $DEBS)"
if stamp_ok root "$DEBS_KEY" && [ -x "$CACHE_DIR/root/usr/bin/python3.11" ]; then
  info "phase debs: cached"
else
  timed debs phase_debs
  stamp_write root "$DEBS_KEY"
fi

SR_KEY="v1|$PROFILE|$(cat "$STAMPS/root")|$(cpuinfo_text "$PROFILE" | md5sum | cut -c1-32)"
if stamp_ok "sysroot-$PROFILE" "$SR_KEY" && [ -f "$CACHE_DIR/sysroot-$PROFILE/proc/cpuinfo" ]; then
  info "phase sysroot-$PROFILE: cached"
else
  timed "sysroot-$PROFILE" phase_sysroot
  stamp_write "sysroot-$PROFILE" "$SR_KEY"
fi

for rt in $RUNTIMES; do
  case "$rt" in
    litert) reqs=$LITERT_REQS ;;
    tflite-runtime) reqs=$TFLITE_REQS ;;
    *) die "unknown runtime '$rt' in RPI_EMU_RUNTIMES" ;;
  esac
  key="v2|$reqs"
  if stamp_ok "site-$rt" "$key" && [ -d "$CACHE_DIR/site-$rt" ]; then
    info "phase site-$rt: cached"
  else
    # shellcheck disable=SC2086
    timed "site-$rt" phase_site "$rt" $reqs
    stamp_write "site-$rt" "$key"
    rm -f "$STAMPS/smoke-"*"-$rt"
  fi
  if [ "${RPI_EMU_SKIP_SMOKE:-0}" != 1 ] && ! stamp_ok "smoke-$PROFILE-$rt" "$SR_KEY|$key"; then
    timed "smoke-$PROFILE-$rt" phase_smoke "$rt"
    stamp_write "smoke-$PROFILE-$rt" "$SR_KEY|$key"
  fi
done

stamp_write "ready-$PROFILE" "$SR_KEY|$RUNTIMES"
if [ "${RPI_EMU_PRUNE:-0}" = 1 ]; then rm -rf "$CACHE_DIR/apt" "$CACHE_DIR/wheels"; info "pruned download caches"; fi
info "ready: $CACHE_DIR ($PROFILE, qemu -cpu $QEMU_CPU) in $(awk -v a="$T_ALL" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s"
