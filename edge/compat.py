# The one place that may care which Python runs us.
# micropython.const inlines private `_NAME = const(n)` into bytecode (no RAM on
# the MCU); the parser recognises the bare name `const`, so callers must import
# it under exactly that name.
#
# @slots("a", "b") gives a class __slots__ = ("a", "b") on CPython, where they
# save memory per instance (docs/design.md H3). MicroPython ignores __slots__ but would
# still keep the tuple and a class-dict entry for each class on the heap
# (~770 bytes for the packet classes on the 64-bit port), so there the
# decorator leaves the class as it is.
try:
    from micropython import const

    def slots(*names):
        return _as_is

    def _as_is(cls):
        return cls

except ImportError:  # CPython

    def const(x):  # type: ignore[no-redef,misc]
        return x

    def slots(*names):  # type: ignore[misc]
        def rebuild(cls):
            d = dict(cls.__dict__)
            d.pop("__dict__", None)
            d.pop("__weakref__", None)
            d["__slots__"] = names
            return type(cls)(cls.__name__, cls.__bases__, d)

        return rebuild
