# CPython-only parts of edge/runtime/ that need no sockets.
import pytest

from edge.runtime.speedups_cpython import MemoTrie, install
from tests.core._pair import Client, make_broker, publish, publishes
from edge.mqtt.packets import Disconnect, Unsubscribe


def keys(trie, topic):
    return sorted(k for subs in trie.match_subs(topic) for k in subs)


def test_memo_trie_follows_every_change():
    t = MemoTrie()
    assert keys(t, "a/b") == [] and "a/b" in t.memo
    t.add("a/+", "k1", 0)
    assert keys(t, "a/b") == ["k1"]
    t.add("a/+", "k2", 1)
    assert keys(t, "a/b") == ["k1", "k2"]
    t.add("#", "k3", 0)
    assert keys(t, "a/b") == ["k1", "k2", "k3"] and keys(t, "$SYS/x") == []
    t.remove("a/+", "k1")
    assert keys(t, "a/b") == ["k2", "k3"]
    t.remove("a/+", "k2")
    assert keys(t, "a/b") == ["k3"]
    t.remove_key("k3", ["#"])
    assert keys(t, "a/b") == [] and len(t) == 0 and t.nodes == 0
    for i in range(1500):  # bounded: starts over when full
        keys(t, "n/%d" % i)
        assert len(t.memo) <= 1024


def test_broker_routes_through_the_memo():
    b = make_broker()
    assert install(b) and not install(b)
    s, s2, p = Client(b), Client(b), Client(b)
    for c, name in ((s, "s"), (s2, "s2"), (p, "p")):
        assert c.connect(name).reason == 0
    s.subscribe(("c/+", 1))
    publish(p, "c/1", b"a", 1, pid=1)
    s2.subscribe(("c/+", 0))  # a second key on a filter already matched
    publish(p, "c/1", b"b", 1, pid=2)
    assert [m.payload for m in publishes(s.recv())] == [b"a", b"b"]
    assert [m.payload for m in publishes(s2.recv())] == [b"b"]
    s.send(Unsubscribe(3, ["c/+"]))
    s2.send(Disconnect())  # clean session: its subscription goes too
    publish(p, "c/1", b"c", 1, pid=3)
    assert publishes(s.recv()) == [] and publishes(s2.recv()) == []
    s.subscribe(("c/1", 1))
    publish(p, "c/1", b"d", 1, pid=4)
    assert [m.payload for m in publishes(s.recv())] == [b"d"]


# ---- group commit: the ack goes out after the sync of what it promises --------
class _Files:
    """A files object that notes each sync in a shared event list."""

    def __init__(self, events):
        self.events = events

    def listdir(self):
        return []

    def append(self, name, data):
        self.events.append("append")

    def sync(self, name):
        self.events.append("sync")

    def sync_dir(self):
        pass

    def close(self):
        pass


class _Transport:
    def __init__(self, events, name):
        self.events, self.name, self.closed = events, name, False

    def write(self, data):
        self.events.append((self.name, bytes(data)))

    def get_write_buffer_size(self):
        return 0

    def is_reading(self):
        return True

    def set_write_buffer_limits(self, high, low):
        pass

    def get_extra_info(self, name):
        return None

    def close(self):
        self.closed = True


def _connect(srv, events, name, clean=True):
    """One more client: a peer whose writes go to events as (name, bytes),
    its CONNECT fed."""
    from edge.mqtt import codec
    from edge.mqtt.packets import Connect
    from edge.runtime.tcp_cpython import _Peer

    p = _Peer(srv)
    p.connection_made(_Transport(events, name))
    srv.received(p, codec.encode(Connect(name, clean, 60)))
    return p


def _serve(files, events, then, qos=1):
    """A TcpServer over a broker whose store is on `files`: "sub" (clean
    session 0, subscribed to "t" at qos) and "pub" connected, events
    cleared; then the coroutine then(srv, peers) runs on the loop."""
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Connect, Subscribe
    from edge.runtime.tcp_cpython import TcpServer, _Peer
    from edge.store.log import Log
    from edge.store.state import StateStore

    b = make_broker()
    log = Log(files, "state")
    log.open(0)
    srv = TcpServer(b, lambda level, msg: None)
    b.restore(StateStore(log))

    async def go():
        peers = {}
        for name in ("sub", "pub"):
            p = _Peer(srv)
            p.connection_made(_Transport(events, name))
            peers[name] = p
        srv.received(peers["sub"], codec.encode(Connect("sub", False, 60)))
        await asyncio.sleep(0)
        srv.received(peers["sub"], codec.encode(Subscribe(1, [("t", qos)])))
        await asyncio.sleep(0)
        srv.received(peers["pub"], codec.encode(Connect("pub", True, 60)))
        await asyncio.sleep(0)
        del events[:]
        try:
            await then(srv, peers)
        finally:
            srv.close()  # (its sync helper too)

    asyncio.run(go())


