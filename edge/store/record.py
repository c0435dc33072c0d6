# Flash record framing (docs/design.md H9), sans-IO: bytes in, offsets out.
#
#   file   = HEADER record*
#   HEADER = MAGIC(4) VERSION(1)
#   record = kind(1) len(varint) body(len) crc32(4, little-endian)
#
# The CRC covers kind, len and body, so a flipped bit anywhere in a record,
# its length included, is caught. Records are appended, never rewritten in
# place; a power cut can only leave a torn *tail*, and every reader stops at
# the first record that is torn or fails its CRC: what comes after a bad
# record cannot be trusted (its start is found only through the bad length).
#
# As mosquitto's persist_read_v234.c / persist_read_v5.c, a file says which
# format it is in and there is one reader per version (READERS); a version we
# cannot read is refused whole rather than guessed at. Mosquitto writes its
# header CRC as 0; the per-record CRC is ours (power loss on flash tears
# writes at any byte).
#
# Kinds 0x00 and 0xFF are never valid: they are what zero-filled (preallocated,
# or some FAT tails after a power cut) and erased NOR flash read back as, so a
# zero or 0xFF tail is refused by its first byte, before any length is trusted.
import binascii

from edge.compat import const

MAGIC = b"\x89EBL"  # high first byte: 7-bit or text-mode copies are caught
VERSION = const(1)
HEADER = MAGIC + bytes((VERSION,))
HEADER_LEN = const(5)

# The varint is MQTT's (7 bits a byte, low first), at most 4 bytes.
_VARINT_MAX = const(4)
MAX_BODY = const(268435455)
# kind + longest varint + crc: a record is at most body + OVERHEAD bytes
OVERHEAD = const(9)

# scan()/decode() errors. Strings so that a report reads by itself.
ERR_TORN = "torn"    # the buffer ends inside the record (a cut write)
ERR_KIND = "kind"    # 0x00 / 0xFF: zero-filled or erased space
ERR_LEN = "len"      # varint longer than 4 bytes, or above the caller's max
ERR_CRC = "crc"      # bytes changed after they were written

# The kinds edge/store/log.py frames itself; an owner's kinds are KIND_MIN
# to KIND_MAX. A log file (PREFIX.<id>, a segment) is HEADER, META, then
# records in append order. An owner's record body is varint(seq) + its own
# body; a DEL record's body is varint(seq), a DELS record's varint(first
# seq) + varint(count): a run of consecutive seqs deleted in one record (a
# subscriber acking in order deletes its deliveries' records in seq order:
# one tombstone a batch, not one a message). META is the first record of
# every segment: next_seq keeps sequence numbers from being reused even when
# every record was deleted and compacted away (an outbox seq is an upstream
# idempotency key), and floor says "segments with a lower id are
# superseded" (edge/store/compact.py).
# A log may have one owned kind (Log.owned): its records' bodies start with
# a varint owner, and they live until a CUR record of their owner passes
# them (records below its seq are dead), not until a tombstone each: an
# owner that consumes its records in order (an offline queue, state.py)
# needs no index of them in RAM, only its cursor. A CUR comes after every
# record it kills (they were appended before it), so losing a prefix of
# segments with a CUR in it (compaction) revives nothing.
K_META = const(1)   # varint next_seq, varint floor
K_DEL = const(2)    # varint seq
K_DELS = const(3)   # varint first seq, varint count (a run of deletions)
K_CUR = const(4)    # varint owner, varint seq: the owner's owned records below seq are dead
KIND_MIN = const(16)  # kinds below are the log's own (5..15 reserved)
KIND_MAX = const(254)
TMP_SUFFIX = ".new"   # a segment compaction writes, before its rename

# The Log's entry for a segment (log.py, logread.py, compact.py), a list:
# [id, size, decode, top, live]. decode is READERS[its version]; top is an
# upper bound on the seqs of its records, so replay(from_seq) (the outbox
# reading on from its cursor) skips whole segments instead of walking
# them; live is the bytes of its records still live, so compaction drops a
# dead segment without reading it and copies only what lives. Private:
# MicroPython folds a private const away, so a board holds no name for
# them; each of those modules repeats the ones it uses
# (tests/core/test_store_segments.py checks the copies).
_SEG_ID = const(0)
_SEG_SIZE = const(1)
_SEG_DECODE = const(2)
_SEG_TOP = const(3)
_SEG_LIVE = const(4)
# New segments take every other id: compacting the oldest segments up to id
# b writes id b + 1, which sorts before the segments after them (compact.py).
_ID_STEP = const(2)

# header_version() results other than a version number
HDR_TORN = const(-1)  # shorter than a header, but a prefix of ours
HDR_BAD = const(-2)   # not our magic: not a file of ours, or damaged


def append_record(buf, kind, body, prefix=b""):
    """Frame one record onto the end of bytearray buf (a write batch, so a
    record costs no bytes object of its own). The body on flash is
    prefix + body (edge/store/log.py puts its sequence number there).
    kind is 1..254. Returns the record's size."""
    if not 0 < kind < 255:
        raise ValueError("record kind %d" % kind)
    n = len(prefix) + len(body)
    if n > MAX_BODY:
        raise ValueError("record body %d bytes" % n)
    start = len(buf)
    buf.append(kind)
    while n > 0x7F:  # varint, as MQTT's remaining length
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)
    if prefix:
        buf.extend(prefix)
    buf.extend(body)
    # (one call for the CRC's 4 bytes: this runs for every record, hot)
    buf.extend((binascii.crc32(memoryview(buf)[start:]) & 0xFFFFFFFF).to_bytes(4, "little"))
    return len(buf) - start


