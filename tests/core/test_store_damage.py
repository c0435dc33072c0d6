# Torn and corrupt stores at broker start (issue #4 "Show"): the last batch
# cut at every byte position, random bit flips, a zero-filled tail, garbage
# files. Each time the broker starts (edge/runtime/persist.py's open_store,
# as the runtime calls it, over in-memory files), keeps every record before
# the damage, and logs what it cut or quarantined. Plain functions: pytest
# and tests/mpy_runner.py.
import random

from edge import config
from edge.mqtt.broker import Broker
from edge.store.fqueue import FLASH
from edge.runtime.persist import open_store
from edge.store.record import HEADER_LEN, decode_v1
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, publish

SEG = "state.1"


def boot(m):
    """A broker started over files m: (broker, log, lines logged)."""
    cfg = config.load({"store": {"segment_bytes": 65536}, "broker": {"max_packet_size": 4096}}, "gateway")
    lines = []
    b = Broker(cfg, 0)
    wal = open_store(cfg, b, lambda level, msg: lines.append((level, msg)), m)
    return b, wal, lines


def queued(s):
    """Messages s holds queued: in RAM, and on flash (edge/store/fqueue.py,
    a board's default: open_store under MicroPython)."""
    n = 0
    for e in s.queue or ():
        if e is FLASH:
            fq = s.store._sess[s][10]
            n += fq[0] if fq else 0
        else:
            n += 1
    return n


def counts(b):
    s = b.sessions.get("sub")
    return (0 if s is None else queued(s), 0 if s is None else len(s.subs),
            len(b.retained))


def build(n=6):
    """A store holding a persistent session with 2 subscriptions, a retained
    message and n queued messages, each message its own synced batch.
    Returns (files, [(file size, counts) after each batch])."""
    m = MemFiles()
    b, wal, _ = boot(m)
    sub = Client(b)
    sub.connect("sub", clean=False)
    sub.subscribe(("t/#", 1), ("u", 2))
    sub.lose()
    pub = Client(b)
    pub.connect("pub")
    publish(pub, "r", b"retained", 1, True, pid=1)
    wal.flush()
    marks = [(len(m.data[SEG]), counts(b))]
    for i in range(n):
        publish(pub, "t/%d" % i, b"payload %d" % i, 1, pid=i + 2)
        wal.flush()
        marks.append((len(m.data[SEG]), counts(b)))
    return m, marks


def damaged(m, fn):
    c = m.copy()
    c.data[SEG] = fn(bytearray(c.data[SEG]))
    c.durable[SEG] = len(c.data[SEG])
    return c


def kept_before(marks, p):
    """The counts of the last batch that ends at or before byte p."""
    best = None
    for size, cnt in marks:
        if size <= p:
            best = cnt
    return best


def logged(lines, word):
    return [msg for level, msg in lines if word in msg and level >= 30]


def test_last_batch_cut_at_every_byte():
    m, marks = build()
    before, after = marks[-2], marks[-1]
    assert after[1][0] == before[1][0] + 1
    for p in range(before[0], after[0]):
        b, wal, lines = boot(damaged(m, lambda d: d[:p]))
        assert counts(b) == before[1], (p, counts(b))
        if p > before[0]:
            # torn inside a record: cut there; at a record boundary inside
            # the batch: the whole records of no use are dropped, and said so
            assert logged(lines, "cut at byte %d" % before[0]) or logged(lines, "dropped"), (p, lines)
    b, wal, lines = boot(damaged(m, lambda d: d))
    assert counts(b) == after[1] and not logged(lines, "store")


def test_random_bit_flips():
    m, marks = build()
    random.seed(4)  # (MicroPython's random has no Random class)
    rnd = random
    size = marks[-1][0]
    first = marks[0][0]
    meta = decode_v1(memoryview(m.data[SEG]), HEADER_LEN, size)[2] + 4  # header + META end here
    for _ in range(120):
        p = rnd.randrange(size)
        bit = 1 << rnd.randrange(8)

        def flip(d):
            d[p] ^= bit
            return d

        b, wal, lines = boot(damaged(m, flip))
        if p < meta:  # header or META: the file is quarantined
            assert counts(b) == (0, 0, 0)
            assert logged(lines, "quarantined as state.1.corrupt-"), (p, lines)
            continue
        want = kept_before(marks, p)
        if want is None:  # in the first batch: the session, subs, retained
            assert logged(lines, "cut at byte"), (p, lines)
            continue
        assert counts(b) == want, (p, counts(b), want)
        assert logged(lines, "cut at byte"), (p, lines)
        assert p >= first


def test_zero_filled_tail():
    m, marks = build()
    for fill in (b"\x00", b"\xff"):
        b, wal, lines = boot(damaged(m, lambda d: d + fill * 700))
        assert counts(b) == marks[-1][1]
        assert logged(lines, "cut at byte %d" % marks[-1][0]), lines


def test_garbage_file_quarantined_broker_starts_empty():
    m = MemFiles()
    random.seed(7)
    rnd = random
    m.data[SEG] = bytearray(rnd.getrandbits(8) for _ in range(3000))
    m.durable[SEG] = 3000
    b, wal, lines = boot(m)
    assert counts(b) == (0, 0, 0) and len(wal) == 0
    names = sorted(m.data)
    assert any(n.startswith("state.1.corrupt-") for n in names), names
    assert logged(lines, "unreadable"), lines
    # and it works: a session saved now survives the next start
    c = Client(b)
    c.connect("sub", clean=False)
    c.subscribe(("t/#", 1))
    wal.flush()
    b, wal, lines = boot(m.copy())
    assert counts(b) == (0, 1, 0)


def test_garbage_segment_beside_a_good_one():
    m, marks = build(2)
    m.data["state.9"] = bytearray(b"not a store file at all" * 20)
    m.durable["state.9"] = len(m.data["state.9"])
    b, wal, lines = boot(m)
    assert counts(b) == marks[-1][1]
    assert logged(lines, "state.9 unreadable"), lines
    assert "state.9" not in m.data


def test_empty_and_truncated_header_files():
    m, marks = build(1)
    for junk in (b"", b"\x89E", b"\x89EBL"):
        c = m.copy()
        c.data["state.5"] = bytearray(junk)
        c.durable["state.5"] = len(junk)
        b, wal, lines = boot(c)
        assert counts(b) == marks[-1][1]
        assert "state.5" not in c.data


def test_a_store_that_never_syncs_keeps_its_queues_in_ram():
    # A flash queue reads its records back from the files, and littlefs
    # shows them to a reader once committed: with store.sync "never" a
    # board's queues stay in RAM (edge/runtime/persist.py)
    from edge.runtime import persist

    was = persist.FLASH_QUEUE
    persist.FLASH_QUEUE = True  # as under MicroPython
    try:
        for sync, want in (("batch", True), ("always", True), ("never", False)):
            cfg = config.load({"store": {"sync": sync}}, "gateway")
            b = Broker(cfg, 0)
            open_store(cfg, b, lambda level, msg: None, MemFiles())
            assert (b.store.queue is not None) is want, sync
    finally:
        persist.FLASH_QUEUE = was
