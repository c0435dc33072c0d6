# Aggregation (median of the runs, ratios within the same run), the printed
# tables and the PNG chart.
import statistics

BASE = "edgebroker"        # ratios are BASE / other, each from the same run
LOADGEN_BOUND_PCT = 90.0   # a figure is flagged when the generator was this busy
_INTEGRITY = ("lost", "duplicated", "reordered", "corrupt", "unexpected", "bad_acks", "unacked")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(rows, scenarios, brokers):
    """rows: one dict per (run, scenario, broker). Returns the summary dict."""
    summary, ratios, cpu, integrity = {}, {}, {}, {}
    for sc in scenarios:
        mine = [r for r in rows if r["scenario"] == sc.name]
        summary[sc.name], ratios[sc.name], cpu[sc.name], integrity[sc.name] = {}, {}, {}, {}
        for key, _, _ in sc.metrics:
            per = summary[sc.name][key] = {}
            for b in brokers:
                vals = [r.get(key) for r in mine if r["broker"] == b and not r.get("error")]
                vals = [v for v in vals if v is not None]
                if vals:
                    per[b] = {"median": _median(vals), "min": min(vals), "max": max(vals),
                              "n": len(vals)}
            rat = ratios[sc.name][key] = {}
            for b in brokers:
                if b in (BASE, "direct"):
                    continue
                within = []
                for run in sorted({r["run"] for r in mine}):
                    a = _value(mine, run, BASE, key)
                    o = _value(mine, run, b, key)
                    if a is not None and o:
                        within.append(a / o)
                if within:
                    rat[b] = {"median": round(_median(within), 3), "n": len(within)}
        for b in brokers:
            got = [r for r in mine if r["broker"] == b]
            if not got:
                continue
            cpu[sc.name][b] = {
                "broker_pct": _median([r.get("cpu_broker_pct") for r in got]),
                "loadgen_pct": _median([r.get("cpu_loadgen_pct") for r in got]),
            }
            integ = {k: sum(r.get(k) or 0 for r in got) for k in _INTEGRITY}
            integ["errors"] = [r["error"] for r in got if r.get("error")]
            integrity[sc.name][b] = integ
    return {"medians": summary, "ratios": ratios, "cpu": cpu, "integrity": integrity}


def _value(rows, run, broker, key):
    for r in rows:
        if r["run"] == run and r["broker"] == broker and not r.get("error"):
            return r.get(key)
    return None


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return "%.2fM" % (v / 1e6)
    if a >= 1e4:
        return "%.0fk" % (v / 1e3)
    if a >= 1e3:
        return "%.1fk" % (v / 1e3)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    return "%.2f" % v


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(doc):
    """The text report: medians, ratios, CPU, integrity."""
    s = doc["summary"]
    brokers = [b for b in doc["brokers"]]
    others = [b for b in brokers if b not in (BASE, "direct")]
    header = ["scenario", "metric"] + brokers + ["%s/%s" % (_short(BASE), _short(o)) for o in others]
    rows = []
    bound = False
    for name, sc in doc["scenarios"].items():
        for m in sc["metrics"]:
            key = m["key"]
            row = [name, "%s %s, %s" % (key, m["unit"], "higher better" if m["higher_is_better"] else "lower better")]
            for b in brokers:
                cell = s["medians"][name][key].get(b)
                txt = fmt(cell["median"]) if cell else "-"
                c = s["cpu"][name].get(b) or {}
                if cell and (c.get("loadgen_pct") or 0) >= LOADGEN_BOUND_PCT and b != "direct":
                    txt += "*"
                    bound = True
                if cell and _dirty(s["integrity"][name].get(b)):
                    txt += "!"
                row.append(txt)
            for o in others:
                r = s["ratios"][name][key].get(o)
                row.append("%.2f" % r["median"] if r else "-")
            rows.append(row)
    out = ["Medians of %d run(s); ratios = %s / other, median of the ratios within each run."
           % (doc["meta"]["runs"], BASE), _table(header, rows)]
    notes = []
    if bound:
        notes.append("* load generator at >= %d%% of a core: the broker figure is a lower bound"
                     % LOADGEN_BOUND_PCT)
    if any(_dirty(v) for sc in s["integrity"].values() for v in sc.values()):
        notes.append("! lost, duplicated, reordered or corrupt messages, or errors: see below")
    out += notes
    # CPU
    crow = []
    for name in doc["scenarios"]:
        row = [name]
        for b in brokers:
            c = s["cpu"][name].get(b)
            if not c or (c["broker_pct"] is None and c["loadgen_pct"] is None):
                row.append("-")
            else:
                row.append("%s/%s" % (_pct(c["broker_pct"]), _pct(c["loadgen_pct"])))
        crow.append(row)
    out += ["", "CPU, % of one core, broker/load generator (median; from /proc):",
            _table(["scenario"] + brokers, crow)]
    # integrity
    issues = []
    total = 0
    for name, per in s["integrity"].items():
        for b, integ in per.items():
            total += 1
            if _dirty(integ):
                parts = ["%s %d" % (k, integ[k]) for k in _INTEGRITY if integ[k]]
                parts += ["error: %s" % e.splitlines()[0] for e in integ["errors"]]
                issues.append("  %s / %s: %s" % (name, b, ", ".join(parts)))
    out.append("")
    if issues:
        out.append("Integrity (sums over runs):")
        out += issues
    else:
        out.append("Integrity: every message verified by sequence number; no loss, duplicate, "
                   "reorder or error in %d scenario/broker pairs." % total)
    if doc.get("skipped"):
        out.append("Skipped: " + "; ".join("%s (%s)" % kv for kv in doc["skipped"].items()))
    return "\n".join(out)


