# Offline queues on flash (edge/store/fqueue.py, issue #19): a persistent
# 3.1.1 session whose client is away keeps its QoS 1 messages in the log
# only (FMSG, the log's owned kind), with no entry per message in RAM, and
# reads them back a window at a time as its client drains the queue; a
# restart counts them per session instead of rebuilding them. Plain
# functions: pytest and tests/mpy_runner.py.
from edge.mqtt.packets import Puback
from edge.store.fqueue import FLASH
from edge.store.layout import FMSG
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, make_broker, publish, publishes
from tests.core._store import crash, new_store
from tests.core.test_store_segments import kinds

_LIMITS = {"max_queued_messages": 100000, "max_queued_bytes": 1 << 30,
           "memory_budget_bytes": 1 << 30}


def boot(m, segment_bytes=2048, session_budget=1 << 22, **kw):
    """A broker restored from m with offline queues on flash, as a board
    runs (edge/runtime/persist.py): (broker, log, store, counts, problems)."""
    m, log, st = new_store(m, prefix="state", budget_bytes=1 << 22, segment_bytes=segment_bytes,
                           session_budget=session_budget, owned=FMSG)
    st.queue = st.fq  # as edge/runtime/persist.py on a board
    cfg = dict(_LIMITS)
    cfg.update(kw)
    b = make_broker(0, **cfg)
    counts, problems = b.restore(st)
    log.flush()
    return b, log, st, counts, problems


def away_sub(b, f="q/#", cid="sub"):
    sub = Client(b)
    sub.connect(cid, clean=False)
    sub.subscribe((f, 1))
    sub.lose()
    pub = Client(b)
    pub.connect("pub")
    return pub


def fill(pub, n, start=0, topic="q/t"):
    for i in range(start, start + n):
        publish(pub, topic, b"m%d" % i, 1, pid=i % 65535 + 1)


def drain(b, n, cid="sub", ack=True):
    """Reconnect cid and take up to n messages, acking each (the window
    lets more out as acks come); returns their payloads."""
    sub = Client(b)
    assert sub.connect(cid, clean=False).session_present
    got = []
    pkts = publishes(sub.recv())
    while pkts and len(got) < n:
        for p in pkts:
            if len(got) >= n:
                break
            got.append(p.payload)
            if ack:
                sub.send(Puback(p.pid))
        pkts = publishes(sub.recv())
    return sub, got


def all_kinds(m):
    out = []
    for name in sorted(m.data, key=lambda n: int(n.split(".")[1])):
        out += kinds(m, name)
    return out


def test_offline_qos1_goes_to_flash_with_no_entry_per_message_in_ram():
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    pub = away_sub(b)
    log.flush()
    base = (len(log), log.live_bytes)
    fill(pub, 120)
    log.flush()
    sess = b.sessions["sub"]
    assert sess.queue == [FLASH] and sess.queued_bytes == 0
    s = st._sess[sess]
    assert s[7] is None and len(st._mseq) == 0  # no seq list, no message index
    assert len(log) == base[0]  # the log's live index: nothing per message
    assert log.live_bytes > base[1] + 120 * 10
    assert all_kinds(m).count(FMSG) == 120
    sub, got = drain(b, 120)
    assert got == [b"m%d" % i for i in range(120)]
    assert sess.queue is None and s[10] is None
    log.flush()
    assert (len(log), log.live_bytes) == base  # every record released
    # and a restart brings none of them back
    b, log, st, counts, problems = boot(crash(m))
    assert counts["queued"] == 0 and problems == [] and b.sessions["sub"].queue is None


def test_flash_queue_survives_a_power_cut_and_drains_in_order():
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    pub = away_sub(b)
    fill(pub, 100)
    log.flush()  # the publisher's PUBACKs wait for this
    b, log, st, counts, problems = boot(crash(m))
    assert counts["queued"] == 100 and problems == []
    assert b.sessions["sub"].queue == [FLASH]
    sub, got = drain(b, 30)  # 30 acknowledged, the window's worth in flight
    assert got == [b"m%d" % i for i in range(30)]
    log.flush()
    b, log, st, counts, problems = boot(crash(m))
    assert problems == []
    sub, got = drain(b, 1000)
    # nothing acknowledged comes back; the rest, in order, each once
    assert got == [b"m%d" % i for i in range(30, 100)]


