# now_ms(): milliseconds since start as an int that never wraps. The core only
# ever sees this value (docs/design.md H5). MicroPython's ticks_ms wraps (its period is
# a port detail), so we accumulate ticks_diff between reads; read often enough
# (the runtime ticks every 250 ms) and no wrap is ever missed.
try:
    from time import ticks_ms, ticks_diff  # MicroPython
except ImportError:
    from edge.runtime.clock_cpython import ticks_ms, ticks_diff  # type: ignore[assignment,no-redef,misc]

_state = [ticks_ms(), 0]  # last raw ticks, accumulated ms


def now_ms():
    t = ticks_ms()
    _state[1] += ticks_diff(t, _state[0])
    _state[0] = t
    return _state[1]