def test_acks_written_only_after_the_sync():
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish

    events = []

    async def then(srv, peers):
        # two publishers' feeds in one loop pass share one sync
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        srv.received(peers["pub"], codec.encode(Publish("t", b"2", 1, False, False, 6)))
        # the PUBACKs are held: nothing durable yet. The QoS 1 deliveries
        # promise nothing (Connection.promise): they go at once
        assert [e for e in events if e[0] != "sub"] == [], events
        assert [e[1][-1:] for e in events] == [b"1", b"2"], events
        del events[:]
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    _serve(_Files(events), events, then)
    assert events[:2] == ["append", "sync"], events
    writes = [e for e in events[2:] if e != "append"]
    assert ("pub", b"\x40\x02\x00\x05\x40\x02\x00\x06") in writes, events
    assert events.count("sync") == 1, events


def test_an_ack_needs_no_sync_once_its_delivery_is_acknowledged():
    # The PUBACK waits for the record of the persistent delivery, until
    # "sub" acknowledges it: the record is void then (Log.settled), never
    # written, and the PUBACK goes out with no write and no sync at all, as
    # RabbitMQ confirms a persistent message consumed before it was stored
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Puback, Publish

    events = []

    async def then(srv, peers):
        srv.sync_wait_us = 30000000  # a commit never comes in this test's time
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        assert [e[0] for e in events] == ["sub"], events  # the delivery, at once
        await asyncio.sleep(0.05)
        assert [e[0] for e in events] == ["sub"], events  # the PUBACK waits
        srv.received(peers["sub"], codec.encode(Puback(1)))
        assert events[1:] == [("pub", b"\x40\x02\x00\x05")], events  # after that feed
        assert not srv.held and srv.broker.store.log.pending() == 0

    _serve(_Files(events), events, then)
    assert "append" not in events and "sync" not in events, events


def test_held_acks_of_several_publishers_go_as_their_records_are_void():
    # Each piece of held output goes once every record up to its own is
    # void or durable: in log order, whichever publisher it is for
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Puback, Publish

    events = []

    async def then(srv, peers):
        srv.sync_wait_us = 30000000
        p2 = _connect(srv, events, "pub2")
        del events[:]
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))  # sub pid 1
        srv.received(p2, codec.encode(Publish("t", b"2", 1, False, False, 6)))  # 2
        srv.received(peers["pub"], codec.encode(Publish("t", b"3", 1, False, False, 7)))  # 3
        assert [e[0] for e in events] == ["sub"] * 3, events
        del events[:]
        srv.received(peers["sub"], codec.encode(Puback(1)))
        assert events == [("pub", b"\x40\x02\x00\x05")], events
        srv.received(peers["sub"], codec.encode(Puback(3)))
        assert events == [("pub", b"\x40\x02\x00\x05")], events  # behind pub2's record
        srv.received(peers["sub"], codec.encode(Puback(2)))
        assert sorted(events[1:]) == [("pub", b"\x40\x02\x00\x07"), ("pub2", b"\x40\x02\x00\x06")], events
        assert not srv.held and not srv.order
        await asyncio.sleep(0)

    _serve(_Files(events), events, then)
    assert "append" not in events and "sync" not in events, events


def test_an_unacknowledged_delivery_is_synced_after_the_wait():
    # Not acknowledged within sync_wait_us: written, synced, then the PUBACK
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish

    events = []

    async def then(srv, peers):
        srv.sync_wait_us = 50000
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        await asyncio.sleep(0.02)
        assert [e[0] for e in events] == ["sub"], events
        for _ in range(50):
            await asyncio.sleep(0.01)
            if not srv.held:
                break
        assert events[1:] == ["append", "sync", ("pub", b"\x40\x02\x00\x05")], events

    _serve(_Files(events), events, then)


