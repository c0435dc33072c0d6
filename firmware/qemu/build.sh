#!/bin/bash
# `make firmware`: MicroPython 1.28.0 for QEMU's mps2-an385 (Cortex-M3) with
# edge/ and asyncio frozen in (firmware/qemu/manifest.py), a 96 KiB heap and
# littlefs on a RAM disk as the board's flash (docs/firmware.md).
#
# MicroPython's source, first found of: $MICROPYTHON_SRC (any checkout, used
# read-only apart from its mpy-cross/ build), ../shared/vendor's release
# tarball, MicroPython's own v1.28.0 release (downloaded once into build/).
# The port is copied into build/firmware/qemu/port and patched there; a file
# is rewritten only when its content changes, so make stays incremental.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/firmware/qemu
OUT=$REPO/build/firmware/qemu
VERSION=1.28.0
TARBALL=$REPO/../shared/vendor/micropython-$VERSION.tar.gz
URL=https://github.com/micropython/micropython/releases/download/v$VERSION/micropython-$VERSION.tar.xz
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
mkdir -p "$OUT"

# ---- MicroPython's source
if [ -n "${MICROPYTHON_SRC:-}" ]; then
  SRC=$(cd "$MICROPYTHON_SRC" && pwd)
else
  SRC=$OUT/src/micropython-$VERSION
  if [ ! -e "$SRC/.unpacked" ]; then
    rm -rf "$OUT/src"
    mkdir -p "$OUT/src"
    if [ -e "$TARBALL" ]; then
      echo ">> firmware: unpacking $TARBALL"
      tar -xzf "$TARBALL" -C "$OUT/src"
    else
      echo ">> firmware: downloading $URL"
      curl -fL --retry 3 -o "$OUT/src/mpy.tar.xz" "$URL" || {
        echo "firmware: cannot download MicroPython $VERSION from $URL;" \
             "set MICROPYTHON_SRC=DIR to a v$VERSION checkout" >&2; exit 1; }
      tar -xJf "$OUT/src/mpy.tar.xz" -C "$OUT/src"
      rm -f "$OUT/src/mpy.tar.xz"
    fi
    touch "$SRC/.unpacked"
  fi
fi
[ -d "$SRC/ports/qemu" ] || { echo "firmware: $SRC is not a MicroPython source tree (no ports/qemu)" >&2; exit 1; }

for tool in arm-none-eabi-gcc make; do
  command -v "$tool" >/dev/null || { echo "firmware: $tool not found (make firmware installs gcc-arm-none-eabi libnewlib-arm-none-eabi)" >&2; exit 1; }
done

# ---- mpy-cross (host), built out of the source tree
make -s -C "$SRC/mpy-cross" -j"$JOBS" BUILD="$OUT/mpy-cross" >/dev/null

# ---- the port, copied and patched (only changed files are rewritten)
put() {  # put FILE DEST: DEST gets FILE's content, its date only if it differs
  if ! cmp -s "$1" "$2"; then mkdir -p "$(dirname "$2")"; cp "$1" "$2"; fi
}
PORT=$OUT/port
STAGE=$OUT/stage
rm -rf "$STAGE"
cp -r "$SRC/ports/qemu" "$STAGE"
# The port's Makefile finds MicroPython's tree relative to itself (../../py);
# here it sits outside it.
sed -i 's|^include \.\./\.\./py/mkenv\.mk|include $(MICROPY_TOP)/py/mkenv.mk|' "$STAGE/Makefile"
grep -q 'MICROPY_TOP)/py/mkenv.mk' "$STAGE/Makefile" || { echo "firmware: cannot patch the port's Makefile" >&2; exit 1; }
# asyncio is hard-coded off in the port (a -D on the command line would be a
# redefinition error): switched on in the copy.
sed -i 's|#define MICROPY_PY_ASYNCIO          (0)|#define MICROPY_PY_ASYNCIO          (1)|' "$STAGE/mpconfigport.h"
grep -q 'MICROPY_PY_ASYNCIO          (1)' "$STAGE/mpconfigport.h" || { echo "firmware: cannot patch mpconfigport.h" >&2; exit 1; }
# The board: ours (firmware/qemu), the main.c that mounts the flash and runs
# boot.py/main.py, and the shims.
mkdir -p "$STAGE/boards/EDGE_AN385"
cp "$HERE/mpconfigboard.mk" "$STAGE/boards/EDGE_AN385/mpconfigboard.mk"
cp "$HERE/main.c" "$STAGE/main.c"
cp "$HERE/edge_board.c" "$HERE/edge_time.h" "$STAGE/"
( cd "$STAGE" && find . -type f ) | while read -r f; do put "$STAGE/$f" "$PORT/$f"; done
rm -rf "$STAGE"

# The manifest tool insists that micropython-lib exists; we take nothing from it.
LIBDIR=$OUT/micropython-lib
mkdir -p "$LIBDIR"
[ -e "$LIBDIR/README.md" ] || echo "empty: nothing of micropython-lib is frozen" > "$LIBDIR/README.md"

make -s -C "$PORT" -j"$JOBS" BOARD=EDGE_AN385 BUILD="$OUT/build" \
  MICROPY_TOP="$SRC" MICROPY_MPYCROSS="$OUT/mpy-cross/mpy-cross" \
  MICROPY_MPYCROSS_DEPENDENCY="$OUT/mpy-cross/mpy-cross" MPY_LIB_DIR="$LIBDIR" \
  FROZEN_MANIFEST="$HERE/manifest.py" MICROPY_MANIFEST_EDGE_ROOT="$REPO" \
  MICROPY_HEAP_SIZE=98304 MICROPY_VFS_LFS2=1
put "$OUT/build/firmware.elf" "$OUT/firmware.elf"
echo ">> firmware: $OUT/firmware.elf"
