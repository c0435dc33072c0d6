# The uplink's STOMP 1.2 client (edge/bridge/stomp.py), sans-IO: golden frames
# written from the STOMP 1.2 specification ("Frames and Headers", "Value
# Encoding", "Heart-beating", the client and server frames), every split of
# the server's bytes, heart-beats and errors. Plain assert functions
# (tests/mpy_runner.py runs them under MicroPython too).
from edge.bridge import stomp
from edge.bridge.stomp import Stomp
from edge.errors import LocalProtocolError, RemoteProtocolError
from tests.core._util import raises

CONNECT = (b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n"
           b"heart-beat:15000,15000\n\n\x00")
CONNECTED = b"CONNECTED\nversion:1.2\nheart-beat:5000,20000\nsession:s-1\nserver:RabbitMQ/3.10.8\n\n\x00"


def connected(now=0, **kw):
    c = Stomp("guest", "guest", now=now, **kw)
    c.take()
    assert c.feed(CONNECTED, now) == [("connected", "s-1", "RabbitMQ/3.10.8")]
    return c


def test_connect_golden():
    c = Stomp("guest", "guest")
    assert bytes(c.take()) == CONNECT
    # "CONNECT and CONNECTED frames do not escape": a colon stays a colon
    c = Stomp("a:b", "p\\w", host="edge", heartbeat=0)
    assert bytes(c.take()) == (b"CONNECT\naccept-version:1.2\nhost:edge\nlogin:a:b\npasscode:p\\w\n"
                               b"heart-beat:0,0\n\n\x00")


def test_connected_and_heart_beat_negotiation():
    c = connected()
    assert (c.session, c.server) == ("s-1", "RabbitMQ/3.10.8")
    # "Heart-beating": we send every max(15000, 20000), the server every
    # max(5000, 15000)
    assert (c.hb_out, c.hb_in) == (20000, 15000)
    for ours, theirs, out, inn in ((0, "5000,5000", 0, 0), (1000, "0,0", 0, 0), (1000, "0,500", 1000, 0),
                                   (1000, "500,0", 0, 1000)):
        c = Stomp("u", "p", heartbeat=ours)
        c.feed(b"CONNECTED\nversion:1.2\nheart-beat:" + theirs.encode() + b"\n\n\x00", 0)
        assert (c.hb_out, c.hb_in) == (out, inn), (ours, theirs)
    c = Stomp("u", "p")
    c.feed(b"CONNECTED\nversion:1.2\n\n\x00", 0)  # no heart-beat header: 0,0
    assert (c.hb_out, c.hb_in) == (0, 0)


def test_send_golden():
    c = connected()
    n = c.send("/topic/a.b", b"21.5", headers={"amqp-message-id": "e1:7"}, content_type="text/plain")
    assert n == 1
    # destination, persistent, content-type, extra headers (":" escaped as
    # \c), receipt, content-length; the body and its NUL
    assert bytes(c.take()) == (b"SEND\ndestination:/topic/a.b\npersistent:true\ncontent-type:text/plain\n"
                               b"amqp-message-id:e1\\c7\nreceipt:1\ncontent-length:4\n\n21.5\x00")
    assert c.send("/topic/x", b"", persistent=False, receipt=False) == 0
    assert bytes(c.take()) == b"SEND\ndestination:/topic/x\n\n\x00"
    assert c.send("/topic/x", b"\x00", headers=[("a", 1)]) == 2  # NUL in a body: content-length says
    assert bytes(c.take()) == (b"SEND\ndestination:/topic/x\npersistent:true\na:1\nreceipt:2\n"
                               b"content-length:1\n\n\x00\x00")


def test_receipts_are_confirms():
    c = connected()
    for _ in range(2):
        c.send("/topic/x", b"x")
    assert c.feed(b"RECEIPT\nreceipt-id:2\n\n\x00\nRECEIPT\nreceipt-id:1\n\n\x00", 1) == [
        ("confirm", 2, False), ("confirm", 1, False)]
    e = raises(RemoteProtocolError, c.feed, b"RECEIPT\nreceipt-id:zz\n\n\x00", 2)
    assert e.reason == 0x81


