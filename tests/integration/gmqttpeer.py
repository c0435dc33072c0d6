# gmqtt (PyPI), an MQTT 5.0 / 3.1.1 client written independently of paho, as a
# peer for the interop tests (test_10_interop.py). gmqtt is asyncio-based: a
# test runs one coroutine with run(), and its clients live in a Peers group
# that disconnects (or aborts) every one of them on the way out.
# Every wait has a deadline; nothing sleeps blindly.
import asyncio
import time

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from .clients import unique_id

DEFAULT_TIMEOUT = 10.0
VERSIONS = {5: MQTTv50, 4: MQTTv311}


def run(coro, timeout=30.0):
    """Run one test's coroutine on a fresh event loop, within timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class _Client(gmqtt.Client):
    # gmqtt reconnects by itself after any loss (every 6 s, forever), also
    # after a takeover, which would take the session back. A test's client
    # never does: each connection here is one the test makes.
    async def reconnect(self, delay=False):
        return


class Received:
    __slots__ = ("topic", "payload", "qos", "props", "t")

    def __init__(self, topic, payload, qos, props, t):
        self.topic, self.payload, self.qos, self.props, self.t = topic, payload, qos, props, t

    def prop(self, name, default=None):
        """One property's value (gmqtt gives lists, as a property may repeat;
        the flags "dup" and "retain" it adds are plain ints)."""
        v = self.props.get(name, default)
        return v[0] if isinstance(v, list) and v else v

    def __repr__(self):
        return "Received(%r, %r, qos=%d)" % (self.topic, self.payload[:40], self.qos)


class Peer:
    """One gmqtt client. Its callbacks record what arrives; wait_for() waits on
    them. hold: seconds each QoS 1/2 delivery is held before it is
    acknowledged (gmqtt then acks after on_message, not on receipt), with
    the number held at once recorded in max_held."""

    def __init__(self, broker, client_id=None, version=5, clean=True, will=None, hold=None,
                 keepalive=60, **connect_props):
        self.broker = broker
        self.client_id = client_id or unique_id("gmqtt")
        self.version = version
        self.c = _Client(self.client_id, clean_session=clean, will_message=will,
                         optimistic_acknowledgement=hold is None, **connect_props)
        self.keepalive = keepalive
        self.hold = hold
        self.held = self.max_held = 0
        self.messages = []
        self.connacks = []       # (session_present, reason code, properties)
        self.subacks = {}        # mid -> granted codes
        self.disconnects = []    # DISCONNECT bodies; b"" when the socket closed without one
        self._changed = asyncio.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_disconnect = self._on_disconnect

    # -- callbacks (event loop) --
    def _note(self):
        self._changed.set()

    def _on_connect(self, client, session_present, rc, props):
        self.connacks.append((session_present, rc, props))
        self._note()

    async def _on_message(self, client, topic, payload, qos, props):
        # a coroutine: gmqtt runs each as a task, started in arrival order
        self.messages.append(Received(topic, bytes(payload), qos, props, time.monotonic()))
        self._note()
        if self.hold is not None and qos > 0:
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            try:
                await asyncio.sleep(self.hold)
            finally:
                self.held -= 1
        return 0  # PUBACK / PUBREC reason code when not acknowledged on receipt

    def _on_subscribe(self, client, mid, granted, props):
        self.subacks[mid] = list(granted)
        self._note()

    def _on_disconnect(self, client, packet, exc=None):
        self.disconnects.append(bytes(packet) if isinstance(packet, (bytes, bytearray)) else packet)
        self._note()

    # -- waiting --
    async def wait_for(self, pred, timeout=DEFAULT_TIMEOUT, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: timed out after %.1fs waiting for %s; messages=%r"
                                     % (self.client_id, timeout, what, self.messages[-20:]))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_messages(self, n, timeout=DEFAULT_TIMEOUT, topic=None):
        def sel():
            return [m for m in self.messages if topic is None or m.topic == topic]
        await self.wait_for(lambda: len(sel()) >= n, timeout,
                            "%d message(s)%s" % (n, " on %r" % topic if topic else ""))
        return sel()

    # -- operations --
    async def connect(self, expect_present=None):
        """Connect (CONNACK 0 expected); returns (session_present, CONNACK properties)."""
        await self.c.connect(self.broker.host, self.broker.port, keepalive=self.keepalive,
                             version=VERSIONS[self.version])
        assert self.connacks, "connect() returned without a CONNACK"
        sp, rc, props = self.connacks[-1]
        assert rc == 0, "CONNACK %#x" % rc
        if expect_present is not None:
            assert bool(sp) == expect_present, "session present %r" % sp
        return bool(sp), props

    async def subscribe(self, topic, qos=0, **kw):
        mid = self.c.subscribe(topic, qos, **kw)
        await self.wait_for(lambda: mid in self.subacks, what="SUBACK")
        return self.subacks[mid]

    async def publish(self, topic, payload, qos=0, **props):
        """Publish, pacing by the window gmqtt allows: its packet identifiers
        are as many as the broker's Receive Maximum lets it have unacked, and
        publish() raises OverflowError when they are all in use."""
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while True:
            try:
                self.c.publish(topic, payload, qos, **props)
                return
            except OverflowError:
                assert time.monotonic() < deadline, "%s: window never reopened" % self.client_id
                await self.acked()

    async def acked(self, timeout=DEFAULT_TIMEOUT):
        """Wait until every QoS 1/2 message published is acknowledged (PUBACK,
        PUBCOMP): gmqtt keeps each one until then, and connect() itself
        waits on the same store."""
        await asyncio.wait_for(self.c._persistent_storage.wait_empty(), timeout)

    async def disconnect(self, **props):
        await asyncio.wait_for(self.c.disconnect(**props), 5)

    def drop(self):
        """Close the socket with no DISCONNECT (an unclean loss: the will is due)."""
        self.c._connection._transport.abort()

    @property
    def connected(self):
        return self.c._connection is not None and self.c.is_connected

    async def close(self):
        try:
            if self.connected:
                await self.disconnect()
        finally:
            conn = self.c._connection
            if conn is not None and not conn.is_closing():
                conn._transport.abort()


class Peers:
    """async with Peers(broker) as peers: every peer made is closed at the end."""

    def __init__(self, broker):
        self.broker = broker
        self.made = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for p in self.made:
            try:
                await p.close()
            except Exception:
                pass
        await asyncio.sleep(0)  # let closed transports run their callbacks

    def new(self, **kw):
        p = Peer(self.broker, **kw)
        self.made.append(p)
        return p

    async def connect(self, expect_present=None, **kw):
        p = self.new(**kw)
        await p.connect(expect_present)
        return p
