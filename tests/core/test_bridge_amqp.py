# The uplink's AMQP 0-9-1 client (edge/bridge/amqp.py, amqpwire.py), sans-IO:
# golden frames derived by hand from the AMQP 0-9-1 specification (frame
# layout §4.2.3, method arguments from the class reference, field tables
# §4.2.5.5 as RabbitMQ types them, content headers §4.2.6), every split of
# the server's bytes, heartbeats, and each protocol error. Plain assert
# functions (tests/mpy_runner.py runs them under MicroPython too).
from edge.bridge import amqp, amqpwire
from edge.bridge.amqp import Amqp
from edge.errors import LocalProtocolError, RemoteProtocolError
from tests.core._util import raises

END = b"\xce"


def frame(ftype, ch, payload):
    # §4.2.3: type octet, channel short, size long, payload, frame-end
    return bytes((ftype, ch >> 8, ch & 255)) + len(payload).to_bytes(4, "big") + payload + END


def method(ch, payload):
    return frame(1, ch, payload)


# ---- the server's side of a handshake, by hand -------------------------------
# connection.start (10, 10): version 0-9, server-properties {product:
# "RabbitMQ"}, mechanisms "AMQPLAIN PLAIN", locales "en_US"
START = (b"\x01\x00\x00\x00\x00\x00\x3a"
         b"\x00\x0a\x00\x0a" b"\x00\x09"
         b"\x00\x00\x00\x15" b"\x07product" b"S\x00\x00\x00\x08RabbitMQ"
         b"\x00\x00\x00\x0eAMQPLAIN PLAIN"
         b"\x00\x00\x00\x05en_US" b"\xce")
# connection.tune (10, 30): channel-max 2047, frame-max 131072, heartbeat 60
TUNE = b"\x01\x00\x00\x00\x00\x00\x0c" b"\x00\x0a\x00\x1e" b"\x07\xff" b"\x00\x02\x00\x00" b"\x00\x3c" b"\xce"
# connection.open-ok (10, 41): reserved shortstr ""
OPEN_OK = b"\x01\x00\x00\x00\x00\x00\x05" b"\x00\x0a\x00\x29" b"\x00" b"\xce"
# channel.open-ok (20, 11) on channel 1: reserved longstr ""
CH_OPEN_OK = b"\x01\x00\x01\x00\x00\x00\x08" b"\x00\x14\x00\x0b" b"\x00\x00\x00\x00" b"\xce"
# confirm.select-ok (85, 11)
SELECT_OK = b"\x01\x00\x01\x00\x00\x00\x04" b"\x00\x55\x00\x0b" b"\xce"
HANDSHAKE = START + TUNE + OPEN_OK + CH_OPEN_OK + SELECT_OK

# What the client answers (besides start-ok, checked by its parts):
# tune-ok (10, 31): 2047, 131072, heartbeat 15 (ours, smaller than 60)
TUNE_OK = b"\x01\x00\x00\x00\x00\x00\x0c" b"\x00\x0a\x00\x1f" b"\x07\xff" b"\x00\x02\x00\x00" b"\x00\x0f" b"\xce"
# connection.open (10, 40): vhost "/", reserved "", reserved bit 0
OPEN = b"\x01\x00\x00\x00\x00\x00\x08" b"\x00\x0a\x00\x28" b"\x01/" b"\x00" b"\x00" b"\xce"
# channel.open (20, 10) on channel 1: reserved ""
CH_OPEN = b"\x01\x00\x01\x00\x00\x00\x05" b"\x00\x14\x00\x0a" b"\x00" b"\xce"
# confirm.select (85, 10): no-wait 0
SELECT = b"\x01\x00\x01\x00\x00\x00\x05" b"\x00\x55\x00\x0a" b"\x00" b"\xce"
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def ready(now=0, **kw):
    c = Amqp("guest", "guest", now=now, **kw)
    c.take()
    assert c.feed(HANDSHAKE, now) == [("ready",)]
    c.take()
    return c


def test_protocol_header_first():
    c = Amqp("guest", "guest")
    assert bytes(c.take()) == b"AMQP\x00\x00\x09\x01"  # §4.2.2
    assert bytes(c.take()) == b""