def test_subscribe_ack_nack_golden():
    c = connected()
    c.subscribe("/topic/cmd.e1.#", "cmd", headers={"prefetch-count": 4})
    assert bytes(c.take()) == (b"SUBSCRIBE\ndestination:/topic/cmd.e1.#\nid:cmd\nack:client-individual\n"
                               b"prefetch-count:4\n\n\x00")
    c.ack("T_cmd@@session-1@@7")
    c.nack("x:y")
    c.unsubscribe("cmd")
    assert bytes(c.take()) == (b"ACK\nid:T_cmd@@session-1@@7\n\n\x00" b"NACK\nid:x\\cy\n\n\x00"
                               b"UNSUBSCRIBE\nid:cmd\n\n\x00")


MESSAGE = (b"MESSAGE\nsubscription:cmd\ndestination:/topic/cmd.e1.fan\nmessage-id:T_1\n"
           b"ack:T_1@@s@@1\nnote:a\\cb\\\\c\\nd\\re\ncontent-length:5\n\nhe\x00lo\x00")
MESSAGE_EVENT = ("message", "T_1@@s@@1", "/topic/cmd.e1.fan",
                 {"subscription": "cmd", "destination": "/topic/cmd.e1.fan", "message-id": "T_1",
                  "ack": "T_1@@s@@1", "note": "a:b\\c\nd\re", "content-length": "5"}, b"he\x00lo")


def test_message_with_escapes_and_content_length():
    c = connected()
    assert c.feed(MESSAGE, 1) == [MESSAGE_EVENT]
    # without content-length the body ends at the first NUL; CRLF line ends
    ev = c.feed(b"MESSAGE\r\nack:1\r\ndestination:/q\r\n\r\nbody\x00", 2)
    assert ev == [("message", "1", "/q", {"ack": "1", "destination": "/q"}, b"body")]


def test_repeated_header_first_wins():
    c = connected()
    ev = c.feed(b"MESSAGE\nack:1\nfoo:first\nfoo:second\n\n\x00", 1)
    assert ev[0][3]["foo"] == "first"  # STOMP 1.2 "Repeated Header Entries"


def test_error_frame():
    c = connected()
    ev = c.feed(b"ERROR\nmessage:Unknown destination\ncontent-type:text/plain\ncontent-length:4\n\nwhy!\x00", 1)
    assert ev == [("error", "Unknown destination", b"why!")]
    assert c.state == stomp.CLOSED
    assert c.feed(MESSAGE, 2) == [] and c.tick(10 ** 9) == ()
    raises(LocalProtocolError, c.send, "/topic/x", b"")


def test_error_before_connected():
    c = Stomp("guest", "bad")
    assert c.feed(b"ERROR\nmessage:Access refused\n\n\x00", 0) == [("error", "Access refused", b"")]


def test_close_with_receipt():
    c = connected()
    c.close()
    assert bytes(c.take()) == b"DISCONNECT\nreceipt:close\n\n\x00"
    raises(LocalProtocolError, c.send, "/topic/x", b"")
    assert c.feed(b"RECEIPT\nreceipt-id:close\n\n\x00", 1) == [("close_ok",)]
    assert c.state == stomp.CLOSED
    c = Stomp("u", "p")
    c.close()  # before CONNECTED: nothing to say
    assert c.state == stomp.CLOSED


def test_escaping_both_ways():
    for raw, wire in (("a:b", "a\\cb"), ("a\\b", "a\\\\b"), ("l1\nl2\r", "l1\\nl2\\r"),
                      ("\\c", "\\\\c"), ("plain", "plain"), ("", "")):
        assert stomp.escape(raw) == wire, raw
        assert stomp.unescape(wire) == raw, wire
    for bad in ("a\\tb", "end\\", "\\x"):
        e = raises(RemoteProtocolError, stomp.unescape, bad)
        assert e.reason == 0x81


