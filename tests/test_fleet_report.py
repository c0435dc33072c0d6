# The fleet report's definitions (docs/fleet.md "What counts as lost"),
# on hand-made ledgers: no sockets, no broker.
from gateway.fleet import report
from gateway.fleet.ledger import ConnRecord, Ledger


class _Checker:
    def __init__(self, readings=(), wills=()):
        self.readings = list(readings)  # (t, sid, qos, seq, latency)
        self.wills = list(wills)  # (t, sid, n)
        self.heap, self.rss, self.strays, self.reconnects = [], [], 0, 0
        self.lost_link = None
        self.sys = {}


def _conn(n, t_connect, accepted=True, clean_end=False, t_closed=None):
    c = ConnRecord()
    c.will_no, c.t_connect, c.accepted, c.clean_end, c.t_closed = n, t_connect, accepted, clean_end, t_closed
    return c


def _led(sid, qos, generated, acked, dropped=()):
    led = Ledger(sid, qos, False, "sim")
    led.generated = set(generated)
    led.acked = set(acked)
    led.dropped = set(dropped)
    return led


def test_lost_is_acknowledged_and_never_delivered():
    leds = [_led("a", 1, range(1, 6), {1, 2, 3}, dropped={5}), _led("b", 0, range(1, 4), {1, 2, 3})]
    # a: 4 unacknowledged (not owed), 5 dropped from the buffer (not the
    # broker's), 3 acknowledged and missing: lost. b: QoS 0 may be lost.
    chk = _Checker([(1, "a", 1, 1, 5), (1, "a", 1, 2, 5), (2, "a", 1, 2, 9), (1, "b", 0, 1, 3)])
    r = report.compute(leds, chk, [], {})
    q1, q0 = r["qos"]["1"], r["qos"]["0"]
    assert (q1["lost"], q1["duplicated"], q1["unconfirmed"], q1["dropped_offline"]) == (1, 1, 1, 1)
    assert q0["lost"] == 2 and not r["ok"]
    assert any("QoS 1: 1 acknowledged" in v for v in r["violations"])
    assert not any("QoS 0" in v for v in r["violations"])  # QoS 0 may be lost
    assert report.outstanding(leds, chk) == 1


def test_qos2_duplicate_is_a_violation_qos1_is_not():
    leds = [_led("a", 2, [1], [1]), _led("b", 1, [1], [1])]
    chk = _Checker([(1, "a", 2, 1, 1), (2, "a", 2, 1, 1), (1, "b", 1, 1, 1), (2, "b", 1, 1, 1)])
    r = report.compute(leds, chk, [], {})
    assert r["qos"]["2"]["duplicated"] == 1 and r["qos"]["1"]["duplicated"] == 1
    assert r["violations"] == ["QoS 2: 1 messages delivered more than once"]


def test_wills_due_optional_forbidden():
    led = _led("a", 1, [], [])
    led.conns = [
        _conn(1, 1.0, t_closed=2.0),  # closed, next connect 1 s later: due
        _conn(2, 3.0, t_closed=5.1),  # still open at the next CONNECT: takeover race, optional
        _conn(3, 5.0, accepted=False, t_closed=5.5),  # no CONNACK seen: optional
        _conn(4, 6.0, clean_end=True, t_closed=9.0),  # DISCONNECT: forbidden
        _conn(None, None),  # accepted into a black hole: never reached the broker
    ]
    due, optional, forbidden = report.wills_due(led)
    assert (due, optional, forbidden) == ({1}, {2, 3}, {4})
    ok = report.compute([led], _Checker(wills=[(2, "a", 1), (5, "a", 2)]), [], {})
    assert ok["ok"] and ok["wills"]["fired_due"] == 1
    bad = report.compute([led], _Checker(wills=[(9, "a", 4), (10, "a", 4)]), [], {})
    w = bad["wills"]
    assert (w["missing"], w["unexpected"], w["repeated"]) == (1, 1, 1) and not bad["ok"]


def test_last_connection_of_a_killed_sensor_owes_its_will():
    led = _led("a", 0, [], [])
    led.killed = True
    led.conns = [_conn(1, 1.0, t_closed=4.0)]
    assert report.wills_due(led)[0] == {1}


def test_a_sensor_that_died_on_its_own_fails_the_run():
    led = _led("a", 1, [1], [1])
    led.exit_note = "exit 1: MemoryError: memory allocation failed"
    r = report.compute([led], _Checker([(1, "a", 1, 1, 1)]), [], {})
    assert r["violations"] == ["sensor a: exit 1: MemoryError: memory allocation failed"]
    led.killed, led.exit_note = True, "killed mid-publish (SIGKILL)"
    assert report.compute([led], _Checker([(1, "a", 1, 1, 1)]), [], {})["ok"]


def test_coap_devices_counted_like_mqtt_sensors_and_owe_no_wills():
    # a CoAP device's 2.04 is its acknowledgement: one answered and never
    # delivered is lost; it has no connection, so no will is due or allowed
    dev = Ledger("c", 1, False, "coap")
    dev.generated, dev.acked = {1, 2, 3}, {1, 2}
    dev.commands = {"c1", "c2"}
    dev.t_observing = 0.5
    dup = Ledger("d", 2, False, "coap")
    dup.generated, dup.acked = {1}, {1}
    mqtt = _led("m", 1, [1], [1])
    chk = _Checker([(1, "c", 1, 1, 4), (1, "d", 2, 1, 3), (2, "d", 2, 1, 3), (1, "m", 1, 1, 2)])
    r = report.compute([dev, dup, mqtt], chk, [], {}, commands={"c": {"c1", "c2", "c3"}})
    c = r["coap"]
    assert c["devices"] == 2 and c["observing"] == 1
    assert (c["qos"]["1"]["acked"], c["qos"]["1"]["lost"]) == (2, 1)
    assert c["qos"]["2"]["duplicated"] == 1
    assert r["qos"]["1"]["lost"] == 1 and r["qos"]["1"]["acked"] == 3  # the QoS table holds both kinds
    assert "QoS 1: 1 acknowledged messages never delivered" in r["violations"]
    assert "QoS 2: 1 messages delivered more than once" in r["violations"]
    assert c["commands"] == {"published": 3, "received": 2}
    assert r["wills"]["due"] == 0 and r["wills"]["unexpected"] == 0
    assert report.compute([mqtt], chk, [], {})["coap"] is None
    assert c["firmware"] == {"devices": 0, "acked": 0, "delivered": 0}
    assert "CoAP devices (in the table above): 2 (0 firmware/coap_sensor/ on MicroPython: 0 readings answered " \
           "2.04, 0 of them delivered), 1 observing" in report.text(
        dict(r, meta={"sensors": 3, "mpy": 0, "coap": 2, "seconds": 1, "chaos": "none", "seed": 1,
                      "broker": "x"}))
