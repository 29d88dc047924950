#!/usr/bin/env bash
# Build the Linux installer: a one-folder PyInstaller bundle (dist/tunedesk/) and its archive
# dist/tunedesk-<version>-linux-<arch>.tar.gz. From a fresh clone:
#   bash packaging/build_linux.sh
# It installs the app into ./.venv if needed (packaging/install.sh: PyTorch's CPU build), adds
# PyInstaller (the project's `packaging` extra), runs packaging/tunedesk.spec, checks that no CUDA
# library went in, packs the folder and reports the sizes.
# Options (environment): SKIP_TAR=1 (folder only), PYINSTALLER_CLEAN=1 (ignore PyInstaller's cache).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [ ! -x "$PY" ] || ! "$PY" -c "import torch, desktop" >/dev/null 2>&1; then
  bash packaging/install.sh
fi
cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
if [ -n "$cuda" ]; then
  cat >&2 <<MSG
build_linux.sh makes the CPU build, but .venv has PyTorch built for CUDA $cuda (its CUDA libraries
are several GB). Reinstall the CPU build first:
  rm -rf .venv && TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash packaging/install.sh
MSG
  exit 1
fi
if ! "$PY" -c "import PyInstaller" >/dev/null 2>&1; then
  echo "installing PyInstaller (the packaging extra)..."
  "$PY" -m pip install -q -e ".[packaging]" 2>&1 | grep -v -e "is ignored: it is neither a file nor a directory" -e "^$" || true
fi

# Qt's xcb plugin (the window on X11 desktops) links a dozen small X libraries. PyInstaller bundles
# the ones found here, so the bundle works on desktops that lack some (libxcb-cursor0 is missing on
# many): every one must be found on the build machine. On Debian/Ubuntu as root, install them.
qt=$("$PY" -c "import PySide6, os; print(os.path.join(os.path.dirname(PySide6.__file__), 'Qt'))")
missing_xcb() { ldd "$qt/plugins/platforms/libqxcb.so" "$qt/lib/libQt6XcbQpa.so.6" | awk '/not found/ {print $1}' | sort -u; }
missing=$(missing_xcb)
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Debian's package of libNAME.so.N is libNAMEN, or libNAME-N when NAME ends in a digit (policy 8.1)
  pkgs=$(echo "$missing" | "$PY" -c "
import re, sys
for so in sys.stdin.read().split():
    name, n = re.match(r'(.+)\.so\.(\d+)$', so).groups()
    print((name + ('-' if name[-1].isdigit() else '') + n).lower())")
  echo "installing the X libraries Qt's xcb plugin needs: $(echo $pkgs)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  missing=$(missing_xcb)
fi
if [ -n "$missing" ]; then
  echo "Qt's xcb plugin needs libraries this machine lacks: $(echo $missing)" >&2
  echo "install them (Debian/Ubuntu: libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 ...), or set" >&2
  echo "ALLOW_MISSING_XCB=1 to build a bundle that needs them on the user's machine" >&2
  [ -n "${ALLOW_MISSING_XCB:-}" ] || exit 1
fi

version=$("$PY" -c "import backends; print(backends.__version__)")
arch=$(uname -m)
args=(--noconfirm --distpath dist --workpath build/pyinstaller)
if [ -n "${PYINSTALLER_CLEAN:-}" ]; then args+=(--clean); fi
echo "building dist/tunedesk with PyInstaller $("$PY" -m PyInstaller --version) (takes 10-20 minutes on 2 cores)..."
mkdir -p build
start=$(date +%s)
# nice: the build is long and CPU-bound; keep the machine usable meanwhile.
nice -n 19 "$PY" -m PyInstaller "${args[@]}" packaging/tunedesk.spec 2>build/pyinstaller.log || {
  tail -40 build/pyinstaller.log >&2
  echo "PyInstaller failed: full log in build/pyinstaller.log" >&2
  exit 1
}
echo "PyInstaller done in $(( $(date +%s) - start )) s (log: build/pyinstaller.log)"

cuda_libs=$(find dist/tunedesk \( -iname 'libcuda*' -o -iname 'libcudnn*' -o -iname 'libcublas*' \
  -o -iname 'libnccl*' -o -iname 'libnvrtc*' -o -iname 'libcusparse*' -o -iname 'libcufft*' \) -print)
if [ -n "$cuda_libs" ]; then
  echo "CUDA libraries found in the CPU bundle:" >&2
  echo "$cuda_libs" >&2
  exit 1
fi
echo "no CUDA libraries in the bundle"

if [ -z "${SKIP_TAR:-}" ]; then
  archive="dist/tunedesk-${version}-linux-${arch}.tar.gz"
  echo "packing $archive..."
  tar -C dist -cf - tunedesk | nice -n 19 gzip -6 >"$archive.tmp"
  mv "$archive.tmp" "$archive"
  echo "archive: $archive $(du -h "$archive" | cut -f1) ($(stat -c %s "$archive") bytes)"
fi
echo "bundle size: dist/tunedesk $(du -sh dist/tunedesk | cut -f1) ($(du -sb dist/tunedesk | cut -f1) bytes, $(find dist/tunedesk -type f | wc -l) files)"
echo "run it: dist/tunedesk/tunedesk (the app) or dist/tunedesk/tunedesk --help (the command line)"
