# The crash harness (tools/crash.py) in CI, issue #4: the broker SIGKILLed at
# random moments under QoS 1 and QoS 2 publishers and persistent
# subscribers; nothing PUBACKed may be lost, nothing PUBRECed lost or
# duplicated, subscriptions and the retained message must survive.
# >= 10 kills on CPython, >= 5 under the MicroPython unix port (tools.board).
#
# MicroPython runs at a 256 KiB heap, not a board's 64 KiB: at 64 KiB the
# store's code does not fit next to the broker (the runtime then starts
# without persistence and logs it, edge/runtime/main.py), and replaying a
# few hundred queued messages fragments a 128-192 KiB heap until a dict
# of 60 entries can no longer grow (measured; see the issue #4 note).
import random

import pytest

from tools import crash


def _run(runtime, kills, **kw):
    seed = random.randrange(1 << 30)
    lines = []
    res = crash.run(runtime, kills, seed=seed, out=lines.append, **kw)
    assert res["kills"] >= kills
    assert res["ok"], "seed %d:\n%s\n%r" % (seed, "\n".join(lines), res)
    assert res["q1"]["acked"] > 0 and res["q2"]["acked"] > 0


@pytest.mark.timeout(120)
def test_crash_10_kills_cpython():
    _run("cpython", 10)


@pytest.mark.timeout(120)
@pytest.mark.micropython
def test_crash_5_kills_micropython(micropython_exe):
    _run("micropython", 5, heap="256k", rate=30.0)