def _short(b):
    return {"edgebroker": "edge", "edgebroker-mpy": "mpy", "mosquitto": "mosq"}.get(b, b)


def _pct(v):
    return "-" if v is None else "%.0f" % v


def _dirty(integ):
    return bool(integ) and (any(integ[k] for k in _INTEGRITY) or bool(integ["errors"]))


def chart(doc, path):
    """One panel per scenario metric, a bar per broker (median, min-max whiskers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt

    s = doc["summary"]["medians"]
    panels = [(name, m) for name, sc in doc["scenarios"].items() for m in sc["metrics"]
              if s[name][m["key"]]]
    if not panels:
        return None
    brokers = list(doc["brokers"])
    colors = dict(zip(brokers, ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#7f7f7f"]))
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, panels):
        cells = s[name][m["key"]]
        names = [b for b in brokers if b in cells and b != "direct"]
        med = [cells[b]["median"] for b in names]
        err = [[cells[b]["median"] - cells[b]["min"] for b in names],
               [cells[b]["max"] - cells[b]["median"] for b in names]]
        ax.bar(range(len(names)), med, yerr=err, capsize=3,
               color=[colors[b] for b in names])
        top = max(med + [0]) * 1.25 or 1
        ceiling = cells.get("direct")
        if ceiling:  # the generator's own ceiling: a line, clipped when far above
            c = ceiling["median"]
            if c <= top:
                ax.axhline(c, color="#7f7f7f", ls="--", lw=1)
                ax.text(len(names) - 0.5, c, "load generator ceiling %s" % fmt(c),
                        ha="right", va="bottom", fontsize=7, color="#555555")
            else:
                ax.text(len(names) - 0.5, top * 0.98, "load generator ceiling %s (off scale)"
                        % fmt(c), ha="right", va="top", fontsize=7, color="#555555")
        ax.set_ylim(0, top)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v)))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_short(b) for b in names], fontsize=8)
        ax.set_title("%s\n%s" % (doc["scenarios"][name]["title"], m["key"]), fontsize=9)
        ax.set_ylabel("%s (%s)" % (m["unit"], "higher better" if m["higher_is_better"] else "lower better"),
                      fontsize=8)
        for i, b in enumerate(names):  # above the whisker
            ax.annotate(fmt(med[i]), (i, cells[b]["max"]), ha="center", va="bottom", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("edgebroker benchmark: medians of %d run(s)%s" % (
        doc["meta"]["runs"], " (quick)" if doc["meta"]["quick"] else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