def test_acks_before_the_cursor_is_synced_come_back_at_least_once():
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    pub = away_sub(b)
    fill(pub, 20)
    log.flush()
    sub, got = drain(b, 10)  # acked, the cursor not synced: a power cut now
    b, log, st, counts, problems = boot(crash(m))
    sub, got = drain(b, 1000)
    assert got == [b"m%d" % i for i in range(20)]  # at least once, in order


def test_new_messages_queue_behind_the_flash_tail_while_online():
    # QoS 1 order [MQTT-4.6.0-6]: once the queue has a flash tail, new QoS
    # 1 messages join it even with the client back, until it drains
    m = MemFiles()
    b, log, st, _, _ = boot(m, max_inflight=4)
    pub = away_sub(b)
    fill(pub, 10)
    sub = Client(b)
    sub.connect("sub", clean=False)
    first = publishes(sub.recv())
    assert [p.payload for p in first] == [b"m0", b"m1", b"m2", b"m3"]
    fill(pub, 5, 10)  # online, the window full: behind the flash tail
    got = [p.payload for p in first]
    for p in first:
        sub.send(Puback(p.pid))
    while True:
        pkts = publishes(sub.recv())
        if not pkts:
            break
        for p in pkts:
            got.append(p.payload)
            sub.send(Puback(p.pid))
    assert got == [b"m%d" % i for i in range(15)]
    assert b.sessions["sub"].queue is None


def test_qos2_and_a_v5_session_stay_on_the_ram_queue():
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    sub = Client(b)
    sub.connect("sub", clean=False)
    sub.subscribe(("q/#", 2))
    sub.lose()
    v5 = Client(b, v5=True)
    v5.connect("v5", clean=False, props={0x11: 3600})
    v5.subscribe(("q/#", 1))
    v5.lose()
    pub = Client(b)
    pub.connect("pub")
    publish(pub, "q/a", b"one", 1, pid=1)
    publish(pub, "q/b", b"two", 2, pid=2)
    q = b.sessions["sub"].queue
    assert q[0] is FLASH and [e.payload for e in q[1:]] == [b"two"]
    assert FLASH not in b.sessions["v5"].queue and len(b.sessions["v5"].queue) == 2
    log.flush()
    b, log, st, counts, problems = boot(crash(m))
    assert problems == [] and b.sessions["sub"].queue[-1] is FLASH
    sub, got = drain(b, 10)
    assert sorted(got) == [b"one", b"two"]


def test_compaction_keeps_what_the_cursor_has_not_passed():
    m = MemFiles()
    b, log, st, _, _ = boot(m, segment_bytes=1024)
    pub = away_sub(b)
    fill(pub, 120)
    log.flush()
    sub, got = drain(b, 50)
    sub.lose()
    log.flush()
    assert log.compact()
    assert all_kinds(m).count(FMSG) <= 70 + 20  # the acked ones gone (the window may stay)
    b, log, st, counts, problems = boot(crash(m), segment_bytes=1024)
    assert problems == []
    sub, got = drain(b, 1000)
    assert got == [b"m%d" % i for i in range(50, 120)]


def test_replay_holds_the_same_index_whatever_the_queue_length():
    sizes = []
    for n in (10, 150):
        m = MemFiles()
        b, log, st, _, _ = boot(m, segment_bytes=16384)
        fill(away_sub(b), n)
        log.flush()
        b, log, st, counts, problems = boot(crash(m), segment_bytes=16384)
        assert counts["queued"] == n and problems == []
        s = st._sess[b.sessions["sub"]]
        sizes.append((len(log), len(st._mseq), s[7], s[10][0] == n and len(s[10][2]),
                      b.sessions["sub"].queue))
    assert sizes[0] == sizes[1] == (2, 0, None, 0, [FLASH])


def test_a_session_taken_over_clean_releases_its_flash_queue():
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    pub = away_sub(b)
    log.flush()
    base = log.live_bytes
    fill(pub, 50)
    log.flush()
    c = Client(b)
    c.connect("sub", clean=True)  # the persistent session ends
    log.flush()
    assert log.live_bytes < base
    b, log, st, counts, problems = boot(crash(m))
    assert counts["queued"] == 0 and problems == []


