# The persistent-state layer (edge/store/state.py, replay.py, outbox.py) over
# in-memory files with a power-cut model. Plain functions: runs under pytest
# and tests/mpy_runner.py.
from edge.store.layout import LAYOUTS, decode, encode
from edge.store.log import Log
from edge.store.outbox import Outbox
from tests.core._memfiles import MemFiles
from tests.core._util import raises

K_SESSION, K_SUB, K_MSG, K_QUEUED, K_INFLIGHT, K_RELEASED, K_RXQOS2, K_RETAINED = range(16, 24)
EXPIRY_NEVER = 0xFFFFFFFF


def snapshot(m):
    c = m.copy()
    c.power_cut(0)
    return c


# ---- layouts ------------------------------------------------------------------
def test_kind_numbers_and_layouts_are_fixed():
    # Records on flash outlive firmware: a changed layout takes a new kind
    assert LAYOUTS == {
        16: "vBvs", 17: "vBs", 18: "BSr", 19: "vvB", 20: "vvvvB", 21: "vvv", 22: "vv", 23: "v"}


def test_golden_session_and_message_records():
    body = encode(K_SESSION, (1, 0, EXPIRY_NEVER, "dev-1"))
    assert bytes(body) == b"\x01\x00\xff\xff\xff\xff\x0fdev-1"
    body = encode(K_SESSION, (300, 1, 60, "\u00e9"))
    assert bytes(body) == b"\xac\x02\x01\x3c\xc3\xa9"
    body = encode(K_MSG, (1 | 4, "a/b", b"hi"))
    assert bytes(body) == b"\x05\x03a/bhi"


SAMPLES = [
    (K_SESSION, [7, 1, 0, "c"]), (K_SESSION, [1, 0, EXPIRY_NEVER, "x" * 200]),
    (K_SUB, [7, 2, "a/+/#"]), (K_SUB, [128, 0x2a, "\u00e9t\u00e9"]),
    (K_MSG, [0, "t", b""]), (K_MSG, [6, "a/b", b"\x00\xff" * 100]),
    (K_QUEUED, [7, 1, 2]), (K_QUEUED, [70000, 300, 5]),
    (K_INFLIGHT, [7, 65535, 3, 0, 1]), (K_INFLIGHT, [7, 1, 2, 1, 6]),
    (K_RELEASED, [7, 9, 4]), (K_RELEASED, [7, 9, 0]),
    (K_RXQOS2, [7, 65535]), (K_RETAINED, [2]),
]


def test_every_kind_round_trips():
    for kind, vals in SAMPLES:
        body = bytes(encode(kind, vals))
        assert decode(kind, body) == vals, (kind, vals)
        if LAYOUTS[kind][-1] not in "sr":
            # fixed fields only: a byte more, or any byte less, is refused
            raises(ValueError, decode, kind, body + b"\x00")
            for n in range(len(body)):
                raises(ValueError, decode, kind, body[:n])
    raises(ValueError, decode, K_SUB, b"\x01\x00\xff")  # not UTF-8
    raises(ValueError, decode, K_MSG, b"\x00\x05ab")    # topic past the end


# ---- the outbox ------------------------------------------------------------------------
def new_outbox(m=None, **kw):
    m = m or MemFiles()
    kw.setdefault("segment_bytes", 256)
    log = Log(m, prefix="outbox", **kw)
    log.open(0)
    return m, Outbox(log)


def test_outbox_append_read_ack():
    m, ob = new_outbox()
    seqs = [ob.append(b"up-%d" % i) for i in range(30)]
    assert seqs == list(range(1, 31)) and len(ob) == 30
    assert ob.read(0, 3) == [(1, b"up-0"), (2, b"up-1"), (3, b"up-2")]
    assert ob.read(29, 5) == [(29, b"up-28"), (30, b"up-29")]
    assert ob.read(31, 5) == [] and ob.read(0, 0) == []
    for s in (1, 2, 4):
        assert ob.ack(s)
    assert not ob.ack(2) and not ob.ack(99)
    assert ob.read(0, 3) == [(3, b"up-2"), (5, b"up-4"), (6, b"up-5")]
    assert len(ob) == 27 and ob.bytes() == ob.log.live_bytes > 0
    # after a restart: everything not acked, in order, the same seqs
    m2, ob2 = new_outbox(snapshot(m))
    assert ob2.read(0, 100) == ob.read(0, 100)
    assert ob2.append(b"next") == 31


def test_outbox_seq_never_reused():
    m, ob = new_outbox()
    for i in range(10):
        ob.ack(ob.append(b"x"))
    assert ob.log.compact() and len(ob) == 0
    m2, ob2 = new_outbox(snapshot(m))
    assert ob2.append(b"y") == 11  # an upstream idempotency key stays unique


def test_outbox_budget_refuses_newest():
    m, ob = new_outbox(budget_bytes=200)
    n = 0
    while ob.append(b"%02d" % n + b"-" * 20) > 0:
        n += 1
    assert n == 6 and ob.refused == 1  # 6 records of 29 bytes fit in 200
    assert ob.append(b"xx" + b"-" * 20) < 0 and ob.refused == 2
    # the oldest are kept, the newest refused
    assert [b[:2] for s, b in ob.read(0, 99)] == [b"%02d" % i for i in range(n)]
    ob.ack(1)
    assert ob.append(b"fits again") == 7  # a refused append takes no seq
    assert ob.append(b"x" * 2000) < 0 and ob.refused == 3  # over max_record


def test_outbox_torn_tail():
    m, ob = new_outbox()
    for i in range(5):
        ob.append(b"keep-%d" % i)
    ob.log.flush()
    base = snapshot(m)
    name = "outbox.%d" % ob.log._segs[-1][0]
    start = len(m.data[name])
    ob.append(b"last one")
    ob.log.flush()
    for keep in range(len(m.data[name]) - start):
        c = base.copy()
        c.data[name] = bytearray(m.data[name][:start + keep])
        m2, ob2 = new_outbox(c)
        assert [b for s, b in ob2.read(0, 10)] == [b"keep-%d" % i for i in range(5)], keep
