# The fleet report: what each QoS delivered, lost and duplicated, wills fired
# against those due, latency, broker memory; and the verdict
# (docs/fleet.md "What counts as lost" defines every figure).

# A will is due for a connection the broker accepted and that ended without
# DISCONNECT, unless the sensor's next connection reached the broker before
# this one's close could have: then the broker may have seen a takeover,
# which for a continuing session publishes no will ([MQTT-3.1.3-9] and
# edge/mqtt/connect.py). The close must come this much earlier to count.
TAKEOVER_MARGIN_S = 0.4


def _pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def wills_due(led):
    """(due, optional, forbidden): sets of connection numbers for one sensor."""
    due, optional, forbidden = set(), set(), set()
    conns = [c for c in led.conns if c.t_connect is not None and c.will_no is not None]
    for i, c in enumerate(conns):
        nxt = conns[i + 1] if i + 1 < len(conns) else None
        if c.clean_end:
            forbidden.add(c.will_no)
        elif not c.accepted:
            optional.add(c.will_no)  # the CONNACK may have been on its way
        elif nxt is None or (c.t_closed is not None and c.t_closed < nxt.t_connect - TAKEOVER_MARGIN_S):
            due.add(c.will_no)
        else:
            optional.add(c.will_no)
    return due, optional, forbidden


def outstanding(ledgers, checker):
    """Acknowledged QoS 1/2 readings and due wills the checker has not seen yet."""
    got = set((sid, seq) for _, sid, _, seq, _ in checker.readings)
    wills = set((sid, n) for _, sid, n in checker.wills)
    n = 0
    for led in ledgers:
        if led.qos:
            n += sum(1 for q in led.acked if (led.sid, q) not in got)
        n += sum(1 for w in wills_due(led)[0] if (led.sid, w) not in wills)
    return n


def _tally(ledgers, seen, latencies, violations, lost_examples):
    """Per QoS: what the sensors generated and had acknowledged, against
    what the checker received."""
    per_qos = {q: {"sensors": 0, "generated": 0, "acked": 0, "delivered": 0, "lost": 0,
                   "duplicated": 0, "dropped_offline": 0, "unconfirmed": 0,
                   "unconfirmed_delivered": 0, "latency_ms": []} for q in (0, 1, 2)}
    for led in ledgers:
        s = per_qos[led.qos]
        got = seen.get(led.sid, {})
        s["sensors"] += 1
        s["generated"] += len(led.generated)
        s["acked"] += len(led.acked)
        s["dropped_offline"] += len(led.dropped)
        unconf = led.generated - led.acked - led.dropped
        s["unconfirmed"] += len(unconf)
        s["unconfirmed_delivered"] += sum(1 for q in unconf if q in got)
        lost = sorted(q for q in led.acked if q not in got)
        s["lost"] += len(lost)
        if lost and led.qos:  # QoS 0 may be lost
            lost_examples.append("%s QoS %d seqs %s" % (led.sid, led.qos, lost[:10]))
        s["delivered"] += sum(1 for q in got if q in led.generated)
        s["duplicated"] += sum(n - 1 for n in got.values() if n > 1)
        s["latency_ms"].extend(latencies[(led.sid, q)] for q in got)
    for q, s in per_qos.items():
        lat = sorted(s.pop("latency_ms"))
        s["latency_p50_ms"] = _pct(lat, 50)
        s["latency_p99_ms"] = _pct(lat, 99)
        s["latency_max_ms"] = lat[-1] if lat else None
        if q and s["lost"]:
            violations.append("QoS %d: %d acknowledged messages never delivered" % (q, s["lost"]))
        if q == 2 and s["duplicated"]:
            violations.append("QoS 2: %d messages delivered more than once" % s["duplicated"])
    return per_qos


