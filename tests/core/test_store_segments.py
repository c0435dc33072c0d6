# Segments and their garbage (edge/store/log.py, compact.py): a run of
# deletions takes one tombstone (DELS), each segment knows its live bytes,
# and compaction drops the dead oldest segments without reading them and
# copies only what lives in a prefix, crash-safe at every step. Plain
# functions: runs under pytest and tests/mpy_runner.py.
from edge.store.compact import prefix
from edge.store.record import HEADER_LEN, K_DEL, K_DELS, decode_v1
from tests.core._memfiles import Crash, MemFiles, spy_reads
from tests.core._util import raises
from tests.core.test_store_log import K, contents, new_log, rand


def kinds(m, name):
    """The record kinds in file name, in order."""
    d = m.data[name]
    mv = memoryview(d)
    out = []
    pos = HEADER_LEN
    while pos < len(d):
        kind, b0, b1, err = decode_v1(mv, pos, len(d))
        assert err is None, err
        out.append(kind)
        pos = b1 + 4
    return out


def check_live(log):
    """Each segment's live bytes are exactly those of the live records whose
    seqs fall in it (the batch's are apart), and they add up."""
    segs = log._segs
    want = [0] * len(segs)
    batch = 0
    for seq in log._live:
        if seq > log.synced:
            batch += log._live[seq]
            continue
        k = 0
        while segs[k][3] < seq:
            k += 1
        want[k] += log._live[seq]
    assert [s[4] for s in segs] == want, ([s[4] for s in segs], want)
    assert log._pbytes + log._redo_live == batch  # (not framed yet, framed not written)
    assert sum(want) + batch == log.live_bytes


def test_a_run_of_deletions_takes_one_tombstone():
    m = MemFiles()
    log = new_log(m)
    seqs = [log.append(K, b"r%d" % i) for i in range(10)]
    log.flush()
    n = len(kinds(m, "log.1"))
    for s in seqs[2:8]:
        log.delete(s)  # ascending
    log.delete(seqs[1])
    log.delete(seqs[0])  # and on downwards: still the same run
    log.delete(seqs[9])  # not next to it: a run of its own
    assert log.pending()  # the runs are the batch (the runtime flushes it)
    log.flush()
    assert kinds(m, "log.1")[n:] == [K_DELS, K_DEL]
    assert contents(m) == [(seqs[8], K, b"r8")]
    log2 = new_log(m)
    assert log2.live_bytes == log.live_bytes and len(log2) == 1
    check_live(log2)


def test_a_torn_run_deletes_all_of_it_or_nothing():
    m0 = MemFiles()
    log = new_log(m0)
    seqs = [log.append(K, b"r%d" % i) for i in range(6)]
    log.flush()
    m0 = m0.copy()
    all_ = [(s, K, b"r%d" % i) for i, s in enumerate(seqs)]
    for keep in range(0, 12):
        m = m0.copy()
        log = new_log(m)
        for s in seqs[:5]:
            log.delete(s)
        m.crash_after = 1  # the append goes, its sync does not
        try:
            log.flush()
        except Crash:
            pass
        m.power_cut(keep)
        got = contents(m)
        assert got in (all_, all_[5:]), (keep, got)


def test_segment_live_bytes_stay_exact():
    r = rand(7)
    m = MemFiles()
    log = new_log(m, segment_bytes=150)
    live = []
    for i in range(400):
        op = r(10)
        if op < 5 or not live:
            live.append(log.append(K, b"x" * r(20)))
        elif op < 8:
            log.delete(live.pop(r(len(live))))
        elif op == 8:
            log.flush()
        else:
            log.tick(i * 100)  # flushes, drops dead segments, compacts
        check_live(log)
    log.flush()
    check_live(log)
    log2 = new_log(m, segment_bytes=150)
    check_live(log2)
    assert sorted(s for s, k, b in log2.replay()) == sorted(live)
    assert log2.compact(2) and log2.compact()
    check_live(log2)


def standing_queue(m, n=80, depth=6):
    """A session's record first, then a queue `depth` deep flowing through
    many segments (append, later delete) -> (log, the live records)."""
    log = new_log(m, segment_bytes=120)
    first = (log.append(K, b"session"), K, b"session")
    q = []
    for i in range(n):
        body = b"queued-%d" % i
        q.append((log.append(K + 1, body), K + 1, body))
        if len(q) > depth:
            log.delete(q.pop(0)[0])
        log.flush()
    return log, [first] + q


def test_dead_oldest_segments_are_removed_unread():
    m = MemFiles()
    log, want = standing_queue(m)
    log.delete(want[0][0])  # the session goes: the oldest segments are all garbage
    log.flush()
    dead = ["log.%d" % s[0] for s in log._segs[:-1] if not s[4]]
    assert len(dead) > 5 and "log.%d" % log._segs[0][0] in dead
    read = spy_reads(m)
    assert log.compact(prefix(log, True))  # what tick() does first
    assert read == []  # removing garbage costs no reading
    assert not [n for n in dead if n in m.data]
    check_live(log)
    assert contents(m) == want[1:]


