# The fleet plot: delivery latency of every reading over the run, the faults
# marked, and the broker's memory below. A PNG through matplotlib when the venv
# has it (`pip install -e '.[bench]'`), else an SVG written here: the report
# never needs a plotting library.
import math

QOS_COLOURS = ("#7f7f7f", "#1f77b4", "#d62728")
FAULT_COLOURS = {"reset": "#ff7f0e", "hole": "#9467bd", "flap": "#8c564b", "kill": "#000000"}


def write(path, readings, events, memory, title):
    """readings: [(t, sid, qos, seq, latency ms)]; events: [(t, sid, kind)];
    memory: (label, [(t, bytes)]). Returns the path written (.png or .svg)."""
    if path.endswith(".png"):
        try:
            import matplotlib
        except ImportError:
            path = path[:-4] + ".svg"
        else:
            matplotlib.use("Agg")
            return _png(path, readings, events, memory, title)
    return _svg(path, readings, events, memory, title)


def _png(path, readings, events, memory, title):
    import matplotlib.pyplot as plt

    fig, (ax, mx) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    for q in (0, 1, 2):
        pts = [(t, max(lat, 0.1)) for t, _, qos, _, lat in readings if qos == q]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, c=QOS_COLOURS[q], label="QoS %d" % q)
    ax.set_yscale("log")
    ax.set_ylabel("delivery latency (ms)")
    seen = set()
    for t, _, kind in events:
        ax.axvline(t, color=FAULT_COLOURS.get(kind, "#999"), alpha=0.35, lw=0.8,
                   label=kind if kind not in seen else None)
        seen.add(kind)
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    label, series = memory
    if series:
        mx.plot([t for t, _ in series], [v / 1024.0 for _, v in series], color="#2ca02c")
    mx.set_ylabel(label + " (KiB)")
    mx.set_xlabel("run time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _svg(path, readings, events, memory, title):
    W, H, L, R, T, MID, B = 900, 520, 70, 20, 30, 360, 480
    tmax = max([r[0] for r in readings] + [e[0] for e in events] + [1.0])
    lats = [max(r[4], 1) for r in readings] or [1]
    lo, hi = 0.0, math.log10(max(lats) * 1.5)

    def x(t):
        return L + (W - L - R) * t / tmax

    def y(ms):
        return MID - (MID - T) * (math.log10(max(ms, 1)) - lo) / max(hi - lo, 1e-9)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11"><rect width="100%%" height="100%%" fill="white"/>' % (W, H),
           '<text x="%d" y="18">%s</text>' % (L, _esc(title))]
    for t, _, kind in events:
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-opacity="0.4"/>'
                   % (x(t), x(t), T, MID, FAULT_COLOURS.get(kind, "#999")))
    for t, _, q, _, lat in readings:
        out.append('<circle cx="%.1f" cy="%.1f" r="1.5" fill="%s"/>' % (x(t), y(lat), QOS_COLOURS[q]))
    d = 0
    while d <= hi:  # decades on the log axis
        out.append('<text x="%d" y="%.1f" text-anchor="end">%d ms</text>' % (L - 4, y(10 ** d) + 4, 10 ** d))
        d += 1
    out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>' % (L, W - R, MID, MID))
    label, series = memory
    if series:
        vmin = min(v for _, v in series)
        vmax = max(v for _, v in series)
        span = max(vmax - vmin, 1)
        pts = " ".join("%.1f,%.1f" % (x(t), B - (B - MID - 30) * (v - vmin) / span) for t, v in series)
        out.append('<polyline points="%s" fill="none" stroke="#2ca02c"/>' % pts)
        out.append('<text x="%d" y="%d">%s: %.1f .. %.1f KiB</text>' % (
            L, MID + 16, label, vmin / 1024.0, vmax / 1024.0))
    out.append('<text x="%d" y="%d">run time (s), 0 .. %.0f</text>' % (L, H - 20, tmax))
    lx = L + 250
    for i, (name, colour) in enumerate([("QoS %d" % q, QOS_COLOURS[q]) for q in (0, 1, 2)]
                                       + sorted(FAULT_COLOURS.items())):
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>'
                   % (lx + 80 * i, H - 29, colour, lx + 80 * i + 13, H - 20, name))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
    return path


def _esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;")