def _coap(ledgers, seen, latencies, commands, links):
    """The CoAP devices' own figures (their readings are in the QoS table
    too): per QoS, the commands published to cmd/<id>/# while they observed
    it and those notified, and the datagrams their links passed and lost."""
    cl = [led for led in ledgers if led.kind.startswith("coap")]
    if not cl:
        return None
    fw = [led for led in cl if led.kind == "coap-mpy"]
    live = [led for led in cl if not led.killed]
    sent = sum(len(commands.get(led.sid, ())) for led in live)
    got = sum(len(led.commands & commands.get(led.sid, set())) for led in live)
    lk = [links[led.sid] for led in cl if led.sid in links]
    return {"devices": len(cl), "firmware": {"devices": len(fw), "acked": sum(len(led.acked) for led in fw),
                                             "delivered": sum(len(led.acked & set(seen.get(led.sid, ())))
                                                              for led in fw)},
            "qos": {str(q): s for q, s in _tally(cl, seen, latencies, [], []).items()},
            "refused": sum(led.refused for led in cl),
            "observing": sum(1 for led in cl if led.t_observing is not None),
            "commands": {"published": sent, "received": got},
            "datagrams": {"passed": sum(x.passed for x in lk), "lost": sum(x.lost for x in lk)}}


def compute(ledgers, checker, events, meta, commands=None, links=None):
    seen = {}  # sid -> {seq: copies}
    latencies = {}  # (sid, seq) -> first latency
    for _, sid, qos, seq, lat in checker.readings:
        d = seen.setdefault(sid, {})
        d[seq] = d.get(seq, 0) + 1
        if (sid, seq) not in latencies:
            latencies[(sid, seq)] = lat
    violations = []
    lost_examples = []
    per_qos = _tally(ledgers, seen, latencies, violations, lost_examples)
    violations += ["lost: " + x for x in lost_examples[:5]]
    # a sensor that died on its own (a firmware MemoryError, a crash) is
    # under test too: its heap must hold
    violations += ["sensor %s: %s" % (led.sid, led.exit_note) for led in ledgers
                   if led.exit_note and not led.killed]
    wills = _wills(ledgers, checker, violations)
    if checker.lost_link:
        violations.append(checker.lost_link)
    heap = [v for _, v in checker.heap]
    rss = [v for _, v in checker.rss]
    kinds = {}
    for _, _, k in events:
        kinds[k] = kinds.get(k, 0) + 1
    return {
        "meta": meta,
        "qos": {str(q): s for q, s in per_qos.items()},
        "coap": _coap(ledgers, seen, latencies, commands or {}, links or {}),
        "wills": wills,
        "faults": kinds,
        "broker_memory": {
            "heap_bytes": {"first": heap[0], "max": max(heap), "last": heap[-1]} if heap else None,
            "rss_bytes": {"first": rss[0], "max": max(rss), "last": rss[-1]} if rss else None,
            "heap_series": checker.heap, "rss_series": checker.rss,
        },
        "sensors": {
            "killed": sorted(led.sid for led in ledgers if led.killed),
            "ended_clean": sum(1 for led in ledgers if led.ended_clean),
            "connects": sum(led.connects for led in ledgers),
            "problems": {led.sid: led.exit_note for led in ledgers if led.exit_note and not led.killed},
        },
        "stray_messages": checker.strays,
        "checker_reconnects": checker.reconnects,
        "broker_sys": checker.sys or {},
        "events": events,
        "violations": violations,
        "ok": not violations,
    }


def _wills(ledgers, checker, violations):
    fired = {}
    for _, sid, n in checker.wills:
        fired.setdefault(sid, []).append(n)
    out = {"due": 0, "optional": 0, "fired": len(checker.wills), "fired_due": 0,
           "missing": 0, "unexpected": 0, "repeated": 0}
    problems = []
    for led in ledgers:
        due, optional, forbidden = wills_due(led)
        got = fired.get(led.sid, [])
        out["due"] += len(due)
        out["optional"] += len(optional)
        missing = sorted(due - set(got))
        out["missing"] += len(missing)
        out["fired_due"] += len(due & set(got))
        bad = sorted(n for n in set(got) if n in forbidden or n not in due | optional)
        out["unexpected"] += len(bad)
        rep = len(got) - len(set(got))
        out["repeated"] += rep
        if missing or bad or rep:
            problems.append("%s: missing %s, unexpected %s, repeated %d" % (led.sid, missing, bad, rep))
            out.setdefault("detail", {})[led.sid] = {
                "fired": sorted((t, n) for t, s, n in checker.wills if s == led.sid),
                "connections": [(c.will_no, c.t_connect, c.accepted, c.clean_end, c.t_closed)
                                for c in led.conns]}
    if out["missing"]:
        violations.append("wills: %d due and never published" % out["missing"])
    if out["unexpected"] or out["repeated"]:
        violations.append("wills: %d published for a clean or unknown connection, %d twice"
                          % (out["unexpected"], out["repeated"]))
    violations += ["will: " + p for p in problems[:5]]
    return out


