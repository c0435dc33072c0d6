# The uplink manager (edge/bridge/uplink.py) sans-IO, with a fake protocol
# client in place of amqp.py: the window, confirms, resends after a
# reconnect, the full outbox, commands, the back-off; and the URL parser.
from edge import config
from edge.bridge import url
from edge.bridge.uplink import Uplink
from edge.errors import ConfigError
from tests.core._pair import make_broker
from tests.core._util import raises


class FakeAmqp:
    state = 5  # READY
    server_properties = {"product": "RabbitMQ", "version": "3.10.8"}

    def __init__(self):
        self.sent = []  # (routing key, body, qos, message id)
        self.acked = []
        self.calls = []
        self.tag = 0

    def publish(self, rk, body, qos=1, message_id=None, headers=None, exchange="amq.topic"):
        self.sent.append((rk, body, qos, message_id))
        self.tag += 1
        return self.tag

    def ack(self, tag, multiple=False):
        self.acked.append(tag)

    def __getattr__(self, name):  # declare_queue, bind, qos, consume, close
        return lambda *a, **k: self.calls.append((name,) + a + ((k,) if k else ()))

    def take(self):
        return b""

    def tick(self, now):
        return ()


def section(**kw):
    # edge/config.py's defaults ([upstream] is in its table on CPython only)
    c = {"url": "amqp://u:secret@rabbit:5672/v", "edge_id": "e1", "exchange": "amq.topic",
         "publish": "#", "commands": True, "heartbeat": 15, "outbox_budget_bytes": 16777216,
         "window": 256, "cafile": "", "certfile": "", "keyfile": ""}
    c.update(kw)
    return c


def make(now=0, rng=lambda: 0.5, **kw):
    b = make_broker()
    logs = []
    up = Uplink(b, section(**kw), rng, lambda lvl, msg: logs.append(msg), now)
    return b, up, logs


def connect(up, now=0):
    assert up.due(now)
    up.connected(now)
    fake = up.c = FakeAmqp()
    assert up._events([("ready",)], now)
    if up.commands:  # the command queue declared first, then publishing
        assert fake.calls[-1][0] == "declare_queue" and not up.up
        assert up._events([("declare_ok", "edge.e1.cmd", 0, 0)], now)
    return fake


def data(fake):
    return [s for s in fake.sent if not s[0].startswith("edge.")]


def test_window_and_confirms():
    b, up, _ = make(window=2)
    for i in range(5):
        b.publish("m/%d" % i, b"%d" % i, 1)
    assert len(up.q) == 5 and up.inflight == 0  # queued while down
    fake = connect(up)
    assert fake.sent[0] == ("edge.e1.state", b"online", 1, None)
    assert data(fake) == [("m.0", b"0", 1, "e1:1"), ("m.1", b"1", 1, "e1:2")]
    tag0 = 2  # the state message took tag 1
    up._events([("confirm", tag0, False)], 0)
    assert [s[3] for s in data(fake)] == ["e1:1", "e1:2", "e1:3"]
    assert up.confirmed == 1 and len(up.q) == 4
    up._events([("confirm", 4, True)], 0)  # e1:2, e1:3 at once
    assert up.confirmed == 3 and [e[0] for e in up.q] == [4, 5]
    assert ("declare_queue", "edge.e1.cmd", {"arguments": {"x-queue-type": "quorum"}, "passive": False}) in fake.calls
    assert ("bind", "edge.e1.cmd", "amq.topic", "cmd.e1.#") in fake.calls


def test_confirms_and_nacks_in_any_order_confirm_each_message_once():
    # _confirm finds a multiple confirm's prefix and a single one by
    # bisection: a server answering in any order (acks single and
    # multiple, nacks) leaves every message confirmed once, none behind
    b, up, _ = make(window=8)
    fake = connect(up)
    for i in range(60):
        b.publish("m/%d" % i, b"x", 1)
    out = {}  # tag -> message id, unconfirmed
    top = 1  # (tag 1: "online", not from the outbox: its confirm is not counted)
    x = 7
    while up.q or out:
        for tag in range(top + 1, fake.tag + 1):
            out[tag] = fake.sent[tag - 1][3]
        top = fake.tag
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF  # (a fixed pseudo-random walk)
        tags = sorted(out)
        tag = tags[x % len(tags)]
        kind = (x >> 8) % 4
        if kind == 0:
            up._events([("nack", tag, False)], 0)  # sent again, with a new tag
            del out[tag]
        elif kind == 1:
            up._events([("confirm", tag, True)], 0)
            for t in tags:
                if t <= tag:
                    del out[t]
        else:
            up._events([("confirm", tag, False)], 0)
            del out[tag]
    assert up.confirmed == 60 and up.inflight == 0 and up.bytes == 0
    assert sorted(set(s[3] for s in data(fake))) == sorted("e1:%d" % i for i in range(1, 61))