def test_a_queued_delivery_is_synced_without_the_wait():
    # A delivery queued for a client that is away has no ack coming: its
    # record is committed at the end of the loop pass, whatever sync_wait_us
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Disconnect, Publish

    events = []

    async def then(srv, peers):
        srv.sync_wait_us = 30000000
        srv.received(peers["sub"], codec.encode(Disconnect()))
        await asyncio.sleep(0)
        del events[:]
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        assert events == [], events
        await asyncio.sleep(0)
        assert events == ["append", "sync", ("pub", b"\x40\x02\x00\x05")], events

    _serve(_Files(events), events, then)


def test_a_pubcomp_waits_for_the_sync_of_its_deletion():
    # PUBCOMP promises the QoS 2 pid is forgotten (its tombstone durable): a
    # restart that still knew it would drop the client's next PUBLISH with
    # that pid as a duplicate. Its tombstone is no quiet one (Log.settled).
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish, Pubrel

    events = []

    async def then(srv, peers):
        srv.sync_wait_us = 30000000
        p = _connect(srv, events, "pub2", clean=False)  # a persistent publisher
        await asyncio.sleep(0)
        srv.received(p, codec.encode(Publish("u", b"1", 2, False, False, 7)))  # no subscriber
        await asyncio.sleep(0)
        assert events[-1] == ("pub2", b"\x50\x02\x00\x07"), events  # PUBREC, after its sync
        del events[:]
        srv.received(p, codec.encode(Pubrel(7)))
        assert events == [], events
        await asyncio.sleep(0)
        assert events == ["append", "sync", ("pub2", b"\x70\x02\x00\x07")], events

    _serve(_Files(events), events, then)


class _ThreadFiles(_Files):
    """Files with a handle to sync off the loop: the first one fails."""

    def __init__(self, events):
        _Files.__init__(self, events)
        self.handles = 0
        self.fd = None

    def sync_handle(self, name):
        import os

        self.handles += 1
        self.events.append("handle")
        if self.handles == 1:
            self.pipe = os.pipe()
            return self.pipe[0]  # fsync of a pipe: EINVAL, as a failing disk would say EIO
        if self.fd is None:
            import tempfile

            self.fd, path = tempfile.mkstemp()
            os.unlink(path)
        return self.fd  # a file that syncs (the helper syncs a copy: stays ours)


def test_a_failed_sync_off_the_loop_holds_the_acks_and_retries():
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish

    events = []
    files = _ThreadFiles(events)

    async def then(srv, peers):
        srv.received(peers["pub"], codec.encode(Publish("t", b"2", 2, False, False, 9)))
        # the QoS 2 delivery waits with the PUBREC: a duplicate would break exactly once
        assert [e for e in events if type(e) is tuple] == [], events
        for _ in range(50):
            await asyncio.sleep(0.01)
            if srv.syncing is False and files.handles >= 2 and not srv.held:
                break
        assert not srv.held

    _serve(files, events, then, qos=2)
    # The first sync (of "sub"'s session, at its CONNECT) failed: nothing
    # went out until the batch was written again and the retry synced it;
    # then the held CONNACK and SUBACK, the PUBREC and the delivery did.
    # ("pub"'s CONNACK, a clean session's, promises nothing the store holds:
    # it went out at once, before these events, issue #19.)
    assert files.handles == 2, events
    out = [e for e in events if type(e) is tuple]
    assert min(events.index(e) for e in out) > events.index("handle"), events
    assert events.index("handle") > events.index("append")  # the batch again, first
    # "sub"'s CONNACK, held since the failure, first; its SUBACK and the
    # delivery after it, in one write
    sub = b"".join(d for c, d in out if c == "sub")
    assert out[0][0] == "sub", events
    assert sub == b"\x20\x02\x00\x00" + b"\x90\x03\x00\x01\x02" + b"\x34\x06\x00\x01t\x00\x012", events
    assert ("pub", b"\x50\x02\x00\x09") in out, events  # the PUBREC, after the sync