def test_records_of_no_session_are_released_at_replay():
    # a session deleted with its FMSG records still live (as a torn batch
    # could leave): replay ends them, reported
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    pub = away_sub(b)
    fill(pub, 5)
    log.flush()
    s = st._sess[b.sessions["sub"]]
    s[10] = None  # forget the queue, so deleting the session leaves its records
    st.session_deleted(b.sessions["sub"])
    log.flush()
    b, log, st, counts, problems = boot(crash(m))
    assert counts["queued"] == 0 and "sub" not in b.sessions
    assert [p[1:] for p in problems] == [(30, "no session: 5 queued on flash")]
    log.flush()
    b, log, st, counts, problems = boot(crash(m))
    assert problems == []


def test_the_memory_budget_counts_the_flash_item_once_and_gets_it_back():
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    budget = b.limits.budget
    pub = away_sub(b)
    used = budget.used
    fill(pub, 30)
    assert budget.used == used + 208  # one FLASH item, not 30 entries
    sub, got = drain(b, 30)
    assert len(got) == 30
    sub.lose()
    assert budget.used == used  # back where it was, nothing held


def test_the_session_budget_bounds_a_flash_queue_and_drops_nothing_queued():
    # A flash queue is outside the memory budget (one FLASH item above), so
    # store.session_budget is its bound: past it a new message is refused
    # (a 5.0 publisher hears 0x97 Quota exceeded), one queued is never
    # dropped to make room, and the queue drains whole, in order
    m = MemFiles()
    b, log, st, _, _ = boot(m, session_budget=1024)
    away_sub(b)
    pub = Client(b, v5=True)
    pub.connect("pub5")
    codes = []
    for i in range(40):
        acks = publish(pub, "q/t", b"m%02d" % i + b"x" * 16, 1, pid=i + 1)
        codes += [a.reason for a in acks if a.kind == 4]
    kept = codes.count(0)
    assert 0 < kept < 40 and codes == [0] * kept + [0x97] * (40 - kept), codes
    assert st.refused_session == 40 - kept
    assert b.sessions["sub"].queue == [FLASH]  # the queued ones on flash, none in RAM
    log.flush()
    sub, got = drain(b, 40)
    assert got == [b"m%02d" % i + b"x" * 16 for i in range(kept)]


def test_a_drain_reads_each_record_about_once():
    # read_owned goes on from where the last read stopped: draining a
    # queue reads its segment file a few times over at most, not once per
    # batch from its start
    m = MemFiles()
    b, log, st, _, _ = boot(m, segment_bytes=16384)
    pub = away_sub(b)
    for i in range(150):
        publish(pub, "q/t", b"%03d" % i + bytes(61), 1, pid=i + 1)
    log.flush()
    size = sum(len(d) for d in m.data.values())
    read = [0]
    plain = m.readinto

    def counting(name, offset, mv):
        n = plain(name, offset, mv)
        read[0] += n
        return n

    m.readinto = counting
    sub, got = drain(b, 150)
    assert [p[:3] for p in got] == [b"%03d" % i for i in range(150)]
    # (each read fills the log's read buffer: about a batch and a record)
    assert read[0] < 3 * size, (read[0], size)


def test_a_torn_batch_of_acks_and_new_messages_at_every_byte():
    # 20 queued and synced; the client acks 10 (releases, a cursor) and 5
    # new messages join, all in one batch a power cut tears at every byte:
    # every start keeps the 10 unacked and may bring back acked ones (at
    # least once), in order, with a prefix of the new ones, nothing else
    m = MemFiles()
    b, log, st, _, _ = boot(m)
    pub = away_sub(b)
    fill(pub, 20)
    log.flush()
    sub, got = drain(b, 10)
    assert len(got) == 10
    sub.lose()
    fill(pub, 5, 20)
    log.write()  # written, not synced
    tail = sum(len(m.data[n]) - m.durable[n] for n in m.data)
    assert tail > 0
    for keep in range(0, tail + 1):
        c = m.copy()
        c.power_cut(keep)
        b2, log2, st2, counts, problems = boot(c)
        assert [p for p in problems if p[2] != "unknown kind"] == [], (keep, problems)
        sub2, got = drain(b2, 1000)
        n = [int(p[1:]) for p in got]
        assert n == list(range(n[0], n[-1] + 1)), (keep, n)  # in order, no gap
        assert n[0] <= 10 and 19 <= n[-1] <= 24, (keep, n)