def test_handshake_golden():
    c = Amqp("guest", "guest")
    c.take()
    assert c.feed(START, 0) == []
    out = bytes(c.take())
    # start-ok (10, 11) on channel 0: client-properties, then mechanism
    # "PLAIN", response "\0guest\0guest" (RFC 4616), locale "en_US"
    assert out[:3] == b"\x01\x00\x00" and out[7:11] == b"\x00\x0a\x00\x0b"
    assert int.from_bytes(out[3:7], "big") == len(out) - 8 and out[-1:] == END
    assert out.endswith(b"\x05PLAIN" b"\x00\x00\x00\x0c\x00guest\x00guest" b"\x05en_US" + END)
    props, i = amqpwire.read_table(memoryview(out), 11, len(out) - 1)
    assert props["product"] == "edgebroker"
    caps = props["capabilities"]
    for k in ("publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked",
              "authentication_failure_close"):
        assert caps[k] is True, k
    assert c.server_properties == {"product": "RabbitMQ"}
    assert c.feed(TUNE, 0) == []
    assert bytes(c.take()) == TUNE_OK + OPEN
    assert (c.channel_max, c.frame_max, c.heartbeat) == (2047, 131072, 15)
    assert c.feed(OPEN_OK, 0) == []
    assert bytes(c.take()) == CH_OPEN
    assert c.feed(CH_OPEN_OK, 0) == []
    assert bytes(c.take()) == SELECT
    assert c.feed(SELECT_OK, 0) == [("ready",)]
    assert c.state == amqp.READY
    assert bytes(c.take()) == b""


def test_tune_negotiation():
    # 0 is "no limit" on either side; else the smaller value
    for ours, theirs, want in ((0, 60, 60), (15, 0, 15), (15, 60, 15), (90, 60, 60), (0, 0, 0)):
        c = Amqp("u", "p", heartbeat=ours, frame_max=0)
        c.take()
        c.feed(START, 0)
        tune = b"\x00\x0a\x00\x1e" + b"\x00\x00" + b"\x00\x00\x10\x00" + theirs.to_bytes(2, "big")
        c.feed(method(0, tune), 0)
        assert c.heartbeat == want and c.frame_max == 4096 and c.channel_max == 0
    c = Amqp("u", "p", frame_max=4096, channel_max=1)
    c.take()
    c.feed(START + TUNE, 0)
    assert (c.channel_max, c.frame_max) == (1, 4096)


def test_vhost_in_open():
    c = Amqp("u", "p", vhost="edge")
    c.take()
    c.feed(START + TUNE, 0)
    assert bytes(c.take()).endswith(method(0, b"\x00\x0a\x00\x28" b"\x04edge" b"\x00\x00"))


# ---- publish ----------------------------------------------------------------
# basic.publish (60, 40): reserved 0, exchange "amq.topic", routing-key
# "a.b.c", mandatory 1
PUBLISH = method(1, b"\x00\x3c\x00\x28" b"\x00\x00" b"\x09amq.topic" b"\x05a.b.c" b"\x01")
# its content header (§4.2.6): class 60, weight 0, body size 2, flags
# headers | delivery-mode | message-id = 0x2000 | 0x1000 | 0x0080, then the
# headers table {x-mqtt-publish-qos: b 1, x-mqtt-dup: t 0}, delivery-mode 2,
# message-id "e:1"
QOS_TABLE = (b"\x00\x00\x00\x22" b"\x12x-mqtt-publish-qos" b"b\x01" b"\x0ax-mqtt-dup" b"t\x00")
HEADER = frame(2, 1, b"\x00\x3c\x00\x00" b"\x00\x00\x00\x00\x00\x00\x00\x02" b"\x30\x80"
               + QOS_TABLE + b"\x02" b"\x03e:1")
BODY = frame(3, 1, b"hi")


def test_publish_golden():
    c = ready()
    assert c.publish("a.b.c", b"hi", qos=1, message_id="e:1") == 1
    assert bytes(c.take()) == PUBLISH + HEADER + BODY


