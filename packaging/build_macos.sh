#!/usr/bin/env bash
# Build the macOS installer: dist/TuneDesk.app (Apple silicon, arm64: PyTorch with MPS, and MLX; no
# CUDA) in a disk image dist/TuneDesk-<version>-macos-arm64.dmg. On a Mac with Apple silicon, from
# a fresh clone:
#   bash packaging/build_macos.sh
# It installs the app into ./.venv if needed (packaging/install.sh: PyPI's torch, mlx and mlx-lm),
# adds PyInstaller (the project's `packaging` extra), runs packaging/tunedesk.spec, puts MLX's
# Metal library where MLX looks for it, signs, checks the bundled executable, makes the .dmg and
# reports the sizes.
# Options (environment):
#   TUNEDESK_CODESIGN_IDENTITY="Developer ID Application: ..."  sign with that identity (hardened
#     runtime) instead of ad hoc; TUNEDESK_NOTARY_PROFILE=<keychain profile of `xcrun notarytool
#     store-credentials`> then also notarizes and staples the .dmg. Without them the app is signed
#     ad hoc: it runs on the build Mac; on another Mac the user opens it with right-click > Open
#     once (Gatekeeper), see packaging/README.md.
#   SKIP_DMG=1 (the .app only), PYINSTALLER_CLEAN=1 (ignore PyInstaller's cache).
# Not run by the project's CI (Linux); see packaging/README.md for what has been tried.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [ "$(uname -s)" != Darwin ] || [ "$(uname -m)" != arm64 ]; then
  echo "build_macos.sh builds the Apple silicon app: run it on a Mac with an M-series chip" >&2
  exit 1
fi
if [ ! -x "$PY" ] || ! "$PY" -c "import torch, mlx.core, mlx_lm, desktop" >/dev/null 2>&1; then
  bash packaging/install.sh
fi
if [ "$("$PY" -c 'import platform; print(platform.machine())')" != arm64 ]; then
  echo ".venv's Python runs under Rosetta (x86_64): recreate .venv with a native arm64 Python" >&2
  exit 1
fi
"$PY" -c "import mlx.core, mlx_lm" || { echo "MLX is not importable in .venv" >&2; exit 1; }
if ! "$PY" -c "import PyInstaller" >/dev/null 2>&1; then
  echo "installing PyInstaller (the packaging extra)..."
  "$PY" -m pip install -q -e ".[packaging]"
fi

version=$("$PY" -c "import backends; print(backends.__version__)")
app=dist/TuneDesk.app
args=(--noconfirm --distpath dist --workpath build/pyinstaller)
if [ -n "${PYINSTALLER_CLEAN:-}" ]; then args+=(--clean); fi
mkdir -p build
echo "building $app with PyInstaller $("$PY" -m PyInstaller --version)..."
start=$(date +%s)
"$PY" -m PyInstaller "${args[@]}" packaging/tunedesk.spec 2>build/pyinstaller.log || {
  tail -40 build/pyinstaller.log >&2
  echo "PyInstaller failed: full log in build/pyinstaller.log" >&2
  exit 1
}
echo "PyInstaller done in $(( $(date +%s) - start )) s (log: build/pyinstaller.log)"

# MLX loads its Metal kernels from mlx.metallib next to the libmlx.dylib it was loaded from (it asks
# dladdr). PyInstaller may load libmlx.dylib through a link at the top of Contents/Frameworks,
# whose folder has no mlx.metallib ("Failed to load the default metallib"): put a relative link
# to the real file beside every libmlx.dylib.
metallib=$(find "$app/Contents" -name mlx.metallib -type f | head -1)
if [ -z "$metallib" ]; then
  echo "mlx.metallib is not in $app: MLX could not run on the GPU" >&2
  exit 1
fi
find "$app/Contents" -name 'libmlx.dylib' | while read -r lib; do
  dir=$(dirname "$lib")
  if [ ! -e "$dir/mlx.metallib" ]; then
    target=$("$PY" -c "import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))" "$metallib" "$dir")
    ln -s "$target" "$dir/mlx.metallib"
    echo "linked $dir/mlx.metallib -> $target"
  fi
done

# Sign (again: the links above changed the bundle). Ad hoc unless an identity is given.
identity="${TUNEDESK_CODESIGN_IDENTITY:--}"
sign_args=(--force --deep --sign "$identity")
if [ "$identity" != "-" ]; then sign_args+=(--options runtime --timestamp --entitlements packaging/entitlements.plist); fi
codesign "${sign_args[@]}" "$app"
codesign --verify --deep --strict "$app"
echo "signed: $([ "$identity" = "-" ] && echo "ad hoc" || echo "$identity")"

# The bundled executable must run on its own: the hardware probe imports torch and MLX inside it.
exe="$app/Contents/MacOS/tunedesk"
lipo -archs "$exe" | grep -q arm64 || { echo "$exe is not arm64" >&2; exit 1; }
env -i HOME="$HOME" PATH=/usr/bin:/bin "$exe" hardware --json >build/hardware.json
"$PY" - build/hardware.json <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
assert info["mlx"] and info["mlx"]["installed"], f"MLX is not usable in the bundle: {info['mlx']} {info['notes']}"
assert info["backend"] == "mlx", f"the bundle would train with {info['backend']}: {info['reason']}"
print(f"bundle check: backend {info['backend']} on {info['device']} ({info['reason']})")
EOF
cuda_libs=$(find "$app" \( -iname 'libcuda*' -o -iname 'libcudnn*' -o -iname 'libcublas*' -o -iname 'libnccl*' \) -print)
[ -z "$cuda_libs" ] || { echo "CUDA libraries in the Mac bundle: $cuda_libs" >&2; exit 1; }

if [ -z "${SKIP_DMG:-}" ]; then
  dmg="dist/TuneDesk-${version}-macos-arm64.dmg"
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' EXIT
  cp -R "$app" "$staging/"
  ln -s /Applications "$staging/Applications"  # drag-to-install
  rm -f "$dmg"
  hdiutil create -volname "TuneDesk $version" -srcfolder "$staging" -fs HFS+ -format UDZO -ov "$dmg" >/dev/null
  if [ "$identity" != "-" ]; then
    codesign --force --sign "$identity" --timestamp "$dmg"
    if [ -n "${TUNEDESK_NOTARY_PROFILE:-}" ]; then
      xcrun notarytool submit "$dmg" --keychain-profile "$TUNEDESK_NOTARY_PROFILE" --wait
      xcrun stapler staple "$dmg"
    fi
  fi
  echo "disk image: $dmg $(du -h "$dmg" | cut -f1) ($(stat -f %z "$dmg") bytes)"
fi
echo "bundle size: $app $(du -sh "$app" | cut -f1) ($(find "$app" -type f | wc -l | tr -d ' ') files)"
echo "smoke test: TUNEDESK_BUNDLE=$app/Contents/MacOS bash packaging/smoke_test.sh"