# ---- heart-beats ------------------------------------------------------------
def test_heart_beat_eol_when_idle():
    c = connected(now=1000)  # we send every 20 s, the server every 15 s
    assert c.tick(1000) == ()
    assert c.tick(20999) == () and bytes(c.take()) == b""
    assert c.tick(21000) == () and bytes(c.take()) == b"\n"
    c.feed(b"\n", 22000)  # the server's heart-beat: activity, no event
    c.send("/topic/x", b"")
    c.take()
    assert c.tick(25000) == ()
    assert c.tick(44999) == () and bytes(c.take()) == b""
    assert c.tick(45000) == () and bytes(c.take()) == b"\n"


def test_dead_after_two_silent_intervals():
    c = connected(now=1000)
    assert c.feed(b"\r\n\n", 2000) == []
    assert c.tick(31999) == ()
    assert c.tick(32000) == (("dead",),)
    assert c.state == stomp.CLOSED


# ---- split feeds -------------------------------------------------------------------
SCRIPT = (CONNECTED + b"\n" + b"RECEIPT\nreceipt-id:1\n\n\x00\r\n" + MESSAGE
          + b"\n\nRECEIPT\nreceipt-id:2\n\n\x00" + b"ERROR\nmessage:bye\n\nx\x00")
SCRIPT_EVENTS = [("connected", "s-1", "RabbitMQ/3.10.8"), ("confirm", 1, False), MESSAGE_EVENT,
                 ("confirm", 2, False), ("error", "bye", b"x")]


def _run(chunks):
    c = Stomp("guest", "guest")
    ev = []
    for ch in chunks:
        ev += c.feed(ch, 0)
    return ev


def test_every_split_gives_the_same_events():
    assert _run([SCRIPT]) == SCRIPT_EVENTS
    for k in range(1, len(SCRIPT)):
        assert _run([SCRIPT[:k], SCRIPT[k:]]) == SCRIPT_EVENTS, k


def test_byte_at_a_time():
    assert _run([SCRIPT[i:i + 1] for i in range(len(SCRIPT))]) == SCRIPT_EVENTS
    ba = bytearray(SCRIPT)
    assert _run([memoryview(ba)[:50], memoryview(ba)[50:]]) == SCRIPT_EVENTS


# ---- errors --------------------------------------------------------------------------
def _remote(c, data, reason=0x81):
    e = raises(RemoteProtocolError, c.feed, data, 0)
    assert e.reason == reason, (e.reason, e)


def test_frame_errors():
    _remote(Stomp("u", "p"), b"CONNECTED\nversion:1.1\n\n\x00", 0x82)  # not 1.2
    _remote(connected(), CONNECTED, 0x82)  # again
    _remote(connected(), b"BOGUS\n\n\x00", 0x82)  # no such server frame
    _remote(connected(), b"MESSAGE\nno colon\n\n\x00")
    _remote(connected(), b"MESSAGE\nbad:\\t\n\n\x00")  # undefined escape
    _remote(connected(), b"MESSAGE\ncontent-length:x\n\n\x00")
    _remote(connected(), b"MESSAGE\ncontent-length:1\n\nab\x00")  # no NUL where it says
    _remote(connected(), b"\rX")  # CR without LF
    _remote(connected(), b"MESSAGE\nh:\xff\n\n\x00")  # not UTF-8
    _remote(Stomp("u", "p"), b"CONNECTED\nversion:1.2\nheart-beat:x\n\n\x00")
    _remote(Stomp("u", "p"), b"CONNECTED\nversion:1.2\nheart-beat:-1,0\n\n\x00")


def test_frames_are_bounded():
    c = connected(max_frame=100)
    _remote(c, b"MESSAGE\ncontent-length:101\n\n", 0x95)
    c = connected(max_frame=100)
    assert c.feed(b"MESSAGE\nack:1\n\n" + b"x" * 60, 0) == []  # incomplete, under the bound
    _remote(c, b"x" * 40, 0x95)  # no NUL within 100 bytes
    _remote(connected(max_frame=100), b"MESSAGE\nack:1\n\n" + b"x" * 90 + b"\x00", 0x95)  # whole, too big


def test_send_before_connected_is_a_local_error():
    c = Stomp("u", "p")
    raises(LocalProtocolError, c.send, "/topic/x", b"")
    raises(LocalProtocolError, c.subscribe, "/topic/x", "s")
