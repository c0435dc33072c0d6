# The local publisher's PUBACK waits for the uplink's outbox record of its
# message (docs/uplink.md "What is promised", tcp_cpython.py's outbox gate):
# the TCP shell with the store and the outbox on files that note every
# write and sync, or on real files synced by the helper process.
import asyncio

from edge.mqtt import codec
from edge.mqtt.packets import Connect, Publish
from edge.bridge.uplink import Uplink
from edge.store.log import Log
from edge.store.outbox import Outbox
from edge.store.state import StateStore
from tests.core._pair import make_broker
from tests.core.test_uplink import section
from tests.runtime.test_runtime_cpython import _Transport

PUBACK_5 = b"\x40\x02\x00\x05"


class _Files:
    """Notes each append and sync as (tag, op) in a shared event list."""

    def __init__(self, events, tag):
        self.events, self.tag = events, tag

    def listdir(self):
        return []

    def append(self, name, data):
        self.events.append((self.tag, "append"))

    def sync(self, name):
        self.events.append((self.tag, "sync"))

    def sync_dir(self):
        pass

    def close(self):
        pass


def _serve(store_files, ob_files, then, events):
    """A TcpServer with the store on store_files, an Uplink (not connected:
    what goes up waits in the outbox) with its outbox on ob_files, gated
    as uplink_cpython.start() gates it; "pub" connected, its writes noted
    in events as ("pub", bytes). then(srv, pub, up) runs on the loop."""
    from edge.runtime.tcp_cpython import TcpServer, _Peer

    b = make_broker()
    log = Log(store_files, "state")
    log.open(0)
    b.restore(StateStore(log))
    srv = TcpServer(b, lambda level, msg: None)
    oblog = Log(ob_files, "outbox")
    oblog.open(0)
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0, Outbox(oblog))
    srv.outbox = oblog
    up.appended = srv.outbox_appended

    async def go():
        p = _Peer(srv)
        p.connection_made(_Transport(events, "pub"))
        srv.received(p, codec.encode(Connect("pub", True, 60)))
        await asyncio.sleep(0)
        del events[:]
        try:
            await then(srv, p, up)
        finally:
            srv.close()

    asyncio.run(go())


def test_puback_waits_for_the_outbox_sync():
    # No local subscriber: the store records nothing, so without the
    # outbox's gate the PUBACK would go at once, before the outbox's sync
    events = []

    async def then(srv, pub, up):
        srv.received(pub, codec.encode(Publish("m/1", b"x", 1, False, False, 5)))
        assert len(up.q) == 1 and events == [], events  # held: the record is in RAM only
        for _ in range(50):
            await asyncio.sleep(0.001)
            if ("pub", PUBACK_5) in events:
                break

    _serve(_Files(events, "store"), _Files(events, "outbox"), then, events)
    # one commit: the outbox's record written and synced, then the PUBACK
    assert [e for e in events if e[1] != "append"] == [("outbox", "sync"), ("pub", PUBACK_5)], events


def test_puback_needs_no_outbox_sync_once_confirmed_upstream():
    # Confirmed before it was written: the record is void (Log.settled), the
    # PUBACK goes with no outbox write at all, as for a delivery acked
    # before its sync (RabbitMQ has it on disk)
    from tests.core.test_uplink import FakeAmqp

    events = []

    async def then(srv, pub, up):
        up.connected(0)
        fake = up.c = FakeAmqp()
        up._events([("ready",)], 0)
        if up.commands:  # the command queue's declare answered first (edge/bridge/commands.py)
            up._events([("declare_ok", "edge.%s.cmd" % up.edge_id, 0, 0)], 0)
        # the commit the held PUBACK asks for comes at the end of this loop
        # pass; the confirm arrives first
        srv.received(pub, codec.encode(Publish("m/1", b"x", 1, False, False, 5)))
        assert events == [], events
        tag = [i + 1 for i, s in enumerate(fake.sent) if s[0] == "m.1"][0]
        up._events([("confirm", tag, False)], 0)
        assert up.confirmed == 1
        srv.flush()
        assert events == [("pub", PUBACK_5)], events
        await asyncio.sleep(0.01)

    _serve(_Files(events, "store"), _Files(events, "outbox"), then, events)
    assert events == [("pub", PUBACK_5)], events  # no outbox write, no sync


def test_puback_after_the_outbox_fsync_with_the_sync_helper(tmp_path):
    # Real files, synced by flash_cpython.Syncer's helper process in the
    # same request as the store's: when the PUBACK is written, the outbox
    # log says its record is synced
    from edge.runtime.flash import Flash

    (tmp_path / "s").mkdir()
    (tmp_path / "o").mkdir()
    seen = []

    class Tr(_Transport):
        def write(self, data):
            seen.append((bytes(data), self.oblog.synced, self.oblog.syncs))

    async def then(srv, pub, up):
        Tr.oblog = srv.outbox
        pub.tr.__class__ = Tr
        for pid in (5, 6, 7):
            srv.received(pub, codec.encode(Publish("m/%d" % pid, b"x", 1, False, False, pid)))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(seen) >= 3:
                break

    _serve(Flash(str(tmp_path / "s")), Flash(str(tmp_path / "o")), then, [])
    acks = b"".join(s[0] for s in seen)
    assert acks == PUBACK_5 + b"\x40\x02\x00\x06\x40\x02\x00\x07", seen
    # each PUBACK's own record (outbox seq = its pid - 4) was synced first
    n = 0
    for data, synced, syncs in seen:
        n += data.count(b"\x40\x02")
        assert synced >= n and syncs >= 1, seen


def test_coap_204_waits_for_the_outbox_sync():
    # The same gate for a CoAP publish (udp_cpython.py flushes through the
    # TCP shell's settled()): the 2.04 after the outbox's record is synced
    from edge.coap.endpoint import Endpoint
    from edge.runtime.udp_cpython import UdpServer
    from tests.core._coap import PEER, POST, Limits, request

    events = []

    class Dgram:
        def sendto(self, data, addr):
            events.append(("coap", bytes(data)))

    async def then(srv, pub, up):
        ep = Endpoint(srv.broker, Limits(), lambda: 0.5)
        udp = UdpServer(ep, srv, lambda level, msg: None)
        udp.tr = Dgram()
        srv.udp = udp
        udp.received(request(POST, "ps/m/2", query=("qos=1",), payload=b"v"), PEER)
        assert len(up.q) == 1 and events == [], events  # held
        for _ in range(50):
            await asyncio.sleep(0.001)
            if any(e[0] == "coap" for e in events):
                break

    _serve(_Files(events, "store"), _Files(events, "outbox"), then, events)
    ev = [e if e[0] != "coap" else ("coap", e[1][1]) for e in events if e[1] != "append"]
    assert ev == [("outbox", "sync"), ("coap", 0x44)], events  # 2.04 Changed
