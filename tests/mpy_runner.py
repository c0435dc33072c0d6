# Runs the core tests (tests/core/test_*.py) without pytest, so they run under
# the MicroPython unix port. From the repository root:
#
#     micropython -X heapsize=1024k tests/mpy_runner.py [SUBSTRING ...]
#
# Imports each tests/core/test_*.py module (only those whose name contains one
# of the SUBSTRINGs, when given), calls every `test_*` function with no
# arguments, prints PASS/FAIL per test (with the exception for a failure) and
# ends with "N passed, M failed"; exit status 1 if any failed.
# Also runs under CPython (python tests/mpy_runner.py) for debugging.
# Sticks to what MicroPython has: os.listdir but no os.path, no traceback.
import gc
import os
import sys

CORE_DIR = "tests/core"
CORE_PKG = "tests.core"


def print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)  # MicroPython
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def module_names(filters):
    names = []
    for fn in os.listdir(CORE_DIR):
        # .mpy: a board runs them precompiled (tests/firmware/test_qemu.py)
        if fn.startswith("test_") and (fn.endswith(".py") or fn.endswith(".mpy")):
            name = fn[: fn.rindex(".")]
            if not filters or any(f in name for f in filters):
                names.append(name)
    names.sort()
    return names


def load(name):
    full = CORE_PKG + "." + name
    mod = __import__(full)
    m = sys.modules.get(full)
    if m is not None:
        return m
    for part in full.split(".")[1:]:
        mod = getattr(mod, part)
    return mod


def unload(name):
    full = CORE_PKG + "." + name
    if full in sys.modules:
        del sys.modules[full]


def main(argv):
    # A script's own folder comes first on sys.path; import from the repo root.
    if "" not in sys.path:
        sys.path.insert(0, "")
    filters = argv[1:]
    passed = 0
    failed = 0
    for name in module_names(filters):
        gc.collect()
        try:
            mod = load(name)
        except Exception as e:  # an import error fails the whole module
            failed += 1
            print("FAIL %s (import)" % name)
            print_exc(e)
            continue
        tests = [t for t in dir(mod) if t.startswith("test_") and callable(getattr(mod, t))]
        tests.sort()
        for t in tests:
            label = "%s.%s" % (name, t)
            try:
                getattr(mod, t)()
            except Exception as e:
                failed += 1
                print("FAIL %s: %s: %s" % (label, type(e).__name__, e))
                print_exc(e)
            else:
                passed += 1
                print("PASS %s" % label)
            gc.collect()
        mod = None
        unload(name)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
