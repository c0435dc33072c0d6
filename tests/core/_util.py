# Helpers for core tests: plain functions, no pytest, so the same files run
# under CPython (pytest) and the MicroPython unix port (tests/mpy_runner.py).


def raises(exc_type, fn, *args, **kw):
    """Call fn; assert it raises exc_type; return the exception."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc_type.__name__, fn))
