# CoAP message codec (edge/coap/codec.py): golden vectors from RFC 7252
# Appendix A both ways, the option header's extended forms, and every message
# format error (RFC 7252 §3). Plain assert functions (tests/mpy_runner.py).
from edge.coap import codec

# RFC 7252 Appendix A, Figure 16: a CON GET /temperature, MID 0x7d34, no
# token, and its piggybacked 2.05 response
GET_TEMPERATURE = b"\x40\x01\x7d\x34\xbbtemperature"
ACK_22_3 = b"\x60\x45\x7d\x34\xff22.3 C"
# Figure 17: the same with a 1-byte token 0x20
GET_TOKEN = b"\x41\x01\x7d\x35\x20\xbbtemperature"
ACK_TOKEN = b"\x61\x45\x7d\x35\x20\xff22.5 C"


def test_rfc7252_figure_16_decodes():
    assert codec.decode(GET_TEMPERATURE) == (0, 1, 0x7D34, b"", [11, b"temperature"], b"")
    assert codec.decode(ACK_22_3) == (2, 0x45, 0x7D34, b"", [], b"22.3 C")


def test_rfc7252_figure_16_encodes():
    assert codec.encode(0, 1, 0x7D34, b"", [11, "temperature"], b"") == GET_TEMPERATURE
    assert codec.encode(2, 0x45, 0x7D34, b"", [], b"22.3 C") == ACK_22_3


def test_rfc7252_figure_17_token():
    assert codec.decode(GET_TOKEN) == (0, 1, 0x7D35, b"\x20", [11, b"temperature"], b"")
    assert codec.encode(0, 1, 0x7D35, b"\x20", [11, b"temperature"], b"") == GET_TOKEN
    assert codec.decode(ACK_TOKEN) == (2, 0x45, 0x7D35, b"\x20", [], b"22.5 C")
    assert codec.encode(2, 0x45, 0x7D35, b"\x20", [], b"22.5 C") == ACK_TOKEN


def test_extended_option_deltas_and_lengths():
    # RFC 7252 §3.1: 13 -> one byte (value - 13), 14 -> two bytes (value - 269)
    cases = (
        (12, b"", b"\xc0"),
        (13, b"", b"\xd0\x00"),
        (60, b"", b"\xd0\x2f"),             # Size1: delta 60 = 13 + 47
        (268, b"", b"\xd0\xff"),
        (269, b"", b"\xe0\x00\x00"),
        (2049, b"", b"\xe0\x06\xf4"),       # 2049 - 269 = 0x06f4
        (11, b"x" * 12, b"\xbc" + b"x" * 12),
        (11, b"x" * 13, b"\xbd\x00" + b"x" * 13),
        (11, b"x" * 268, b"\xbd\xff" + b"x" * 268),
        (11, b"x" * 269, b"\xbe\x00\x00" + b"x" * 269),
        (300, b"y" * 300, b"\xee\x00\x1f\x00\x1f" + b"y" * 300),
    )
    for num, value, wire in cases:
        data = b"\x50\x45\x00\x01" + wire  # NON 2.05, MID 1
        assert codec.encode(1, 0x45, 1, b"", [num, value], b"") == data, num
        assert codec.decode(data) == (1, 0x45, 1, b"", [num, value], b""), num


def test_option_deltas_accumulate():
    opts = [6, b"", 11, b"ps", 11, b"a", 15, b"qos=1", 23, b"\x16", 60, b"\x01\x00"]
    data = codec.encode(0, 2, 0x1234, b"tok", opts, b"body")
    assert data == (b"\x43\x02\x12\x34tok" + b"\x60" + b"\x52ps" + b"\x01a" + b"\x45qos=1"
                    + b"\x81\x16" + b"\xd2\x18\x01\x00" + b"\xffbody")
    assert codec.decode(bytes(data)) == (0, 2, 0x1234, b"tok", opts, b"body")