def test_publish_qos0_content_type_headers_not_mandatory():
    c = ready()
    c.publish("k", b"", qos=0, content_type="text/plain", headers=[("n", 5)], mandatory=False)
    out = bytes(c.take())
    pub = method(1, b"\x00\x3c\x00\x28" b"\x00\x00" b"\x09amq.topic" b"\x01k" b"\x00")
    # flags content-type | headers | delivery-mode = 0x8000 | 0x2000 | 0x1000;
    # QoS 0 is transient (delivery-mode 1); an empty body has no body frame
    table = (b"\x00\x00\x00\x29" b"\x12x-mqtt-publish-qos" b"b\x00" b"\x0ax-mqtt-dup" b"t\x00"
             b"\x01n" b"I\x00\x00\x00\x05")
    hdr = frame(2, 1, b"\x00\x3c\x00\x00" + bytes(8) + b"\xb0\x00" b"\x0atext/plain" + table + b"\x01")
    assert out == pub + hdr
    assert c.tag == 1


def test_message_id_kept_beside_content_type_and_headers():
    # the same properties, message_id included, whichever path encodes them
    # (the uplink's cached one, or a caller's content type and headers)
    a = ready()
    a.publish("k", b"x", qos=1, message_id="e:7")
    b = ready()
    b.publish("k", b"x", qos=1, message_id="e:7", content_type="text/plain", headers=[("n", 5)])
    for c, extra in ((a, {}), (b, {"content_type": "text/plain"})):
        out = bytes(c.take())
        i = out.index(b"\x02\x00\x01")  # the content header frame
        props = amqpwire.read_props(memoryview(out), i + 7 + 12, len(out))
        assert props["message_id"] == "e:7", props
        assert props["delivery_mode"] == 2
        for k in extra:
            assert props[k] == extra[k]


def test_body_split_at_frame_max():
    c = Amqp("u", "p", frame_max=4096)
    c.take()
    c.feed(HANDSHAKE, 0)
    c.take()
    body = bytes(range(256)) * 40  # 10240 bytes: 4088 + 4088 + 2064
    c.publish("k", body)
    out = bytes(c.take())
    i = out.index(b"\x03\x00\x01")
    frames = []
    while i < len(out):
        assert out[i] == 3
        n = int.from_bytes(out[i + 3:i + 7], "big")
        assert out[i + 7 + n] == 0xCE
        frames.append(out[i + 7:i + 7 + n])
        i += 8 + n
    assert [len(f) for f in frames] == [4088, 4088, 2064]
    assert b"".join(frames) == body


def test_publish_before_ready_is_a_local_error():
    c = Amqp("u", "p")
    raises(LocalProtocolError, c.publish, "k", b"x")
    c.feed(START + TUNE, 0)
    raises(LocalProtocolError, c.ack, 1)
    c = ready()
    raises(LocalProtocolError, c.publish, "k" * 256, b"x")  # a shortstr holds 255


def test_confirms_by_delivery_tag():
    c = ready()
    for _ in range(3):
        c.publish("k", b"x")
    ack1 = method(1, b"\x00\x3c\x00\x50" + (1).to_bytes(8, "big") + b"\x00")
    ack3m = method(1, b"\x00\x3c\x00\x50" + (3).to_bytes(8, "big") + b"\x01")
    nack2 = method(1, b"\x00\x3c\x00\x78" + (2).to_bytes(8, "big") + b"\x01")
    assert c.feed(ack1 + ack3m + nack2, 5) == [("confirm", 1, False), ("confirm", 3, True), ("nack", 2, True)]


# ---- content from the server ---------------------------------------------------
# basic.deliver (60, 60): consumer-tag "ctag", delivery-tag 7, redelivered
# 0, exchange "amq.topic", routing-key "cmd.e1.a"
DELIVER = method(1, b"\x00\x3c\x00\x3c" b"\x04ctag" + (7).to_bytes(8, "big") + b"\x00"
                 b"\x09amq.topic" b"\x08cmd.e1.a")
# content header: body 5 bytes, flags content-type | message-id (0x8080)
DELIVER_HDR = frame(2, 1, b"\x00\x3c\x00\x00" + (5).to_bytes(8, "big") + b"\x80\x80"
                    b"\x0bapplication" b"\x02c1")