def test_the_sync_helper_reports_each_sync_and_stops_on_close():
    # flash_cpython.Syncer: fsyncs (and closes) each descriptor in its
    # helper process, tells the loop 0 or the errno; the helper ends on
    # close(), and a helper that dies fails the sync in flight
    import asyncio
    import errno
    import os
    import tempfile

    from edge.runtime.flash_cpython import Syncer

    async def go():
        got = []
        ev = asyncio.Event()

        def told(err):
            got.append(err)
            ev.set()

        async def answer():
            await asyncio.wait_for(ev.wait(), 10)
            ev.clear()
            return got.pop()

        s = Syncer(asyncio.get_running_loop(), told)
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        os.write(fd, b"x")
        s.submit(fd)
        os.close(fd)  # the helper has its own copy
        assert await answer() == 0
        r, w = os.pipe()
        s.submit(r)
        assert await answer() == errno.EINVAL  # fsync of a pipe
        os.close(r)
        os.close(w)
        proc = s.proc
        s.close()
        assert proc.poll() is not None  # gone with its socket
        s = Syncer(asyncio.get_running_loop(), told)
        s.proc.kill()  # a helper that dies: the sync in flight fails
        assert await answer() == errno.EIO and s.dead
        fd = os.open(os.devnull, os.O_RDONLY)
        with pytest.raises(OSError):
            s.submit(fd)
        os.close(fd)
        s.close()

    asyncio.run(go())


def test_without_a_sync_helper_the_loop_syncs_itself(monkeypatch):
    # A helper process that cannot start (no interpreter to run it) costs
    # speed, never the acks: the loop fsyncs, logged once
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish
    from edge.runtime import commit_cpython

    def broken(loop, done):
        raise OSError(2, "no interpreter")

    monkeypatch.setattr(commit_cpython, "Syncer", broken)
    events = []
    files = _ThreadFiles(events)
    files.handles = 1  # no failing first handle: every sync succeeds

    async def then(srv, peers):
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if ("pub", b"\x40\x02\x00\x05") in events:
                break
        assert srv.syncer is False

    _serve(files, events, then)
    assert ("pub", b"\x40\x02\x00\x05") in events, events


def test_a_helper_that_dies_unused_leaves_the_loop_syncing(monkeypatch):
    # A helper that exits before its first answer (its module missing, say)
    # would die again each retry, the acks held forever: the loop syncs
    import asyncio
    import sys

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish
    from edge.runtime import commit_cpython, flash_cpython

    class Dying(flash_cpython.Syncer):
        def __init__(self, loop, done):
            real = sys.executable
            sys.executable = "/bin/false"  # starts, exits at once
            try:
                flash_cpython.Syncer.__init__(self, loop, done)
            finally:
                sys.executable = real

    monkeypatch.setattr(commit_cpython, "Syncer", Dying)
    events = []
    files = _ThreadFiles(events)
    files.handles = 1  # every handle a file that syncs

    async def then(srv, peers):
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if puback(events):
                break
        assert srv.syncer is False

    def puback(events):
        return [e for e in events if type(e) is tuple and e[0] == "pub" and e[1].endswith(b"\x40\x02\x00\x05")]

    _serve(files, events, then)
    assert puback(events), events


def test_a_failed_hand_over_to_the_helper_is_a_failed_sync(monkeypatch):
    # submit() itself fails (the helper's socket is gone): the batch is
    # written again and retried, and with no helper answering, the loop
    # syncs it; the ack goes out once it is durable
    import asyncio

    from edge.mqtt import codec
    from edge.mqtt.packets import Publish
    from edge.runtime import commit_cpython, flash_cpython

    class Broken(flash_cpython.Syncer):
        def submit(self, fd):
            self._sock.close()  # sendmsg now fails with EBADF
            flash_cpython.Syncer.submit(self, fd)

    monkeypatch.setattr(commit_cpython, "Syncer", Broken)
    events = []
    files = _ThreadFiles(events)
    files.handles = 1  # every handle a file that syncs

    def puback(events):
        return [e for e in events if type(e) is tuple and e[0] == "pub" and e[1].endswith(b"\x40\x02\x00\x05")]

    async def then(srv, peers):
        srv.received(peers["pub"], codec.encode(Publish("t", b"1", 1, False, False, 5)))
        assert not puback(events)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if puback(events):
                break
        assert srv.syncer is False

    _serve(files, events, then)
    assert puback(events), events