def test_compaction_reads_only_segments_with_live_records():
    m = MemFiles()
    log, want = standing_queue(m)
    log.compact(1)  # the session's record, alone in a small segment
    live = ["log.%d" % s[0] for s in log._segs if s[4]]
    assert len(log._segs) - len(live) > 5
    read = spy_reads(m)
    log.tick(0)  # garbage outweighs live: the prefix up to the live queue
    assert read and not [n for n in read if n not in live]
    assert len(log._segs) <= 3
    check_live(log)
    assert contents(m) == want


def test_prefix_compaction_copies_only_what_lives():
    m = MemFiles()
    log, want = standing_queue(m)
    before = log.written
    while len(log._segs) > 1 and prefix(log, False):
        assert log.compact(prefix(log, False))
    # the session record and the few queued ones were copied, not the queue's history
    assert log.written - before < 4 * log.live_bytes + 64
    assert log.disk_bytes <= 2 * log.live_bytes + 2 * log.segment_bytes + 64
    check_live(log)
    assert list(log.replay()) == want
    assert contents(m) == want
    # and the log goes on after it, in order
    s = log.append(K, b"later")
    log.flush()
    assert contents(m) == want + [(s, K, b"later")]


def test_prefix_compaction_survives_a_crash_at_every_step():
    m0 = MemFiles()
    log, want = standing_queue(m0)
    nxt = log.next_seq
    upto = prefix(log, False)
    assert 0 < upto < len(log._segs)
    dry = m0.copy()
    l2 = new_log(dry, segment_bytes=120)
    assert prefix(l2, False) == upto and l2.compact(upto)
    steps = len(dry.ops)
    assert steps >= 5
    for k in range(steps + 1):
        for keep in (0, 3, 100000):
            m = m0.copy()
            log = new_log(m, segment_bytes=120)
            m.crash_after = k
            try:
                log.compact(upto)
            except Crash:
                pass
            m.power_cut(keep)
            log2 = new_log(m, segment_bytes=120)
            assert list(log2.replay()) == want, (k, keep)
            assert log2.next_seq >= nxt
            check_live(log2)
            s = log2.append(K, b"after")
            log2.flush()
            assert log2.compact(prefix(log2, False))
            assert contents(m) == want + [(s, K, b"after")], (k, keep)


def test_a_store_without_id_gaps_compacts_whole():
    # segments written before ids had gaps (1, 2, 3, ...): no id fits
    # between a prefix and the rest, so all of it is compacted
    m = MemFiles()
    log, want = standing_queue(m, n=20)
    names = sorted(int(n.split(".")[1]) for n in m.data)
    for i, sid in enumerate(names):  # renumber 1, 2, 3, ...
        if sid != i + 1:
            m.data["log.%d" % (i + 1)] = m.data.pop("log.%d" % sid)
            m.durable["log.%d" % (i + 1)] = m.durable.pop("log.%d" % sid)
    log = new_log(m, segment_bytes=120)
    assert list(log.replay()) == want
    assert log.compact(1)
    assert len(log._segs) == 1
    assert contents(m) == want


# ---- write() now, the sync elsewhere (tcp_cpython.py syncs on a thread) ------
def test_written_is_not_durable_until_synced():
    m = MemFiles()
    log = new_log(m)
    a = log.append(K, b"a")
    log.flush()
    b = log.append(K, b"b")
    assert log.write() > 0 and log.top == b
    assert log.synced == a and not log.pending()
    c = m.copy()
    c.power_cut()
    assert contents(c) == [(a, K, b"a")]  # written, not durable
    m.sync("log.%d" % log._segs[-1][0])  # what the thread does
    log.sync_done(b)
    assert log.synced == b
    c = m.copy()
    c.power_cut()
    assert contents(c) == [(a, K, b"a"), (b, K, b"b")]


def test_a_write_while_a_sync_is_in_flight_stays_in_its_segment():
    m = MemFiles()
    log = new_log(m, segment_bytes=60)
    first = [log.append(K, b"x" * 40)]
    log.write()  # a thread is syncing this one
    name = "log.%d" % log._segs[-1][0]
    first.append(log.append(K, b"y" * 40))
    log.flush()  # the segment is full, but a new one would leave the first unsynced
    assert list(m.data) == [name]
    c = m.copy()
    c.power_cut()
    assert [s for s, k, b in contents(c)] == first  # one sync covered both
    log.sync_done(first[0])  # the thread's, late: changes nothing
    assert log.synced == first[1]
    log.append(K, b"z")
    log.flush()
    assert len(m.data) == 2  # and now it moves on