DELIVER_BODY = frame(3, 1, b"he") + frame(3, 1, b"llo")
DELIVERY = DELIVER + DELIVER_HDR + DELIVER_BODY
DELIVER_EVENT = ("deliver", 7, "cmd.e1.a", {"content_type": "application", "message_id": "c1"}, b"hello")


def test_deliver_and_client_ack():
    c = ready()
    assert c.feed(DELIVERY, 1) == [DELIVER_EVENT]
    c.ack(7)
    c.nack(8, multiple=True)
    c.nack(9, requeue=False)
    assert bytes(c.take()) == (method(1, b"\x00\x3c\x00\x50" + (7).to_bytes(8, "big") + b"\x00")
                               + method(1, b"\x00\x3c\x00\x78" + (8).to_bytes(8, "big") + b"\x03")
                               + method(1, b"\x00\x3c\x00\x78" + (9).to_bytes(8, "big") + b"\x00"))


def test_deliver_empty_body_completes_at_its_header():
    c = ready()
    hdr = frame(2, 1, b"\x00\x3c\x00\x00" + bytes(8) + b"\x00\x00")
    assert c.feed(DELIVER + hdr, 1) == [("deliver", 7, "cmd.e1.a", {}, b"")]


def test_deliver_over_max_body_is_dropped_and_counted():
    c = ready(max_body=4)
    assert c.feed(DELIVERY, 1) == [("oversize", 7, "cmd.e1.a", 5)]
    assert c.oversize == 1 and c._body is None
    assert c.feed(DELIVERY.replace(b"\x00\x00\x00\x05\x80", b"\x00\x00\x00\x04\x80")[:-len(DELIVER_BODY)]
                  + frame(3, 1, b"hell"), 2)[0][4] == b"hell"


def test_basic_return_of_an_unroutable_message():
    c = ready()
    c.publish("a.b.c", b"hi", message_id="e:1")
    # basic.return (60, 50): 312 NO_ROUTE, exchange, routing-key; then the
    # content as we sent it
    ret = method(1, b"\x00\x3c\x00\x32" b"\x01\x38" b"\x08NO_ROUTE" b"\x09amq.topic" b"\x05a.b.c")
    ack = method(1, b"\x00\x3c\x00\x50" + (1).to_bytes(8, "big") + b"\x00")
    ev = c.feed(ret + HEADER + BODY + ack, 3)
    props = ev[0][4]
    assert ev[0][:4] == ("return", 312, "NO_ROUTE", "a.b.c")
    assert props["message_id"] == "e:1" and props["delivery_mode"] == 2
    assert props["headers"] == {"x-mqtt-publish-qos": 1, "x-mqtt-dup": False}
    assert ev[1:] == [("confirm", 1, False)]
    assert c.returned == 1


def test_queue_bind_qos_consume_golden():
    c = ready()
    c.declare_queue("edge.e1.cmd", arguments=[("x-queue-type", "quorum")])
    # queue.declare (50, 10): reserved 0, queue, bits durable (0x02), arguments
    assert bytes(c.take()) == method(1, b"\x00\x32\x00\x0a" b"\x00\x00" b"\x0bedge.e1.cmd" b"\x02"
                                     b"\x00\x00\x00\x18" b"\x0cx-queue-type" b"S\x00\x00\x00\x06quorum")
    c.bind("edge.e1.cmd", "amq.topic", "cmd.e1.#")
    assert bytes(c.take()) == method(1, b"\x00\x32\x00\x14" b"\x00\x00" b"\x0bedge.e1.cmd" b"\x09amq.topic"
                                     b"\x08cmd.e1.#" b"\x00" b"\x00\x00\x00\x00")
    c.qos(8)
    # basic.qos (60, 10): prefetch-size 0, prefetch-count 8, global 0
    assert bytes(c.take()) == method(1, b"\x00\x3c\x00\x0a" b"\x00\x00\x00\x00" b"\x00\x08" b"\x00")
    c.consume("edge.e1.cmd")
    assert bytes(c.take()) == method(1, b"\x00\x3c\x00\x14" b"\x00\x00" b"\x0bedge.e1.cmd" b"\x00" b"\x00"
                                     b"\x00\x00\x00\x00")
    replies = (method(1, b"\x00\x32\x00\x0b" b"\x0bedge.e1.cmd" b"\x00\x00\x00\x02" b"\x00\x00\x00\x00")
               + method(1, b"\x00\x32\x00\x15") + method(1, b"\x00\x3c\x00\x0b")
               + method(1, b"\x00\x3c\x00\x15" b"\x04ctag"))
    assert c.feed(replies, 1) == [("declare_ok", "edge.e1.cmd", 2, 0), ("bind_ok",), ("qos_ok",),
                                  ("consume_ok", "ctag")]
    # basic.cancel from the server (no-wait 0): answered with cancel-ok
    assert c.feed(method(1, b"\x00\x3c\x00\x1e" b"\x04ctag" b"\x00"), 2) == [("cancelled", "ctag")]
    assert bytes(c.take()) == method(1, b"\x00\x3c\x00\x1f" b"\x04ctag")


