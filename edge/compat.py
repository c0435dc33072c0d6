# The one place that may care which Python runs us.
# micropython.const inlines private `_NAME = const(n)` into bytecode (no RAM on
# the MCU); the parser recognises the bare name `const`, so callers must import
# it under exactly that name.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[no-redef,misc]
        return x