def test_command_queue_quorum_then_as_it_is_then_classic():
    # RabbitMQ >= 3.8: declared quorum, nothing published before its answer;
    # a 406 (declared otherwise) -> passive at once; a 404 then (it is gone)
    # -> classic durable; an older server -> classic at once
    b, up, logs = make()
    assert up.due(0)
    up.connected(0)
    fake = up.c = FakeAmqp()
    up._events([("ready",)], 0)
    b.publish("m/1", b"1", 1)
    assert fake.calls == [("declare_queue", "edge.e1.cmd", {"arguments": {"x-queue-type": "quorum"}, "passive": False})]
    assert fake.sent == [] and not up.up
    assert up.cmd_decl == "quorum"
    up._events([("channel_closed", 406, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type'")], 0)
    assert fake.calls[-1] == ("close",) and fake.sent == []
    up.lost(10, "closed")
    assert up.cmd_decl == "passive" and up.due(10)  # at once, no back-off
    assert any("not declared as a quorum queue (406 PRECONDITION_FAILED" in m for m in logs)
    up.connected(10)
    fake = up.c = FakeAmqp()
    up._events([("ready",)], 10)
    assert fake.calls == [("declare_queue", "edge.e1.cmd", {"arguments": None, "passive": True})]
    up._events([("channel_closed", 404, "NOT_FOUND - no queue 'edge.e1.cmd'")], 10)
    up.lost(20, "closed")
    assert up.cmd_decl == "classic" and up.due(20)
    up.connected(20)
    fake = up.c = FakeAmqp()
    up._events([("ready",)], 20)
    assert fake.calls == [("declare_queue", "edge.e1.cmd", {"arguments": None, "passive": False})]
    up._events([("declare_ok", "edge.e1.cmd", 0, 0)], 20)
    assert [c[0] for c in fake.calls] == ["declare_queue", "bind", "qos", "consume"]
    assert [s[0] for s in fake.sent] == ["edge.e1.state", "m.1"] and up.up
    # another refusal (no permission, say): logged, the usual back-off
    b2, up2, logs2 = make()
    up2.connected(0)
    up2.c = FakeAmqp()
    up2._events([("ready",)], 0)
    up2._events([("channel_closed", 403, "ACCESS_REFUSED")], 0)
    up2.lost(0, "closed")
    assert up2.cmd_decl == "quorum" and not up2.due(500)
    # an older RabbitMQ: classic at once
    b3, up3, _ = make()
    up3.connected(0)
    fake3 = up3.c = FakeAmqp()
    fake3.server_properties = {"product": "RabbitMQ", "version": "3.7.28"}
    up3._events([("ready",)], 0)
    assert up3.cmd_decl == "classic"


def test_reconnect_resends_unconfirmed_oldest_first_same_ids():
    b, up, logs = make(window=3)
    fake = connect(up)
    for i in range(4):
        b.publish("m", b"%d" % i, 1)
    assert [s[3] for s in data(fake)] == ["e1:1", "e1:2", "e1:3"]
    up._events([("confirm", 3, False)], 0)  # e1:2 confirmed, out of order
    up.lost(100, "connection lost")
    assert up.state == "down" and up.reconnects == 1
    assert "secret" not in logs[-1] and "u:***@rabbit" in logs[-1]
    assert not up.due(100) and up.due(up.retry_at)
    fake2 = connect(up, up.retry_at)
    assert [s[3] for s in data(fake2)] == ["e1:1", "e1:3", "e1:4"]


def test_full_outbox_refuses_the_newest():
    b, up, _ = make(outbox_budget_bytes=1024)
    n = 0
    while up.refused == 0:
        b.publish("m", b"x" * 150, 1)  # 215 B each with the entry: 4 fit
        n += 1
    assert [e[0] for e in up.q] == list(range(1, n))  # the old ones kept, gapless
    assert up.refused == 1
    b.publish("m", b"y", 1)  # small enough: fits again
    assert up.q[-1][2] == b"y" and up.q[-1][0] == n  # no seq lost to the refused one


def test_sys_and_own_commands_not_sent_up_retained_not_replayed():
    b = make_broker()
    b.publish("r/1", b"old", 1, retain=True)
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0)
    assert up.q == []
    fake = connect(up)
    b.publish("cmd/e1/x", b"1", 1)
    b.publish("cmd/e10/x", b"2", 1)  # another edge's: data
    assert [s[0] for s in data(fake)] == ["cmd.e10.x"]
    names = dict(up.sys_values())
    assert names["uplink/state"] == "up" and names["uplink/backlog"] == 1


def test_commands_published_locally_then_acked():
    b, up, _ = make()
    got = []
    lc = b.local_client("t", lambda msg, qos, retain: got.append((msg.topic, msg.payload)))
    b.subscribe(lc, "cmd/#", 1)
    fake = connect(up)
    up._events([("deliver", 7, "cmd.e1.reboot", {}, b"now"),
                ("deliver", 8, "cmd.other.reboot", {}, b"no")], 0)
    assert got == [("cmd/e1/reboot", b"now")]
    assert fake.acked == [7, 8] and up.commands_in == 1


def test_backoff_decorrelated_jitter_capped_and_reset():
    seq = iter([0.0, 1.0 - 1e-9, 0.999, 0.999, 0.999, 0.999, 0.999, 0.5])
    b, up, _ = make(rng=lambda: next(seq))
    up.lost(0, "refused")
    assert up.retry_at == 1000  # rng 0: the base
    sleeps = []
    for _ in range(5):
        t = up.retry_at
        up.lost(t, "refused")
        sleeps.append(up.retry_at - t)
    assert sleeps[0] <= 3000 and sleeps[-1] == 60000 and all(s <= 60000 for s in sleeps)
    t = up.retry_at
    connect(up, t)
    up.lost(t + 5000, "lost")  # up for 5 s only: backing off on
    assert up.sleep == 60000
    connect(up, up.retry_at)
    up.lost(up.retry_at + 60000, "lost")  # held for a minute: from the base again
    assert up.sleep == int(1000 + 0.5 * 2000)


def test_stop_says_offline():
    b, up, _ = make()
    fake = connect(up)
    assert up.stop(0)
    assert fake.sent[-1] == ("edge.e1.state", b"offline", 1, None)
    assert ("close",) in fake.calls
    up.lost(0, "closed")
    assert up.state == "stopped" and not up.due(10 ** 9)


def test_url_parse_and_redact():
    assert url.parse("amqp://u:p%40ss@h/%2f") == ("amqp", "u", "p@ss", "h", 5672, "/")
    assert url.parse("stomp://h") == ("stomp", "guest", "guest", "h", 61613, "/")
    assert url.parse("amqp://u:p@[::1]:5673/v")[3:] == ("::1", 5673, "v")
    assert url.redact("amqp://u:secret@h:5672/") == "amqp://u:***@h:5672/"
    if "upstream" not in config.SCHEMA:
        return  # MicroPython: no [upstream] yet (edge/config.py)
    assert config.load({})["upstream"] == section(url="", edge_id="edge")
    for bad in ("http://h", "amqp://u:secret@h:x/", "amqp://u:secret@/", "h:5672"):
        e = raises(ConfigError, config.load, {"upstream": {"url": bad}})
        assert "upstream.url" in str(e) and "secret" not in str(e)
    raises(ConfigError, config.load, {"upstream": {"edge_id": "a/b"}})


def _outbox(m, budget=65536):
    from edge.store.log import Log
    from edge.store.outbox import Outbox

    log = Log(m, "outbox", "batch", 50, budget)
    log.open(0)
    return Outbox(log)


def test_durable_outbox_survives_a_restart_with_the_same_ids():
    from tests.core._memfiles import MemFiles

    m = MemFiles()
    b = make_broker()
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0, _outbox(m))
    fake = connect(up)
    for i in range(3):
        b.publish("m/%d" % i, b"%d" % i, 1)
    assert [s[3] for s in data(fake)] == ["e1:1", "e1:2", "e1:3"]
    up._events([("confirm", 2, False)], 0)  # e1:1 (the state message took tag 1)
    up.outbox.log.close()  # a stop: the batch flushed
    b2 = make_broker()
    up2 = Uplink(b2, section(), lambda: 0.5, lambda lvl, msg: None, 0, _outbox(m))
    assert [(e[0], e[1], e[2], e[3]) for e in up2.q] == [(2, "m.1", b"1", 1), (3, "m.2", b"2", 1)]
    fake2 = connect(up2)
    b2.publish("m/3", b"3", 0)
    assert [(s[0], s[3]) for s in data(fake2)] == [("m.1", "e1:2"), ("m.2", "e1:3"), ("m.3", "e1:4")]
    assert data(fake2)[-1][2] == 0  # its QoS kept


def test_durable_outbox_full_refuses_the_newest():
    from tests.core._memfiles import MemFiles

    b = make_broker()
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0, _outbox(MemFiles(), 4096))
    n = 0
    while up.refused == 0:
        b.publish("m", b"x" * 300, 1)
        n += 1
    assert [e[0] for e in up.q] == list(range(1, n)) and len(up.outbox) == n - 1


