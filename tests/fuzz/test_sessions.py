# Whole client sessions, mutated, fed into an in-memory Broker in random
# pieces (issue #21 point 5): whatever the bytes, data_received() and tick()
# raise nothing (a protocol error closes that connection, nothing else), and
# a well-behaved client beside it is served before and after. The socket
# version of this against a live broker on both runtimes is tools/fuzz.py.
from hypothesis import given
from hypothesis import strategies as st

from tests.core import _coap
from tests.core._pair import Client, make_broker, publish, publishes
from tests.fuzz.strategies import chunks, fuzz, mutated
from tests.fuzz.test_decoders import COAP as COAP_REQUESTS
from tools.fuzz import session


SESSIONS = [session(False), session(True)]


@fuzz
@given(mutated(SESSIONS), st.lists(st.integers(0, 512), max_size=6), st.integers(0, 120000))
def test_mutated_sessions_never_break_the_broker(data, cuts, later):
    b = make_broker()
    canary = Client(b)
    canary.connect("canary", keepalive=0)  # the ticks below must not close it
    canary.subscribe(("#", 0))
    fz = Client(b)
    for piece in chunks(data, cuts):
        fz.send_raw(piece)
    b.tick(later)  # keepalive and connect timeouts, will delays
    fz.lose(later)
    b.tick(later + 1)
    # the canary is still served: its own publish comes back to it
    got = publishes(publish(canary, "canary/ping", b"ok"))
    assert [(p.topic, p.payload) for p in got if p.topic == "canary/ping"] == [("canary/ping", b"ok")]
    assert len(b.conns) == 1


@fuzz
@given(st.lists(st.one_of(mutated(COAP_REQUESTS), st.binary(max_size=64)), min_size=1, max_size=8),
       st.integers(0, 300000))
def test_mutated_datagrams_never_break_the_coap_endpoint(datagrams, later):
    b, ep = _coap.make()
    for i, d in enumerate(datagrams):
        ep.datagram(d, _coap.PEER if i % 2 else _coap.OTHER, i)
    ep.tick(later)
    ep.out.clear()
    # a well-formed request is still answered
    got = _coap.feed(ep, _coap.request(_coap.GET, ".well-known/core", mid=0xBEEF), now=later + 1)
    assert [(m[0], m[1], m[2]) for m in got] == [(_coap.ACK, 0x45, 0xBEEF)]
