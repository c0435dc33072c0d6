# Property-based fuzzing of every decoder (issue #21 point 5, docs/fuzzing.md
# "Fuzzing"): random bytes and mutations of valid messages never raise
# anything but the decoder's own protocol error, and never allocate much
# more than the input's size (a length field claiming 256 MB must not
# reserve it). CPython only: hypothesis does not run on MicroPython; the
# same code runs there, and tools/fuzz.py drives a board-runtime broker.
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from edge.bridge.amqp import Amqp
from edge.bridge.stomp import Stomp
from edge.coap import codec as coap_codec
from edge.errors import RemoteProtocolError
from edge.mqtt import codec
from edge.store import layout, record
from tests.core import _coap, test_bridge_amqp, test_bridge_stomp, test_codec, test_codec_v5
from tests.fuzz.strategies import chunks, fuzz, fuzz_more, inputs, reframed

MQTT3 = [v for _, v in test_codec.VECTORS] + [test_codec.CONNECT_FULL]
MQTT5 = [v for _, v in test_codec_v5.VECTORS] + [test_codec_v5.CONNECT, test_codec_v5.PUBLISH]
COAP = [
    _coap.request(_coap.GET, ".well-known/core", query=("rt=core*",)),
    _coap.request(_coap.POST, "ps/a/b", query=("qos=1", "retain=1"), payload=b"20.5"),
    _coap.request(_coap.GET, "ps/a/+", observe=0, token=b"12345678"),
    _coap.request(_coap.PUT, "ps/big", payload=b"x" * 64, opts=((27, b"\x0a"), (60, b"\x01\x00"))),
    _coap.request(_coap.GET, "r/a", mtype=_coap.NON, opts=((23, b"\x02"),)),
    b"\x41\x01\x7d\x35\x20\xbbtemperature",  # RFC 7252 Figure 17
    # the extended option header forms (RFC 7252 §3.1): a 1-byte delta
    # (Size1 60 first), a 2-byte delta (option 2100), 1- and 2-byte lengths
    _coap.request(_coap.POST, "ps/" + "L" * 20, opts=((60, b"\x05"),), payload=b"hi"),
    _coap.request(_coap.GET, "r/" + "x" * 300, opts=((2100, b"\x01\x02"),)),
]
AMQP = [test_bridge_amqp.HANDSHAKE + test_bridge_amqp.DELIVERY, test_bridge_amqp.HANDSHAKE]
STOMP = [test_bridge_stomp.SCRIPT, test_bridge_stomp.CONNECTED]

# Allowed allocation: twice the input (a decoded payload is a copy) plus a
# constant for the objects a packet is made of.
_SLACK = 16384


def _peak(run):
    """Peak bytes allocated by run(), measured on its second call: the
    first may fill a cache of the interpreter's (a codec lookup, a lazy
    import such as props.py's) once for the process."""
    run()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _bounded(n, run):
    peak = _peak(run)
    assert peak <= 2 * n + _SLACK, "allocated %d bytes for %d bytes of input" % (peak, n)


def _quietly(decode):
    """decode, with its own protocol error the one failure allowed"""
    def run():
        try:
            decode()
        except RemoteProtocolError:
            pass
    return run


@fuzz
@given(st.one_of(inputs(MQTT3), reframed(MQTT3)), st.booleans())
def test_mqtt_packet_decoder(data, v5):
    def decode():
        i = 0
        while i < len(data):
            pkt, used = codec.decode(data, i, len(data), v5)
            if pkt is None:
                break
            i += used
    _bounded(len(data), _quietly(decode))


@fuzz
@given(st.one_of(inputs(MQTT5), reframed(MQTT5)))
def test_mqtt5_packet_and_property_decoder(data):
    _bounded(len(data), _quietly(lambda: codec.decode(data, 0, len(data), True)))


@fuzz_more
@given(inputs(COAP))
def test_coap_message_decoder(data):
    def decode():
        msg = coap_codec.decode(data)  # None: not a CoAP message
        if msg is not None:
            coap_codec.check_options(msg[4])
    _bounded(len(data), decode)


def _fed(client, data, cuts):
    def feed():
        c = client()
        c.take()
        for piece in chunks(data, cuts):
            c.feed(piece, 0)
    return _quietly(feed)


@fuzz
@given(inputs(AMQP, 512), st.lists(st.integers(0, 4096), max_size=4))
def test_amqp_frame_reader(data, cuts):
    _bounded(len(data), _fed(lambda: Amqp("guest", "guest"), data, cuts))


@fuzz
@given(inputs(STOMP, 512), st.lists(st.integers(0, 4096), max_size=4))
def test_stomp_frame_reader(data, cuts):
    _bounded(len(data), _fed(lambda: Stomp("guest", "guest", max_frame=1024), data, cuts))


@fuzz
@given(st.binary(max_size=512))
def test_store_record_reader(data):
    # A torn or damaged segment: records are found or the damage is named
    recs, good_end, err = record.scan(data, 0, len(data))
    assert 0 <= good_end <= len(data)
    assert err is None or isinstance(err, str)
    _bounded(len(data), lambda: record.scan(data, 0, len(data)))


@fuzz
@given(st.sampled_from(sorted(layout.LAYOUTS)), st.binary(max_size=128))
def test_store_record_body_layouts(kind, body):
    # A good CRC over a body that is not ours: ValueError, never anything else
    try:
        layout.decode(kind, body)
    except ValueError:
        pass


def test_every_prefix_of_every_seed():
    # Deterministic beside the random runs: a seed cut at each of its
    # offsets, where a missing bounds check shows at once
    for seed in MQTT3 + MQTT5:
        for v5 in (False, True):
            for k in range(len(seed) + 1):
                _quietly(lambda: codec.decode(seed[:k], 0, k, v5))()
    for seed in COAP:
        for k in range(len(seed) + 1):
            msg = coap_codec.decode(seed[:k])
            if msg is not None:
                coap_codec.check_options(msg[4])
    for seed in AMQP:
        for k in range(len(seed) + 1):
            _fed(lambda: Amqp("guest", "guest"), seed[:k], [])()
    for seed in STOMP:
        for k in range(len(seed) + 1):
            _fed(lambda: Stomp("guest", "guest"), seed[:k], [])()
