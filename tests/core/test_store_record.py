# Record framing of the flash store (edge/store/record.py): golden bytes,
# torn prefixes, zero/erased fill, bit flips. Plain functions: runs under
# pytest and tests/mpy_runner.py.
from edge.store.record import (
    ERR_CRC, ERR_KIND, ERR_LEN, ERR_TORN, HDR_BAD, HDR_TORN, HEADER, HEADER_LEN,
    READERS, VERSION, append_record, append_seq_record, decode_v1, encode_record, get_varint,
    header_version, put_varint, record_size, scan,
)
from tests.core._util import raises

# kind | varint len | body | crc32 LE over kind+len+body (binascii.crc32)
GOLDEN = [
    (0x10, b"abc", b"\x10\x03abc\xa1\x57\x12\x7e"),
    (0x11, bytes(200), b"\x11\xc8\x01" + bytes(200) + b"\x6e\xbc\x41\x82"),
]


def test_header_golden():
    assert HEADER == b"\x89EBL\x01"
    assert len(HEADER) == HEADER_LEN and VERSION == 1 and VERSION in READERS


def test_golden_records_both_ways():
    for kind, body, wire in GOLDEN:
        assert encode_record(kind, body) == wire
        assert record_size(len(body)) == len(wire)
        recs, good, err = scan(wire, 0, len(wire))
        assert err is None and good == len(wire)
        assert len(recs) == 1
        k, b0, b1 = recs[0]
        assert k == kind and wire[b0:b1] == body


def test_append_record_with_prefix():
    buf = bytearray(b"xx")
    n = append_record(buf, 0x10, b"bc", b"a")
    assert n == len(buf) - 2
    assert bytes(buf[2:]) == encode_record(0x10, b"abc")


def test_record_size_matches_encoding():
    for n in (0, 1, 127, 128, 16383, 16384):
        assert record_size(n) == len(encode_record(0x20, bytes(n)))


def test_kind_out_of_range_refused():
    raises(ValueError, encode_record, 0, b"")
    raises(ValueError, encode_record, 255, b"")


def test_every_strict_prefix_is_torn():
    for kind, body, wire in GOLDEN:
        for cut in range(len(wire)):
            recs, good, err = scan(wire, 0, cut)
            if cut == 0:
                assert recs == [] and err is None  # nothing is nothing
            else:
                assert recs == [] and good == 0 and err == ERR_TORN, cut


def test_scan_stops_at_first_bad_record():
    a = encode_record(0x10, b"one")
    b = encode_record(0x10, b"two")
    c = encode_record(0x10, b"three")
    bad = bytearray(b)
    bad[3] ^= 0x01
    buf = a + bytes(bad) + c
    recs, good, err = scan(buf, 0, len(buf))
    assert len(recs) == 1 and good == len(a) and err == ERR_CRC
    # c is intact but unreachable through b: never trusted


def test_scan_from_offset():
    buf = HEADER + encode_record(0x10, b"x") + encode_record(0x11, b"yz")
    recs, good, err = scan(buf, HEADER_LEN, len(buf))
    assert err is None and good == len(buf)
    assert [(k, buf[b0:b1]) for k, b0, b1 in recs] == [(0x10, b"x"), (0x11, b"yz")]


def test_zero_and_erased_fill():
    rec = encode_record(0x10, b"data")
    for fill in (0x00, 0xFF):
        buf = rec + bytes([fill]) * 64
        recs, good, err = scan(buf, 0, len(buf))
        assert len(recs) == 1 and good == len(rec) and err == ERR_KIND


def test_every_bit_flip_is_caught():
    for kind, body, wire in GOLDEN[:1] + [(0x12, b"\x00\xff" * 20, encode_record(0x12, b"\x00\xff" * 20))]:
        for i in range(len(wire)):
            for bit in range(8):
                w = bytearray(wire)
                w[i] ^= 1 << bit
                recs, good, err = scan(w, 0, len(w))
                assert recs == [] and good == 0 and err is not None, (i, bit)


def test_length_limits():
    # a varint longer than 4 bytes is never ours
    buf = b"\x10\x80\x80\x80\x80\x01" + bytes(10)
    assert decode_v1(memoryview(buf), 0, len(buf))[3] == ERR_LEN
    rec = encode_record(0x10, bytes(100))
    assert decode_v1(memoryview(rec), 0, len(rec), 99)[3] == ERR_LEN
    assert decode_v1(memoryview(rec), 0, len(rec), 100)[3] is None


def test_header_version():
    mv = memoryview(HEADER)
    assert header_version(mv, HEADER_LEN) == VERSION
    for n in range(HEADER_LEN):
        assert header_version(mv, n) == HDR_TORN
    assert header_version(memoryview(b"\x89EBL\x02"), 5) == 2  # no reader: caller refuses
    assert header_version(memoryview(b"GARBAGE"), 7) == HDR_BAD
    assert header_version(memoryview(b"\x89EBX\x01"), 5) == HDR_BAD
    assert header_version(memoryview(bytes(5)), 5) == HDR_BAD
    assert header_version(memoryview(b"\x89"), 1) == HDR_TORN


def test_varints():
    for n in (0, 1, 127, 128, 300, 16384, 2 ** 31, 2 ** 40):
        buf = bytearray(b"\xaa")
        put_varint(buf, n)
        assert get_varint(memoryview(buf), 1, len(buf)) == (n, len(buf))
        assert get_varint(memoryview(buf), 1, len(buf) - 1)[0] == -1  # cut
    assert get_varint(memoryview(b"\xff" * 9), 0, 9) == (-1, 0)


def test_seq_records_frame_as_the_generic_record_at_every_boundary():
    # append_seq_record's one-piece header (seqs of 1 to 4 varint bytes, a
    # one-byte length) and its fallback give append_record's bytes, for a
    # body as bytes or as parts
    seqs = (1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 0xFFFFFFF, 0x10000000, 1 << 40)
    for seq in seqs:
        prefix = bytearray()
        put_varint(prefix, seq)
        for blen in (0, 1, 0x77, 0x78, 0x79, 0x7A, 0x7B, 0x7C, 0x7F, 0x80, 300):
            body = bytes(range(256)) * 2
            body = body[:blen]
            want = bytearray()
            append_record(want, 27, body, bytes(prefix))
            for b in (body, (body[:1], body[1:5], body[5:])):
                for given in (-1, blen):  # its length measured, or given (Log.append's)
                    got = bytearray(b"xy")
                    n = append_seq_record(got, 27, seq, b, given)
                    assert got[2:] == want and n == len(want), (seq, blen, given)