def append_seq_record(buf, kind, seq, body, blen=-1):
    """append_record(buf, kind, body, prefix=varint(seq)) without building
    the prefix (edge/store/log.py: once per record and tombstone, hot).
    body: bytes, or a tuple of bytes parts (body_len); blen, if given, its
    length. One piece per record, CRC'd and added to buf at once: no view
    of buf (which would block its growth), no field-by-field appends
    (about half the time)."""
    tup = type(body) is tuple
    n = (body_len(body) if blen < 0 else blen) + 1
    if n < 0x7C and seq < 0x10000000:
        # The usual: a one-byte length, a seq of up to 4 bytes (the same
        # bytes as the loop below)
        if seq < 0x80:
            head = bytes((kind, n, seq))
        elif seq < 0x4000:
            head = bytes((kind, n + 1, seq & 0x7F | 0x80, seq >> 7))
        elif seq < 0x200000:
            head = bytes((kind, n + 2, seq & 0x7F | 0x80, seq >> 7 & 0x7F | 0x80, seq >> 14))
        else:
            head = bytes((kind, n + 3, seq & 0x7F | 0x80, seq >> 7 & 0x7F | 0x80,
                          seq >> 14 & 0x7F | 0x80, seq >> 21))
    else:
        v = seq >> 7
        while v:
            n += 1
            v >>= 7
        h = bytearray((kind,))
        while n > 0x7F:
            h.append((n & 0x7F) | 0x80)
            n >>= 7
        h.append(n)
        while seq > 0x7F:
            h.append((seq & 0x7F) | 0x80)
            seq >>= 7
        h.append(seq)
        head = bytes(h)  # (MicroPython's join takes bytes only)
    rec = b"".join((head,) + body) if tup else head + body
    buf += rec
    buf += (binascii.crc32(rec) & 0xFFFFFFFF).to_bytes(4, "little")
    return len(rec) + 4


def body_len(body):
    """Bytes of a record body given as bytes or as a tuple of parts."""
    if type(body) is tuple:
        n = 0
        for part in body:
            n += len(part)
        return n
    return len(body)


def encode_record(kind, body):
    """The framed bytes of one record (kind 1..254)."""
    buf = bytearray()
    append_record(buf, kind, body)
    return bytes(buf)


def record_size(body_len):
    """Bytes a record with a body of body_len bytes takes on flash."""
    n = 2 + body_len + 4
    while body_len > 0x7F:
        body_len >>= 7
        n += 1
    return n


def decode_v1(mv, pos, end, max_body=MAX_BODY):
    """One record at mv[pos:end] -> (kind, body_start, body_end, err).
    err None: the record is good and the next one starts at body_end + 4.
    Otherwise kind/body are meaningless and err is an ERR_* string."""
    if pos >= end:
        return 0, 0, 0, ERR_TORN
    kind = mv[pos]
    if kind == 0 or kind == 0xFF:
        return 0, 0, 0, ERR_KIND
    n = 0
    shift = 0
    i = pos + 1
    while True:
        if i >= end:
            return 0, 0, 0, ERR_TORN
        if i - pos > _VARINT_MAX:
            return 0, 0, 0, ERR_LEN
        b = mv[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    if n > max_body:
        return 0, 0, 0, ERR_LEN
    if i + n + 4 > end:
        return 0, 0, 0, ERR_TORN
    j = i + n
    crc = binascii.crc32(mv[pos:j]) & 0xFFFFFFFF
    got = mv[j] | (mv[j + 1] << 8) | (mv[j + 2] << 16) | (mv[j + 3] << 24)
    if crc != got:
        return 0, 0, 0, ERR_CRC
    return kind, i, j, None


# One record reader per file version (mosquitto's persist_read_v*). A new
# format adds decode_v2 here and keeps decode_v1 for files already on flash.
READERS = {VERSION: decode_v1}


def header_version(mv, end):
    """The version in the header at mv[0:end], or HDR_TORN / HDR_BAD.
    A version we have no reader for is returned as is: the caller checks
    READERS (a newer file is not damaged, but we can't read it either)."""
    n = min(end, HEADER_LEN)
    for i in range(min(n, 4)):
        if mv[i] != MAGIC[i]:
            return HDR_BAD
    if n < HEADER_LEN:
        return HDR_TORN
    return mv[4]


def scan(buf, start, end, max_body=MAX_BODY):
    """Every good record of a version-1 file in buf[start:end], stopping at
    the first bad or torn one -> (records, good_end, err). records is a list
    of (kind, body_start, body_end); good_end is where the good prefix ends
    (the length to cut the file to); err is None if buf[start:end] is only
    good records. Builds a list: for a whole file on a board, walk with
    decode_v1 instead, as edge/store/log.py does."""
    mv = memoryview(buf)
    out = []
    pos = start
    while pos < end:
        kind, b0, b1, err = decode_v1(mv, pos, end, max_body)
        if err is not None:
            return out, pos, err
        out.append((kind, b0, b1))
        pos = b1 + 4
    return out, pos, None


def put_varint(buf, n):
    """Append n (>= 0) to bytearray buf, 7 bits a byte, low first (unbounded:
    sequence numbers use it too)."""
    while n > 0x7F:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def get_varint(mv, pos, end):
    """(n, next pos) of a varint written by put_varint; (-1, pos) if it runs
    past end or over 8 bytes (more than a seq ever needs)."""
    n = 0
    shift = 0
    i = pos
    while i < end and i - pos < 8:
        b = mv[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i
    return -1, pos
