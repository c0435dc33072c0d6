# CPython-only speedups, installed by the CPython runtime: memory a board
# does not have traded for CPU time, and uvloop's event loop when installed.
# Named *cpython* so it never goes onto a board.
import asyncio
import os

from edge.errors import ConfigError
from edge.mqtt.topics import Trie

_MEMO_MAX = 1024  # topics remembered before the memo starts over


class MemoTrie(Trie):
    """A Trie whose match_subs(topic) is remembered: every PUBLISH to a known
    topic skips the walk. Any add() or remove() forgets everything, which is
    cheap (subscriptions change far less often than messages arrive) and
    needs no reasoning about which topics a filter could have matched."""

    def __init__(self):
        Trie.__init__(self)
        self.memo = {}

    def add(self, f, key, value):
        self.memo.clear()
        return Trie.add(self, f, key, value)

    def remove(self, f, key):
        self.memo.clear()
        return Trie.remove(self, f, key)

    def match_subs(self, topic):
        memo = self.memo
        found = memo.get(topic)
        if found is None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            found = memo[topic] = Trie.match_subs(self, topic)
        return found


def install(broker):
    """Swap the broker's subscription trie for a MemoTrie while it is still
    empty (before any client subscribed); True if it did."""
    if len(broker.subs) or broker.subs.nodes or type(broker.subs) is not Trie:
        return False
    broker.subs = MemoTrie()
    return True


_LOOPS = ("auto", "asyncio", "uvloop")  # EDGEBROKER_LOOP's values


def runner(log):
    """asyncio.run, or uvloop.run when uvloop is installed (an option, never
    a dependency) and EDGEBROKER_LOOP is not "asyncio". Returns (run, name);
    an unknown EDGEBROKER_LOOP is a ConfigError."""
    want = os.environ.get("EDGEBROKER_LOOP") or "auto"  # set but empty: unset
    if want not in _LOOPS:
        raise ConfigError("EDGEBROKER_LOOP", "unknown event loop %r (accepted: %s)" % (want, ", ".join(_LOOPS)))
    if want != "asyncio":
        try:
            import uvloop
        except ImportError:
            if want == "uvloop":  # asked for by name: say why it is not used
                log(30, "EDGEBROKER_LOOP=uvloop but uvloop is not installed (pip install uvloop): "
                        "asyncio's loop instead")
        else:
            return uvloop.run, "uvloop"
    return asyncio.run, "asyncio"


def cancel_on_sigterm():
    """SIGTERM cancels the running task (main.serve) between callbacks, and
    its cleanup runs. Raised as a KeyboardInterrupt from a signal handler
    (gateway/cli.py's) it could land inside a transport's callback, where
    uvloop reports it as a "fatal error on transport" and goes on serving
    (found as a broker that outlived its SIGTERM in tests/runtime/test_lock.py)."""
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