def test_a_failed_sync_rewrites_its_batch_in_a_new_segment():
    m = MemFiles()
    log = new_log(m)
    a = log.append(K, b"a")
    log.flush()
    b = log.append(K, b"b")
    log.write()
    log.sync_failed()  # the thread's sync raised
    assert log.pending()
    c = log.append(K, b"c")
    log.flush()
    assert len(m.data) == 2  # never appended after the failed one
    want = [(a, K, b"a"), (b, K, b"b"), (c, K, b"c")]
    c2 = m.copy()
    c2.power_cut()
    assert contents(c2) == want
    log2 = new_log(m)
    assert list(log2.replay()) == want and len(log2) == 3
    check_live(log2)


def test_a_failed_write_while_a_sync_is_in_flight_waits_for_it():
    m = MemFiles()
    log = new_log(m)
    log.append(K, b"a")
    log.write()  # in flight
    log.append(K, b"b")
    m.fail = OSError(28)
    raises(OSError, log.write)
    log.append(K, b"c")
    raises(OSError, log.write)  # not after a failed write, not a new segment yet
    log.sync_done(log.top)
    log.flush()  # the in-flight one done: a new segment takes the batch
    assert len(m.data) == 2
    assert [b for s, k, b in contents(m)] == [b"a", b"b", b"c"]


def test_settled_follows_durability_and_void_records():
    # Log.settled(): output queued while next_seq - 1 was at most it may go.
    # A record deleted before it was written (an acknowledged delivery) is
    # void: what promised it goes without any write or sync.
    m = MemFiles()
    log = new_log(m)
    assert log.settled() == log.next_seq - 1 == 0
    a = log.append(K, b"a")
    assert log.settled() == a - 1  # pending
    log.flush()
    assert log.settled() == a
    b = log.append(K, b"b")
    c = log.append(K, b"c")
    assert log.settled() == a
    log.delete(b)  # before write(): void
    assert log.settled() == b  # c still waits
    log.delete(c, True, True)
    assert log.settled() == c == log.next_seq - 1
    assert log.write() == 0 and log.pending() == 0  # nothing reached the flash
    d = log.append(K, b"d")
    log.write()  # written, its sync elsewhere
    assert log.settled() == a  # (what was synced: b and c were never written)
    log.delete(d, True, True)  # written: void only once synced
    assert log.settled() == a
    log.sync_done(log.top)
    assert log.settled() == log.next_seq - 1
    e = log.append(K, b"e")
    log.delete(e, False)  # not elided: it reaches the flash, so it waits
    assert log.settled() == e - 1
    log.flush()
    assert log.settled() == log.next_seq - 1


def test_settled_waits_for_a_promised_tombstone_not_a_quiet_one():
    # A deletion some output promises (UNSUBACK, PUBCOMP, a clean CONNACK)
    # holds what is queued after it until its tombstone is durable; an
    # ended delivery's (quiet) holds nothing. A failed sync puts it back.
    m = MemFiles()
    log = new_log(m)
    a = log.append(K, b"a")
    b = log.append(K, b"b")
    log.flush()
    log.delete(a, True, True)
    assert log.settled() == log.next_seq - 1 == b
    log.delete(b)
    assert log.settled() == b - 1  # output queued now (at b) waits
    log.write()
    assert log.settled() == b - 1
    log.sync_failed()
    assert log.settled() == b - 1
    c = log.append(K, b"c")
    assert log.settled() == b - 1
    log.write()  # the failed batch again, in a new segment
    m.sync("log.%d" % log._segs[-1][0])  # what the helper does
    log.sync_done(log.top)
    assert log.settled() == c == log.next_seq - 1
    c2 = m.copy()
    c2.power_cut()
    assert contents(c2) == [(c, K, b"c")]


def test_a_record_deleted_before_its_batch_is_written_never_is():
    m = MemFiles()
    log = new_log(m)
    keep = log.append(K, b"keep")
    log.flush()
    n = len(m.data["log.1"])
    gone = [log.append(K, b"brief-%d" % i) for i in range(5)]
    for s in gone:
        log.delete(s)  # acked within the sync's time
    assert log.pending() == 0 and log.live_bytes == log.size_of(keep)
    log.flush()
    assert len(m.data["log.1"]) == n  # no record, no tombstone
    linked = log.append(K, b"linked")
    log.delete(linked, False)  # a link another record replaces through
    log.flush()
    assert kinds(m, "log.1")[-2:] == [K, K_DEL]
    assert contents(m) == [(keep, K, b"keep")]
    check_live(new_log(m))


def test_private_copies_equal():
    # log.py, logread.py, compact.py and fqueue.py repeat record.py's
    # segment entry fields, private on both sides (MicroPython inlines
    # private consts: nothing left to compare there)
    from edge.store import compact, fqueue, log, logread, record

    checked = 0
    for mod in (log, logread, compact, fqueue):
        for name in ("_ID", "_SIZE", "_DECODE", "_TOP", "_LIVE", "_ID_STEP"):
            if hasattr(mod, name):
                assert getattr(mod, name) == getattr(record, "_SEG" + name if name != "_ID_STEP" else name), (
                    mod.__name__, name)
                checked += 1
    assert checked == 16 or not hasattr(log, "_ID")
