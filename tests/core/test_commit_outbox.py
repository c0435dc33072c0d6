# The board's group commit (edge/runtime/commit.py) with the uplink's outbox
# (docs/uplink.md "What is promised", issue #18 point 6): a local publisher's
# PUBACK waits until the outbox record of its message is synced, in the same
# commit as the store's records; one confirmed upstream before its write is
# void and waits for nothing. The Committer driven by hand (its tasks run
# one step at a time), the store and the outbox on files that note every
# sync: runs under MicroPython (tests/mpy_runner.py) and CPython.
from edge.bridge.uplink import Uplink
from edge.mqtt.packets import Publish
from edge.runtime import commit
from edge.store.log import Log
from edge.store.outbox import Outbox
from edge.store.state import StateStore
from tests.core._pair import Client, make_broker
from tests.core.test_uplink import FakeAmqp, section

PUBACK_5 = b"\x40\x02\x00\x05"


class _Files:
    """Notes each sync as (tag, "sync") in a shared event list."""

    def __init__(self, events, tag):
        self.events, self.tag = events, tag

    def listdir(self):
        return []

    def append(self, name, data):
        pass

    def sync(self, name):
        self.events.append((self.tag, "sync"))

    def sync_dir(self):
        pass

    def close(self):
        pass


class _Aio:
    # commit.py's asyncio: create_task() keeps the coroutine, run() steps it
    def __init__(self):
        self.tasks = []

    def create_task(self, coro):
        self.tasks.append(coro)

    async def sleep_ms(self, ms):
        pass

    def run(self):
        while self.tasks:
            coro = self.tasks.pop(0)
            try:
                while True:
                    coro.send(None)
            except StopIteration:
                pass


class _Srv:
    # tcp.py's TcpServer as commit.py sees it: every write noted
    def __init__(self, broker, events):
        self.broker = broker
        self.events = events
        self.writers = {}
        self.draining = set()

    def _write(self, cid, w, data):
        self.events.append((w, bytes(data)))
        return 0

    def flush(self):
        # tcp.py's flush(): the committer holds what must wait, the rest goes
        b = self.broker
        dirty = b.dirty
        c = b.store.commit
        if dirty or c.held:
            c.hold(dirty)
        for conn in dirty:
            data = b.take(conn)
            if data:
                self._write(conn.id, self.writers[conn.id], data)
        dirty.clear()


def _setup(events):
    b = make_broker()
    log = Log(_Files(events, "store"), "state")
    log.open(0)
    b.restore(StateStore(log))
    srv = _Srv(b, events)
    aio = _Aio()
    c = commit.Committer(srv, lambda level, msg: None, 0)
    b.store.commit = c
    oblog = Log(_Files(events, "outbox"), "outbox")
    oblog.open(0)
    up = Uplink(b, section(), lambda: 0.5, lambda level, msg: None, 0, Outbox(oblog))
    # as edge/runtime/uplink.py's start() wires them
    c.outbox = oblog
    up.appended = c.outbox_appended
    pub = Client(b)
    srv.writers[pub.cid] = "pub"
    pub.connect("pub")
    srv.flush()
    return srv, aio, up, pub


def _with_aio(aio, fn):
    saved = commit.asyncio
    commit.asyncio = aio
    try:
        fn()
    finally:
        commit.asyncio = saved


def test_board_puback_waits_for_the_outbox_sync():
    # No local subscriber: the store records nothing, so without the
    # outbox's share of the gate the PUBACK would go at once
    events = []
    srv, aio, up, pub = _setup(events)

    def go():
        del events[:]
        pub.send(Publish("m/1", b"x", 1, False, False, 5))
        srv.flush()
        assert len(up.q) == 1 and events == [], events  # held: the record is in RAM only
        aio.run()  # the commit: the outbox synced, then the PUBACK
        assert events == [("outbox", "sync"), ("pub", PUBACK_5)], events

    _with_aio(aio, go)


def test_board_puback_needs_no_outbox_sync_once_confirmed_upstream():
    # Confirmed before its record was written: void (Log.settled), the
    # PUBACK goes with no outbox sync (RabbitMQ has it on disk)
    events = []
    srv, aio, up, pub = _setup(events)

    def go():
        up.connected(0)
        fake = up.c = FakeAmqp()
        up._events([("ready",)], 0)
        if up.commands:  # the command queue's declare answered first (edge/bridge/commands.py)
            up._events([("declare_ok", "edge.%s.cmd" % up.edge_id, 0, 0)], 0)
        del events[:]
        pub.send(Publish("m/1", b"x", 1, False, False, 5))
        srv.flush()
        assert events == [], events
        tag = [i + 1 for i, s in enumerate(fake.sent) if s[0] == "m.1"][0]
        up._events([("confirm", tag, False)], 0)
        srv.flush()
        aio.run()
        assert events == [("pub", PUBACK_5)], events

    _with_aio(aio, go)