# ---- commands down: persisted, then acked, then published; redeliveries known
def _cmd_setup(m):
    b = make_broker()
    got = []
    lc = b.local_client("t", lambda msg, qos, retain: got.append((msg.topic, bytes(msg.payload))))
    b.subscribe(lc, "cmd/#", 1)
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0, _outbox(m))
    return b, up, got


def _power_cut(m):
    c = m.copy()
    c.power_cut(0)  # what was synced, nothing more
    return c


def test_command_persisted_before_its_ack():
    from tests.core._memfiles import MemFiles

    m = MemFiles()
    b, up, got = _cmd_setup(m)
    fake = connect(up)
    at_ack = []
    fake.ack = lambda tag, multiple=False: at_ack.append((tag, _outbox(_power_cut(m)).commands(), list(got)))
    up._events([("deliver", 7, "cmd.e1.reboot", {"message_id": "c1"}, b"now")], 0)
    # when the ack went out the command was on flash, not yet published
    assert [(a[0], [c[1:] for c in a[1][0]], a[2]) for a in at_ack] == [
        (7, [("c1", "cmd/e1/reboot", b"now")], [])]
    assert got == [("cmd/e1/reboot", b"now")] and up.commands_in == 1
    # then published: a K_SEEN for its id replaces it
    up.outbox.log.flush()
    assert _outbox(_power_cut(m)).commands() == ([], [(2, "c1")])


