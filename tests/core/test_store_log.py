# The segmented record log (edge/store/log.py, compact.py) over in-memory
# files with a power-cut model (tests/core/_memfiles.py): group commit, sync
# policies, budget, torn tails, bit flips, quarantine, compaction and crashes
# at every step. Plain functions: runs under pytest and tests/mpy_runner.py.
from edge.store.log import Log
from edge.store.record import HEADER, HEADER_LEN, K_DEL, encode_record, put_varint
from tests.core._memfiles import Crash, MemFiles, spy_reads
from tests.core._util import raises

K = 16  # an owner's record kind


def new_log(m, now=0, **kw):
    kw.setdefault("segment_bytes", 4096)
    log = Log(m, **kw)
    log.open(now)
    return log


def contents(m, **kw):
    """What a fresh start over m replays: [(seq, kind, body)]."""
    return list(new_log(m, **kw).replay())


def filled(n, m=None, **kw):
    m = m or MemFiles()
    log = new_log(m, **kw)
    want = []
    for i in range(n):
        body = b"msg-%d" % i
        want.append((log.append(K + i % 3, body), K + i % 3, body))
    log.flush()
    return m, log, want


def rand(seed):
    # LCG: the same numbers on both runtimes (their `random` differ)
    x = [seed]

    def nxt(n):
        x[0] = (x[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (x[0] >> 8) % n
    return nxt


def test_roundtrip_in_order():
    m, log, want = filled(30)
    assert [w[0] for w in want] == list(range(1, 31))
    assert list(log.replay()) == want
    assert contents(m) == want
    assert log.synced == 30 and len(log) == 30


def test_group_commit_one_sync_per_batch():
    m = MemFiles()
    log = new_log(m)
    for i in range(10):
        log.append(K, b"x")
    assert m.ops == []  # nothing reaches the file before flush
    assert log.synced == 0
    log.flush()
    # a new segment: header+META, the batch, its name made durable (by
    # write(), so a sync on another thread needs only the file), one sync
    assert m.ops == ["append", "append", "sync_dir", "sync"]
    m.ops = []
    for i in range(10):
        log.append(K, b"y")
    log.delete(3)
    assert log.flush() > 0
    assert m.ops == ["append", "sync"]
    assert log.flush() == 0 and m.ops == ["append", "sync"]
    assert log.syncs == 2 and log.synced == 20


def test_sync_always_and_never():
    m = MemFiles()
    log = new_log(m, sync="always")
    log.append(K, b"a")
    log.append(K, b"b")
    log.delete(1)
    assert m.ops.count("sync") == 3 and log.synced == 2
    m = MemFiles()
    log = new_log(m, sync="never")
    log.append(K, b"a")
    log.tick(0)
    log.tick(50)  # "never" still writes, on the same schedule as "batch"
    assert "append" in m.ops and "sync" not in m.ops
    assert contents(m) == [(1, K, b"a")]
    raises(ValueError, Log, m, sync="sometimes")


def test_tick_flushes_after_max_delay():
    m = MemFiles()
    log = new_log(m, max_delay_ms=50)
    log.tick(900)
    assert m.ops == []
    log.append(K, b"a")
    log.tick(1000)  # first seen: due at 1050
    log.tick(1049)
    assert m.ops == []
    log.tick(1050)
    assert "sync" in m.ops and log.synced == 1
    log = new_log(MemFiles(), max_delay_ms=0)
    log.append(K, b"a")
    log.tick(5)
    assert log.synced == 1


def test_batch_size_bound_flushes():
    m = MemFiles()
    log = new_log(m, batch_bytes=100)
    for i in range(10):
        log.append(K, bytes(20))
    assert m.ops.count("sync") >= 2 and log.synced >= 8


def test_a_body_in_parts_is_framed_as_the_joined_bytes():
    # Log.append takes a tuple of parts (state.py's QMSG): the same record on
    # flash, the same size counted, and nothing built when it is elided
    m1, m2 = MemFiles(), MemFiles()
    a, b = new_log(m1), new_log(m2)
    parts = (b"\x01\x02", b"topic/x", bytes(200))
    assert a.append(K, parts) == b.append(K, b"".join(parts)) == 1
    assert a.size_of(1) == b.size_of(1) and a.live_bytes == b.live_bytes
    assert a.pending() == b.pending()
    a.append(K, (b"gone", b"too"))
    b.append(K, b"gonetoo")
    assert a.delete(2) and b.delete(2)  # elided: never framed
    a.flush()
    b.flush()
    assert m1.data == m2.data
    assert list(new_log(m1).replay()) == [(1, K, b"".join(parts))]
    # max_record counts the parts' sum
    c = new_log(MemFiles(), max_record=100)
    assert c.append(K, (bytes(60), bytes(41))) == -1 and c.refused == 1
    assert c.append(K, (bytes(60), bytes(40))) == 1


def test_delete_tombstones():
    m, log, want = filled(5)
    assert log.delete(2) is True
    assert log.delete(2) is False and log.delete(99) is False
    assert not log.is_live(2) and log.is_live(3)
    log.flush()
    assert contents(m) == [w for w in want if w[0] != 2]
    assert len(new_log(m)) == 4


def test_kind_range_is_the_owners():
    log = new_log(MemFiles())
    raises(ValueError, log.append, K_DEL, b"x")
    raises(ValueError, log.append, 255, b"x")


def test_budget_refuses_and_counts():
    m = MemFiles()
    log = new_log(m, budget_bytes=100, max_record=50)
    seqs = []
    while True:
        s = log.append(K, bytes(20))  # 27 bytes on flash
        if s < 0:
            break
        seqs.append(s)
    assert len(seqs) == 3 and log.refused == 1 and log.live_bytes == 81
    assert log.append(K, bytes(51)) == -1 and log.refused == 2  # over max_record
    log.delete(seqs[0])
    assert log.append(K, bytes(20)) == 4  # room again; a refusal takes no seq
    log.flush()
    assert [s for s, k, b in contents(m)] == [2, 3, 4]


def test_seq_never_reused_after_everything_deleted():
    m, log, want = filled(3)
    for s, k, b in want:
        log.delete(s)
    assert log.compact()
    log = new_log(m)
    assert list(log.replay()) == [] and log.next_seq == 4
    assert log.append(K, b"z") == 4


def test_rotation_keeps_order():
    m = MemFiles()
    log = new_log(m, segment_bytes=64)
    want = []
    for i in range(40):
        want.append((log.append(K, b"r%d" % i), K, b"r%d" % i))
        if i % 3 == 0:
            log.flush()
    log.flush()
    assert len(m.data) > 3
    assert contents(m, segment_bytes=64) == want


def test_last_record_cut_at_every_byte():
    m, log, want = filled(8)
    log.append(K, b"the last one")
    log.flush()
    data = m.data["log.1"]
    last = len(data) - len(encode_record(K, b"\x09the last one"))
    for cut in range(last, len(data)):
        c = m.copy()
        c.data["log.1"] = c.data["log.1"][:cut]
        log2 = new_log(c)
        assert list(log2.replay()) == want, cut
        if cut > last:
            assert log2.problems == [("log.1", last, "torn", "cut")]
        assert len(c.data["log.1"]) == last  # the tail is gone from the file
        assert log2.append(K, b"after") == 9  # the torn seq 9 was never acked
        log2.flush()
        assert contents(c) == want + [(9, K, b"after")]


def test_random_bit_flips():
    m, log, want = filled(20)
    data = m.data["log.1"]
    # record boundaries: header, META, then one record per want entry
    ends = []
    pos = len(data)
    for s, k, b in reversed(want):
        pre = bytearray()
        put_varint(pre, s)
        pos -= len(encode_record(k, bytes(pre) + b))
        ends.insert(0, pos)
    first = ends[0]
    r = rand(7)
    for trial in range(150):
        i = r(len(data))
        c = m.copy()
        c.data["log.1"][i] ^= 1 << r(8)
        log2 = new_log(c, now=5)
        got = list(log2.replay())
        assert log2.problems, i
        if i < first:  # header or META: the file can't be trusted at all
            assert got == [] and log2.quarantined == 1, i
            assert "log.1.corrupt-5" in c.data
        else:
            k = 0
            while k + 1 < len(ends) and ends[k + 1] <= i:
                k += 1
            assert got == want[:k], (i, len(got), k)
            assert log2.problems[0][:2] == ("log.1", ends[k])


def test_zero_filled_and_erased_tail():
    for fill in (0x00, 0xFF):
        m, log, want = filled(5)
        good = len(m.data["log.1"])
        m.data["log.1"].extend(bytes([fill]) * 4096)
        log2 = new_log(m)
        assert list(log2.replay()) == want
        assert log2.problems == [("log.1", good, "kind", "cut")]
        assert len(m.data["log.1"]) == good


def test_garbage_file_quarantined_and_reported():
    m, log, want = filled(3)
    m.data["log.7"] = bytearray(b"this is not a segment at all")
    m.durable["log.7"] = 28
    m.data["log.8"] = bytearray(b"\x89EBL\x02" + bytes(40))  # a newer format
    m.durable["log.8"] = 45
    for other in ("notes.txt", "log.007", "log.", "log.x"):
        m.data[other] = bytearray(b"not ours")
        m.durable[other] = 8
    log2 = new_log(m, now=1234)
    assert list(log2.replay()) == want  # the broker starts with what is good
    assert log2.problems == [("log.7", 0, "magic", "log.7.corrupt-1234"),
                             ("log.8", 0, "version 2", "log.8.corrupt-1234")]
    assert log2.quarantined == 2
    assert "log.7" not in m.data
    assert "notes.txt" in m.data and "log.007" in m.data and "log.x" in m.data
    s = log2.append(K, b"new")
    assert log2.compact()
    assert "log.10" in m.data  # new ids pass the quarantined ones (every other id: log.py)
    assert contents(m) == want + [(s, K, b"new")]
    # a second damaged file under the same name in the same ms gets its own
    m.data["log.7"] = bytearray(b"garbage again")
    m.durable["log.7"] = 13
    log3 = new_log(m, now=1234)
    assert log3.problems == [("log.7", 0, "magic", "log.7.corrupt-1234-2")]
    assert m.data["log.7.corrupt-1234"] == b"this is not a segment at all"


def test_torn_creation_removed():
    for junk in (b"", HEADER[:3], HEADER, HEADER + b"\x01\x02"):
        m, log, want = filled(2)
        m.data["log.2"] = bytearray(junk)
        m.durable["log.2"] = len(junk)
        log2 = new_log(m)
        assert list(log2.replay()) == want
        assert log2.problems == [("log.2", 0, "torn", "removed")], junk
        assert "log.2" not in m.data


def test_large_record_read_back_with_smaller_max_record():
    m = MemFiles()
    log = new_log(m, max_record=2000)
    log.append(K, b"s")
    log.append(K, bytes(range(256)) * 6)
    log.append(K, b"e")
    log.flush()
    got = contents(m, max_record=64)
    assert [b for s, k, b in got] == [b"s", bytes(range(256)) * 6, b"e"]


def test_failed_write_moves_to_a_new_segment():
    m, log, want = filled(3)
    log.append(K, b"four")
    m.fail = OSError(28)
    raises(OSError, log.flush)
    assert log.synced == 3  # not durable: not to be acked
    assert log.flush() > 0  # the batch is kept and goes to the next segment
    assert "log.3" in m.data  # (new segments take every other id: log.py)
    log2 = new_log(m)
    assert [b for s, k, b in log2.replay()] == [b"msg-0", b"msg-1", b"msg-2", b"four"]
    assert log2.problems[0][0] == "log.1" and log2.problems[0][3] == "cut"


def test_failed_sync_rewrites_batch_once():
    # the batch reached the file but its sync failed: flush() writes it again
    # into a new segment, and every record still replays (and counts) once
    m, log, want = filled(3)
    live = log.live_bytes
    extra = [(log.append(K, b"e%d" % i), K, b"e%d" % i) for i in range(3)]
    m.fail_sync = OSError(5)
    raises(OSError, log.flush)
    log.flush()
    assert len(m.data) == 2
    log2 = new_log(m)
    assert list(log2.replay()) == want + extra
    assert log2.live_bytes == log.live_bytes > live and len(log2) == 6
    assert log2.next_seq == 7
    assert log2.compact() and contents(m) == want + extra


def churn(m, n=60, **kw):
    """A log with deletes spread over several segments -> (log, live want)."""
    log = new_log(m, segment_bytes=100, **kw)
    want = []
    for i in range(n):
        body = b"c%d" % i
        want.append((log.append(K, body), K, body))
        if i % 4 == 0:
            log.flush()
        if i % 3:
            s = want.pop(0)[0]
            log.delete(s)
    log.flush()
    return log, want


def test_compaction_keeps_only_live_records():
    m = MemFiles()
    log, want = churn(m)
    nseg = len(m.data)
    assert nseg > 3
    before = log.disk_bytes
    assert log.compact() is True
    assert list(m.data) == ["log.%d" % (2 * nseg + 1)]  # past every id (every other one)
    assert log.disk_bytes < before and log.compactions == 1
    # O(live): header, META and the live records, nothing else
    assert log.disk_bytes == len(m.data["log.%d" % (2 * nseg + 1)])
    assert log.disk_bytes - log.live_bytes < 32
    assert list(log.replay()) == want
    assert contents(m) == want
    s = log.append(K, b"later")  # appends go on after the compacted records
    log.flush()
    assert contents(m) == want + [(s, K, b"later")]


def test_tick_compacts_when_garbage_outweighs_live():
    m = MemFiles()
    log = new_log(m, segment_bytes=200)
    for i in range(100):
        s = log.append(K, b"payload-%d" % i)
        log.flush()
        log.delete(s)
        log.tick(i)
    log.flush()
    assert log.compactions > 0
    assert log.disk_bytes <= 2 * log.live_bytes + 200 + 64
    assert contents(m) == []


def test_compaction_survives_a_crash_at_every_step():
    m0 = MemFiles()
    log, want = churn(m0)
    nxt = log.next_seq
    dry = m0.copy()
    new_log(dry, segment_bytes=100).compact()
    steps = len(dry.ops)
    assert steps >= 6  # append, sync, rename, sync_dir, removes, sync_dir
    for k in range(steps + 1):
        for keep in (0, 3, 100000):
            m = m0.copy()
            log = new_log(m, segment_bytes=100)
            m.crash_after = k
            try:
                log.compact()
            except Crash:
                pass
            m.power_cut(keep)
            log2 = new_log(m, segment_bytes=100)
            assert list(log2.replay()) == want, (k, keep)
            assert log2.next_seq >= nxt
            assert not [n for n in m.data if n.endswith(".new")]
            # and the store works on: append, compact again, replay
            s = log2.append(K, b"after")
            assert log2.compact()
            assert contents(m) == want + [(s, K, b"after")], (k, keep)


def test_crash_during_flush_keeps_a_prefix_of_the_batch():
    m0, log, want = filled(4)
    batch = [(log.append(K, b"b%d" % i), K, b"b%d" % i) for i in range(5)]
    log.delete(want[0][0])
    m0 = m0.copy()
    for k in range(3):
        for keep in range(0, 60, 7):
            m = m0.copy()
            log = new_log(m)
            for s, kd, b in batch:
                log.append(kd, b)
            log.delete(want[0][0])
            m.crash_after = k
            try:
                log.flush()
            except Crash:
                pass
            m.power_cut(keep)
            got = contents(m)
            # whole records survive in order; a torn one and all after it don't
            if got[:1] == want[:1]:
                assert got[:4] == want and batch[:len(got) - 4] == got[4:], (k, keep)
            else:
                assert got == want[1:] + batch, (k, keep)


def test_stale_compaction_output_removed():
    m, log, want = filled(3)
    m.data["log.2.new"] = bytearray(HEADER + b"half")
    m.durable["log.2.new"] = 9
    log2 = new_log(m)
    assert "log.2.new" not in m.data and log2.problems == []
    assert list(log2.replay()) == want


def test_record_offsets_header():
    # a segment starts with the header, then META (so the first user record
    # is never at HEADER_LEN)
    m, log, want = filled(1)
    assert bytes(m.data["log.1"][:HEADER_LEN]) == HEADER
    assert m.data["log.1"][HEADER_LEN] == 1  # K_META


def test_replay_from_seq_skips_older_segments():
    m = MemFiles()
    log = new_log(m, segment_bytes=120)
    want = []
    for i in range(40):
        want.append((log.append(K, b"msg-%d" % i), K, b"msg-%d" % i))
        if i % 4 == 3:
            log.flush()  # a segment holds a few batches
    for s in (5, 21, 22, 39):
        log.delete(s)
    log.flush()
    want = [w for w in want if w[0] not in (5, 21, 22, 39)]
    assert len(m.data) >= 4
    for log2 in (log, new_log(m, segment_bytes=120)):  # running, and reopened
        for k in (0, 1, 5, 6, 21, 23, 38, 40, 41, 100):
            assert list(log2.replay(k)) == [w for w in want if w[0] >= k], k
    # reading on from the tail touches only the last segment
    read = spy_reads(m)
    got = list(log.replay(40))
    assert got == [want[-1]] and len(set(read)) == 1, read
    log.compact()
    assert list(log.replay(23)) == [w for w in want if w[0] >= 23]


def test_a_full_heap_while_framing_the_batch_keeps_it_for_the_next_flush():
    # A board's heap may run out while write() frames the batch (record.py):
    # the batch stays pending and the retried flush writes each record once
    # (the board's group commit retries it: edge/runtime/commit.py)
    import edge.store.log as logmod

    bodies = [b"a-%d" % i for i in range(5)]
    _, clean, _ = filled(3)
    for b in bodies:
        clean.append(K, b)
    size = clean.flush()  # the batch's bytes when nothing fails
    m, log, want = filled(3)
    for b in bodies:
        want.append((log.append(K, b), K, b))
    real = logmod.append_seq_record
    calls = [0]

    def failing(data, *a):
        calls[0] += 1
        if calls[0] == 3:  # the third record of the batch: two framed already
            raise MemoryError("memory allocation failed")
        return real(data, *a)

    logmod.append_seq_record = failing
    try:
        raises(MemoryError, log.flush)
    finally:
        logmod.append_seq_record = real
    assert log.flush() == size  # each record framed once, none twice
    assert contents(m) == want