# ---- closing, blocking -----------------------------------------------------------
def test_connection_close_from_the_server():
    c = ready()
    # connection.close (10, 50): 320 CONNECTION_FORCED, text, class 0, method 0
    close = method(0, b"\x00\x0a\x00\x32" b"\x01\x40" b"\x05gone!" b"\x00\x00\x00\x00")
    assert c.feed(close + DELIVERY, 1) == [("closed", 320, "gone!")]
    assert bytes(c.take()) == method(0, b"\x00\x0a\x00\x33")  # close-ok
    assert c.state == amqp.CLOSED
    assert c.feed(HEARTBEAT, 2) == [] and c.tick(10 ** 9) == ()


def test_channel_close_from_the_server():
    c = ready()
    close = method(1, b"\x00\x14\x00\x28" b"\x01\x94" b"\x09NOT_FOUND" b"\x00\x3c\x00\x28")
    assert c.feed(close, 1) == [("channel_closed", 404, "NOT_FOUND")]
    assert bytes(c.take()) == method(1, b"\x00\x14\x00\x29")  # channel.close-ok
    assert c.state == amqp.NO_CHANNEL
    raises(LocalProtocolError, c.publish, "k", b"")
    c.close()
    assert bytes(c.take()) == method(0, b"\x00\x0a\x00\x32" b"\x00\xc8" b"\x00" b"\x00\x00\x00\x00")


def test_client_close():
    c = ready()
    c.close(200, "bye")
    # connection.close (10, 50): 200, "bye", class 0, method 0
    assert bytes(c.take()) == method(0, b"\x00\x0a\x00\x32" b"\x00\xc8" b"\x03bye" b"\x00\x00\x00\x00")
    c.close()
    assert bytes(c.take()) == b""  # once
    # §1.4.2.9: until close-ok, everything else is discarded (content too)
    ack = method(1, b"\x00\x3c\x00\x50" + (1).to_bytes(8, "big") + b"\x00")
    assert c.feed(ack + DELIVERY + HEARTBEAT + method(0, b"\x00\x0a\x00\x33"), 1) == [("close_ok",)]
    assert c.state == amqp.CLOSED and bytes(c.take()) == b""
    c = Amqp("u", "p")
    c.close()  # before any handshake: nothing to say
    assert c.state == amqp.CLOSED


def test_blocked_unblocked():
    c = ready()
    blocked = method(0, b"\x00\x0a\x00\x3c" b"\x0dlow on memory")
    assert c.feed(blocked, 1) == [("blocked", "low on memory")] and c.blocked
    assert c.feed(method(0, b"\x00\x0a\x00\x3d"), 2) == [("unblocked",)] and not c.blocked