def test_command_redelivered_after_a_crash_between_persist_and_ack():
    from tests.core._memfiles import MemFiles

    m = MemFiles()
    b, up, got = _cmd_setup(m)
    fake = connect(up)
    cuts = []  # the crash as the ack is queued: it never reaches RabbitMQ
    fake.ack = lambda tag, multiple=False: cuts.append(_power_cut(m))
    up._events([("deliver", 7, "cmd.e1.reboot", {"message_id": "c1"}, b"now")], 0)
    cut = cuts[0]  # before the K_SEEN was synced: the command maybe unpublished
    assert [c[1] for c in _outbox(cut).commands()[0]] == ["c1"]
    # the next start publishes it (at least once, locally), once
    b2, up2, got2 = _cmd_setup(cut)
    assert got2 == [("cmd/e1/reboot", b"now")]
    # RabbitMQ redelivers it: acked, not published again
    fake2 = connect(up2)
    up2._events([("deliver", 1, "cmd.e1.reboot", {"message_id": "c1"}, b"now"),
                 ("deliver", 2, "cmd.e1.reboot", {"message_id": "c2"}, b"next")], 0)
    assert fake2.acked == [1, 2] and up2.cmd_dups == 1
    assert got2 == [("cmd/e1/reboot", b"now"), ("cmd/e1/reboot", b"next")]
    # and a third start remembers both ids, publishes nothing
    up2.outbox.log.flush()
    b3, up3, got3 = _cmd_setup(_power_cut(cut))  # (up2 ran on cut)
    assert got3 == [] and sorted(up3.seen) == ["c1", "c2"]
    fake3 = connect(up3)
    up3._events([("message", "a-1", "/exchange/amq.topic/cmd.e1.reboot",
                  {"amqp-message-id": "c2"}, b"next")], 0)
    assert fake3.acked == ["a-1"] and got3 == [] and up3.cmd_dups == 1


def test_a_command_published_is_not_published_again_after_a_crash():
    # Bug: the K_SEEN that says "published" was synced later, by a tick: a
    # crash after the local deliveries went out (when feed() returned) but
    # before that sync published the command again at the next start. Now
    # it is synced before _events returns, and with it the store's records.
    from tests.core._memfiles import MemFiles

    m = MemFiles()
    b, up, got = _cmd_setup(m)
    connect(up)
    up._events([("deliver", 7, "cmd.e1.reboot", {"message_id": "c1"}, b"now")], 0)
    assert got == [("cmd/e1/reboot", b"now")]
    cut = _power_cut(m)  # the crash right after the deliveries and the ack went out
    assert _outbox(cut).commands() == ([], [(2, "c1")])
    b2, up2, got2 = _cmd_setup(cut)
    assert got2 == [] and "c1" in up2.seen  # not published twice


