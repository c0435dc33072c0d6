# CPython stand-ins for MicroPython's time.ticks_ms/ticks_diff. Named *cpython*
# so the MicroPython type check skips it (it uses time.monotonic_ns).
import time


def ticks_ms():
    return time.monotonic_ns() // 1000000


def ticks_diff(a, b):
    return a - b