# ---- heartbeats (§4.2.7) -------------------------------------------------------------
def test_heartbeat_sent_when_idle():
    c = ready(now=1000)  # heartbeat 15 s
    assert c.tick(1000) == ()  # the handshake's writes count from here
    assert c.tick(15999) == () and bytes(c.take()) == b""
    assert c.tick(16000) == () and bytes(c.take()) == HEARTBEAT
    c.feed(HEARTBEAT, 20000)
    c.publish("k", b"x")
    c.take()
    assert c.tick(20500) == ()  # a write: the idle time starts again
    assert c.tick(35499) == () and bytes(c.take()) == b""
    assert c.tick(35500) == () and bytes(c.take()) == HEARTBEAT


def test_dead_after_two_silent_intervals():
    c = ready(now=1000)
    c.feed(HEARTBEAT, 5000)  # heartbeats are activity, and produce no event
    assert c.tick(34999) == ()
    assert c.tick(35000) == (("dead",),)
    assert c.state == amqp.CLOSED and c.tick(99999) == ()


def test_no_heartbeat_when_both_sides_say_0():
    c = Amqp("u", "p", heartbeat=0)
    c.take()
    tune0 = method(0, b"\x00\x0a\x00\x1e" b"\x00\x00" b"\x00\x02\x00\x00" b"\x00\x00")
    c.feed(START + tune0 + OPEN_OK + CH_OPEN_OK + SELECT_OK, 0)
    c.take()
    assert c.heartbeat == 0 and c.tick(10 ** 9) == () and bytes(c.take()) == b""


# ---- split feeds --------------------------------------------------------------------
SCRIPT = (HANDSHAKE + HEARTBEAT + method(1, b"\x00\x3c\x00\x50" + (1).to_bytes(8, "big") + b"\x00")
          + DELIVERY + method(0, b"\x00\x0a\x00\x3c" b"\x03mem") + method(0, b"\x00\x0a\x00\x3d")
          + method(0, b"\x00\x0a\x00\x32" b"\x01\x40" b"\x01x" b"\x00\x00\x00\x00"))
SCRIPT_EVENTS = [("ready",), ("confirm", 1, False), DELIVER_EVENT, ("blocked", "mem"), ("unblocked",),
                 ("closed", 320, "x")]


def _run(chunks):
    c = Amqp("guest", "guest")
    ev = []
    out = bytearray()
    for ch in chunks:
        ev += c.feed(ch, 0)
        out += c.take()
    return ev, bytes(out)


def test_every_split_gives_the_same_events_and_output():
    whole_ev, whole_out = _run([SCRIPT])
    assert whole_ev == SCRIPT_EVENTS
    for k in range(1, len(SCRIPT)):
        assert _run([SCRIPT[:k], SCRIPT[k:]]) == (whole_ev, whole_out), k


def test_byte_at_a_time():
    assert _run([SCRIPT[i:i + 1] for i in range(len(SCRIPT))])[0] == SCRIPT_EVENTS
    # a bytearray or memoryview feed is copied, never kept
    ba = bytearray(SCRIPT)
    assert _run([memoryview(ba)[:100], memoryview(ba)[100:]])[0] == SCRIPT_EVENTS


# ---- errors --------------------------------------------------------------------
def _remote(c, data, reason):
    e = raises(RemoteProtocolError, c.feed, data, 0)
    assert e.reason == reason, (e.reason, e)


def test_server_refuses_our_version():
    c = Amqp("u", "p")
    assert c.feed(b"AMQ", 0) == []  # maybe a protocol header: wait
    _remote(c, b"P\x00\x00\x09\x01", 540)


def test_frame_errors():
    _remote(ready(), HEARTBEAT[:-1] + b"\x00", 501)  # no frame-end
    _remote(ready(frame_max=4096), b"\x03\x00\x01\x00\x00\x10\x00", 501)  # over frame-max
    _remote(ready(), frame(4, 0, b""), 501)  # unknown frame type
    _remote(ready(), frame(8, 1, b""), 503)  # heartbeat on a channel
    _remote(ready(), method(1, b"\x00\x0a\x00\x3d"), 504)  # connection method on channel 1
    _remote(ready(), method(0, b"\x00\x3c\x00\x50" + bytes(9)), 504)  # basic on channel 0
    _remote(ready(), method(1, b"\x00\x3c\x00\x64" + bytes(9)), 540)  # unknown method
    _remote(ready(), method(1, b"\x00\x3c"), 502)  # short method frame
    _remote(ready(), method(1, b"\x00\x3c\x00\x50" + bytes(5)), 502)  # arguments cut short