def _fill(b, up):
    # up to the last byte: a command of a few bytes fits nowhere
    for n in (300, 1):
        r = up.refused
        while up.refused == r:
            b.publish("m", b"x" * n, 1)


def test_a_full_outbox_holds_a_command_unacked_until_there_is_room():
    # Bug: a full outbox published the command unpersisted and acked it.
    # Now it stays RabbitMQ's (not acked), counted, tried again at each
    # tick in order; once confirms made room it is persisted, acked,
    # published.
    from tests.core._memfiles import MemFiles

    b = make_broker()
    got = []
    lc = b.local_client("t", lambda msg, qos, retain: got.append(bytes(msg.payload)))
    b.subscribe(lc, "cmd/#", 1)
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0, _outbox(MemFiles(), 4096))
    fake = connect(up)
    _fill(b, up)  # the outbox full of unconfirmed messages
    up._events([("deliver", 1, "cmd.e1.a", {"message_id": "c1"}, b"1"),
                ("deliver", 2, "cmd.e1.b", {"message_id": "c2"}, b"2")], 0)
    assert got == [] and fake.acked == [] and up.cmd_deferred == 2
    assert dict(up.sys_values())["uplink/commands/deferred"] == 2
    up.tick(250)
    assert got == [] and fake.acked == []  # still full
    up._events([("confirm", fake.tag, True)], 300)  # RabbitMQ confirmed the backlog
    up.outbox.log.flush()  # (the tombstones written: room)
    up.tick(500)
    assert fake.acked == [1, 2] and got == [b"1", b"2"] and up.cmd_deferred == 2
    assert up.outbox.commands()[1][-2:] == [(up.outbox.commands()[1][-2][0], "c1"),
                                            (up.outbox.commands()[1][-1][0], "c2")]


def test_a_held_command_is_dropped_with_its_connection():
    # held, then the link drops: not acked, so RabbitMQ redelivers it; the
    # next connection's copy is the one published
    from tests.core._memfiles import MemFiles

    b = make_broker()
    up = Uplink(b, section(), lambda: 0.5, lambda lvl, msg: None, 0, _outbox(MemFiles(), 4096))
    fake = connect(up)
    _fill(b, up)
    up._events([("deliver", 1, "cmd.e1.a", {"message_id": "c1"}, b"1")], 0)
    up.lost(10, "gone")
    assert up.cmd_held == [] and fake.acked == []


def test_seen_command_ids_are_bounded():
    from tests.core._memfiles import MemFiles
    from edge.bridge import commands

    keep = commands._SEEN_MAX
    commands._SEEN_MAX = 8  # (a small heap under MicroPython: the rule, not the size)
    try:
        m = MemFiles()
        b, up, got = _cmd_setup(m)
        fake = connect(up)
        n = 12
        for i in range(n):
            up._events([("deliver", i + 1, "cmd.e1.x", {"message_id": "c%d" % i}, b"")], 0)
        assert len(up.seen) == 8 == len(up.seen_q) and "c3" not in up.seen and "c4" in up.seen
        up.outbox.log.flush()
        assert len(_outbox(_power_cut(m)).commands()[1]) == 8
        assert len(got) == n and fake.acked == list(range(1, n + 1))
    finally:
        commands._SEEN_MAX = keep


def test_a_cluster_list_is_tried_in_turn():
    b, up, logs = make(url="amqp://u:secret@n1:5672/, stomp://u:secret@n2 amqp://n3:5673")
    assert [(n[0][0], n[0][3], n[0][4]) for n in up.nodes] == [
        ("amqp", "n1", 5672), ("stomp", "n2", 61613), ("amqp", "n3", 5673)]
    assert (up.scheme, up.host) == ("amqp", "n1")
    up.lost(0, "refused")
    assert (up.scheme, up.host, up.port) == ("stomp", "n2", 61613)
    assert "n1" in logs[-1] and "at stomp://u:***@n2" in logs[-1] and "secret" not in logs[-1]
    up.lost(up.retry_at, "refused")
    up.lost(up.retry_at, "refused")
    assert up.host == "n1"  # round again
    assert url.split("a://x,b://y  c://z") == ["a://x", "b://y", "c://z"]
    if "upstream" not in config.SCHEMA:
        return
    e = raises(ConfigError, config.load, {"upstream": {"url": "amqp://h, amqp://u:secret@h:x"}})
    assert "URL 2 of 2" in str(e) and "secret" not in str(e)