def test_uint_values_are_minimal():
    assert codec.uint(0) == b""
    assert codec.uint(1) == b"\x01"
    assert codec.uint(255) == b"\xff"
    assert codec.uint(256) == b"\x01\x00"
    assert codec.uint(0xFFFFFF) == b"\xff\xff\xff"
    assert codec.uint(b"") == 0
    assert codec.uint(b"\x01\x00") == 256
    data = codec.encode(1, 0x45, 2, b"", [6, 0, 14, 60, 28, 1024], b"")
    assert data == b"\x50\x45\x00\x02" + b"\x60" + b"\x81\x3c" + b"\xd2\x01\x04\x00"
    assert codec.decode(bytes(data))[4] == [6, b"", 14, b"\x3c", 28, b"\x04\x00"]


def test_format_errors():
    bad = (
        b"",
        b"\x40\x01\x00",                   # shorter than the header
        b"\x80\x01\x00\x01",               # version 2
        b"\x49\x01\x00\x01" + b"t" * 9,    # token length 9 (reserved)
        b"\x48\x01\x00\x01" + b"t" * 7,    # token cut short
        b"\x40\x01\x00\x01\xff",           # payload marker, no payload
        b"\x40\x01\x00\x01\xf0",           # option delta 15, not a marker
        b"\x40\x01\x00\x01\x0f",           # option length 15
        b"\x40\x01\x00\x01\xd0",           # delta 13 with its byte missing
        b"\x40\x01\x00\x01\xe0\x00",       # delta 14 with one byte of two
        b"\x40\x01\x00\x01\x0d",           # length 13 with its byte missing
        b"\x40\x01\x00\x01\xb5abc",        # value runs past the end
        b"\x41\x00\x00\x01t",              # an Empty message with a token
        b"\x40\x00\x00\x01\xffx",          # an Empty message with a payload
    )
    for data in bad:
        assert codec.decode(data) is None, data


def test_every_prefix_decodes_or_is_refused_without_raising():
    data = bytes(codec.encode(0, 2, 7, b"abcd", [11, b"ps", 11, b"x" * 20, 15, b"q=1", 300, b"z" * 30], b"payload"))
    assert codec.decode(data)[5] == b"payload"
    for n in range(len(data)):
        m = codec.decode(data[:n])
        assert m is None or m != codec.decode(data), n


def test_empty_messages_and_reset():
    assert codec.empty(2, 0xBEEF) == b"\x60\x00\xbe\xef"  # ACK
    assert codec.decode(b"\x70\x00\xbe\xef") == (3, 0, 0xBEEF, b"", [], b"")  # RST
    assert codec.reset(GET_TEMPERATURE) == b"\x70\x00\x7d\x34"
    assert codec.reset(b"\x40\x01\x00\x05\xff") == b"\x70\x00\x00\x05"  # malformed CON
    assert codec.reset(b"\x50\x01\x00\x05\xff") is None  # a NON: dropped silently
    assert codec.reset(b"\x80\x01\x00\x05") is None  # other version: ignored
    assert codec.reset(b"\x40\x01") is None


def test_check_options():
    assert codec.check_options([11, b"ps", 11, b"t", 15, b"q=1", 15, b"r=1"]) == 0
    assert codec.check_options([9, b""]) == 0x82             # unknown critical: 4.02
    assert codec.check_options([10, b"", 258, b""]) == 0      # unknown elective: ignored
    assert codec.check_options([1, b"\x01"]) == 0x82          # If-Match: not implemented
    assert codec.check_options([35, b"coap://x"]) == 0xA5     # Proxy-Uri: 5.05
    assert codec.check_options([23, b"\x01", 23, b"\x02"]) == 0x82  # Block2 twice
    assert codec.check_options([27, b"\x01\x02\x03\x04"]) == 0x82   # Block1 too long
    assert codec.check_options([6, b"\x01\x02\x03\x04"]) == 0  # elective too long: ignored
    assert codec.check_options([2049, b""]) == 0x82


def test_option_lookup_and_put():
    opts = [11, b"ps", 11, b"a", 15, b"q=1"]
    assert codec.option(opts, 11) == b"ps"
    assert codec.option(opts, 6) is None
    assert codec.values(opts, 11) == [b"ps", b"a"]
    out = [6, 3]
    codec.put(out, 23, 2)
    codec.put(out, 4, b"e")
    codec.put(out, 6, 9)
    assert out == [4, b"e", 6, 3, 6, 9, 23, 2]