def test_content_errors():
    _remote(ready(), DELIVER_BODY, 505)  # body before a header
    _remote(ready(), DELIVER_HDR, 505)  # header before a method
    _remote(ready(), DELIVER + method(1, b"\x00\x3c\x00\x0b"), 505)  # method inside content
    _remote(ready(), DELIVER + DELIVER_HDR + frame(3, 1, b"toolong"), 501)  # past its size
    _remote(ready(), DELIVER + frame(2, 1, b"\x00\x3c"), 502)  # short header
    flags_cont = frame(2, 1, b"\x00\x3c\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x01")
    _remote(ready(), DELIVER + flags_cont, 502)


def test_handshake_errors():
    c = Amqp("u", "p")
    _remote(c, START.replace(b"\x00\x09\x00\x00\x00\x15", b"\x00\x08\x00\x00\x00\x15"), 540)
    _remote(Amqp("u", "p"), START.replace(b"AMQPLAIN PLAIN", b"AMQPLAIN EXTRA"), 540)
    _remote(Amqp("u", "p"), TUNE, 505)  # tune before start
    c = Amqp("u", "p")
    c.feed(START, 0)
    _remote(c, START, 505)
    c = Amqp("u", "p")
    c.feed(START, 0)
    _remote(c, method(0, b"\x00\x0a\x00\x1e" b"\x00\x00" b"\x00\x00\x04\x00" b"\x00\x00"), 501)  # frame-max 1024


# ---- field tables (§4.2.5.5, RabbitMQ's types) ------------------------------------
# every type RabbitMQ sends, by hand: name, type octet, value
ALL_TYPES = (b"\x01t" b"t\x01"
             b"\x01b" b"b\xfe"                               # -2
             b"\x01B" b"B\xfe"                               # 254
             b"\x01s" b"s\xff\xfe"                           # -2 (RabbitMQ: signed short)
             b"\x01u" b"u\xff\xfe"                           # 65534
             b"\x01I" b"I\xff\xff\xff\xfe"                   # -2
             b"\x01i" b"i\xff\xff\xff\xfe"                   # 4294967294
             b"\x01l" b"l\xff\xff\xff\xff\xff\xff\xff\xfe"   # -2
             b"\x01L" b"L\x00\x00\x00\x01\x00\x00\x00\x00"   # 2 ** 32
             b"\x01f" b"f\x3e\x80\x00\x00"                   # 0.25
             b"\x01d" b"d\x3f\xf8\x00\x00\x00\x00\x00\x00"   # 1.5
             b"\x01D" b"D\x02\x00\x00\x01\x3b"               # 3.15 as scale 2, 315
             b"\x01S" b"S\x00\x00\x00\x02hi"
             b"\x01T" b"T\x00\x00\x00\x00\x65\x00\x00\x00"   # a timestamp
             b"\x01F" b"F\x00\x00\x00\x03" b"\x01V" b"V"     # {"V": None}
             b"\x01x" b"x\x00\x00\x00\x02\x00\xff"
             b"\x01A" b"A\x00\x00\x00\x07" b"b\x01" b"S\x00\x00\x00\x00")  # [1, ""]
ALL_VALUES = [("t", True), ("b", -2), ("B", 254), ("s", -2), ("u", 65534), ("I", -2), ("i", 4294967294),
              ("l", -2), ("L", 2 ** 32), ("f", 0.25), ("d", 1.5), ("D", (2, 315)), ("S", "hi"),
              ("T", 0x65000000), ("F", {"V": None}), ("x", b"\x00\xff"), ("A", [1, ""])]


def test_field_table_decodes_every_type():
    data = len(ALL_TYPES).to_bytes(4, "big") + ALL_TYPES
    d, i = amqpwire.read_table(memoryview(data), 0, len(data))
    assert i == len(data)
    for k, v in ALL_VALUES:
        assert d[k] == v, (k, d[k], v)
    assert type(d["t"]) is bool