_SYS_SHOWN = ("messages/received", "messages/sent", "publish/messages/dropped", "budget/dropped",
              "budget/refused", "clients/refused", "clients/maximum", "store/refused")


def _ms(v):
    return "-" if v is None else "%d ms" % v


def text(r):
    m = r["meta"]
    lines = [
        "edgebroker fleet: %d sensors (%d firmware on MicroPython, %d simulated%s) for %d s, "
        "chaos %s, seed %d, broker %s" % (m["sensors"], m["mpy"], m["sensors"] - m["mpy"] - m.get("coap", 0),
                                          ", %d CoAP (%d firmware)" % (m["coap"], m.get("coap_mpy", 0))
                                          if m.get("coap") else "",
                                          m["seconds"], m["chaos"], m["seed"], m["broker"]),
        "",
        "QoS  sensors  generated  acked  delivered  lost  dup  dropped  unconfirmed(delivered)  p50      p99",
    ]
    for q in ("0", "1", "2"):
        s = r["qos"][q]
        lines.append("%-4s %7d %10d %6d %10d %5d %4d %8d %12d(%d)  %8s %8s" % (
            q, s["sensors"], s["generated"], s["acked"], s["delivered"], s["lost"], s["duplicated"],
            s["dropped_offline"], s["unconfirmed"], s["unconfirmed_delivered"],
            _ms(s["latency_p50_ms"]), _ms(s["latency_p99_ms"])))
    c = r.get("coap")
    if c:
        lines += ["", "CoAP devices (in the table above): %d (%d firmware/coap_sensor/ on MicroPython: %d "
                  "readings answered 2.04, %d of them delivered), %d observing cmd/<id>/#; %d readings answered "
                  "4.xx/5.xx" % (c["devices"], c["firmware"]["devices"], c["firmware"]["acked"],
                                 c["firmware"]["delivered"], c["observing"], c["refused"])]
        for q in ("0", "1", "2"):
            s = c["qos"][q]
            lines.append("  QoS %s: %d generated, %d answered 2.04, %d delivered, %d lost, %d dup, "
                         "p99 %s" % (q, s["generated"], s["acked"], s["delivered"], s["lost"],
                                     s["duplicated"], _ms(s["latency_p99_ms"])))
        lines.append("  commands: %d published while observing, %d notified; datagrams: %d passed, "
                     "%d lost by the links" % (c["commands"]["published"], c["commands"]["received"],
                                                c["datagrams"]["passed"], c["datagrams"]["lost"]))
    w = r["wills"]
    lines += ["", "wills: %d due, %d fired of them, %d missing; %d optional (takeover race); "
              "%d fired in all, %d unexpected, %d repeated" % (
                  w["due"], w["fired_due"], w["missing"], w["optional"], w["fired"],
                  w["unexpected"], w["repeated"])]
    f = r["faults"]
    lines.append("faults: " + (", ".join("%s %d" % kv for kv in sorted(f.items())) or "none"))
    s = r["sensors"]
    lines.append("sensors: %d connections, %d ended with DISCONNECT, killed: %s" % (
        s["connects"], s["ended_clean"], ", ".join(s["killed"]) or "none"))
    for sid, note in sorted(s["problems"].items()):
        lines.append("  %s: %s" % (sid, note))
    if r["checker_reconnects"]:
        lines.append("checker: its link was closed %d times by the broker (persistent session: "
                     "nothing lost meanwhile)" % r["checker_reconnects"])
    mem = r["broker_memory"]
    for key, label in (("heap_bytes", "broker heap"), ("rss_bytes", "broker RSS")):
        v = mem[key]
        if v:
            lines.append("%s: %.1f KiB at start, %.1f KiB max, %.1f KiB at end" % (
                label, v["first"] / 1024.0, v["max"] / 1024.0, v["last"] / 1024.0))
    sys_ = r["broker_sys"]
    if sys_:
        lines.append("broker $SYS at the end: " + ", ".join(
            "%s %s" % (k, sys_[k]) for k in _SYS_SHOWN if k in sys_))
    lines.append("")
    if r["ok"]:
        lines.append("OK: no QoS 1/2 message lost, no QoS 2 duplicate, every due will published")
    else:
        lines.append("FAILED:")
        lines += ["  " + v for v in r["violations"]]
    return "\n".join(lines)