def test_field_table_encodes_every_type():
    out = bytearray()
    typed = [(k, (k, v)) for k, v in ALL_VALUES]
    typed[14] = ("F", ("F", [("V", None)]))
    typed[16] = ("A", ("A", [("b", 1), ""]))
    amqpwire.write_table(out, typed)
    assert bytes(out) == len(ALL_TYPES).to_bytes(4, "big") + ALL_TYPES


def test_field_values_typed_by_python_type():
    out = bytearray()
    amqpwire.write_table(out, [("a", True), ("b", 7), ("c", 2 ** 40), ("d", 0.5), ("e", "é"),
                               ("f", None), ("g", b"\x01"), ("h", {}), ("i", [])])
    assert bytes(out) == (b"\x00\x00\x00\x43" b"\x01at\x01" b"\x01bI\x00\x00\x00\x07"
                          b"\x01cl\x00\x00\x01\x00\x00\x00\x00\x00" b"\x01dd\x3f\xe0" + bytes(6)
                          + b"\x01eS\x00\x00\x00\x02\xc3\xa9" b"\x01fV" b"\x01gx\x00\x00\x00\x01\x01"
                          b"\x01hF\x00\x00\x00\x00" b"\x01iA\x00\x00\x00\x00")
    d, _ = amqpwire.read_table(memoryview(out), 0, len(out))
    assert d == {"a": True, "b": 7, "c": 2 ** 40, "d": 0.5, "e": "é", "f": None, "g": b"\x01", "h": {}, "i": []}


def test_field_table_errors():
    for bad in (b"\x00\x00\x00\x03\x01aZ",            # unknown type
                b"\x00\x00\x00\x05\x01aI\x00\x00",    # value past the table
                b"\x00\x00\x00\x09\x01a",             # table past the frame
                b"\x00\x00\x00\x02\x05a"):             # name past the table
        e = raises(RemoteProtocolError, amqpwire.read_table, memoryview(bad), 0, len(bad))
        assert e.reason == 502, bad
    raises(LocalProtocolError, amqpwire.write_value, bytearray(), ("Z", 1))


def test_properties_round_trip():
    props = {"content_type": "a/b", "content_encoding": "gzip", "headers": {"k": 1},
             "delivery_mode": 2, "priority": 9, "correlation_id": "c", "reply_to": "r",
             "expiration": "60000", "message_id": "m", "timestamp": 1700000000, "type": "t",
             "user_id": "guest", "app_id": "edge", "cluster_id": ""}
    out = bytearray()
    amqpwire.write_props(out, props)
    assert out[:2] == b"\xff\xfc"  # all 14 flags, no continuation
    assert amqpwire.read_props(memoryview(out), 0, len(out)) == props


def test_publish_fast_path_writes_the_general_encoders_bytes():
    # publish() writes the uplink's common case (no extra headers, one body
    # frame) straight into `out`: the same octets as the general encoder
    # (_publish), for both QoS, with and without message-id, an empty body,
    # another exchange, mandatory off; then the same delivery tags
    cases = [("a.b.c", b"21.5", 1, "e1:7", True, "amq.topic"),
             ("a", b"", 0, None, True, "amq.topic"),
             ("x.y", b"z" * 4000, 1, "edge-42:123456789", False, "plant"),
             ("k" * 255, b"\x00\xce", 0, "m" * 255, True, "amq.topic")]
    for rk, body, qos, mid, mandatory, ex in cases:
        c1, c2 = ready(), ready()
        for _ in range(2):  # (the second time from the caches)
            t1 = c1.publish(rk, body, qos, mid, mandatory=mandatory, exchange=ex)
            t2 = c2._publish(rk, body, qos, mid, None, None, mandatory, ex)
            assert t1 == t2
            assert bytes(c1.take()) == bytes(c2.take()), (rk, qos, mid)
    # over a frame or a 255-octet key: the general path (split, or refused)
    c = ready(frame_max=4096)
    c.publish("k", b"b" * 5000, 1, "m")
    assert bytes(c.take()).count(b"\xce\x03\x00\x01") == 2  # two body frames
    raises(LocalProtocolError, lambda: ready().publish("k" * 256, b"", 1))
