# Runs the scenarios against each broker: a fresh broker process for every
# (run, scenario, broker), brokers in alternating order from one run to the
# next, every scenario bounded in time, every broker stopped by PID.
import asyncio
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from tools.bench import report, scenarios
from tools.bench.brokers import LAUNCHERS, MOSQUITTO, REPO

SCENARIO_SLACK = 60.0  # seconds a scenario may take beyond its duration


def loop_runner():
    """(run, name) for the load generator's event loop: uvloop when installed
    (the bench extra brings it), so the load generator is not what bounds a
    connect storm; else asyncio. The brokers under test choose their own loop
    (EdgeCPython: --edge-loop, asyncio by default)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run, "asyncio"
    return uvloop.run, "uvloop"


def _raise_nofile(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _run_one(launcher, sc, params, workdir):
    t0 = time.monotonic()
    try:
        running = launcher.start(workdir)
    except (RuntimeError, OSError) as e:
        return {"error": "start failed: %s" % e}
    try:
        timeout = params.get("duration", 10.0) + SCENARIO_SLACK
        res = loop_runner()[0](asyncio.wait_for(scenarios.run(sc, running, params), timeout))
        res["error"] = None
    except Exception as e:  # one failed scenario must not stop the benchmark
        res = {"error": "%s: %s" % (type(e).__name__, e)}
    finally:
        if running is not None:
            alive = running.alive()
            rc = running.stop()
            if not alive:
                res["error"] = res.get("error") or "broker died (exit %s):\n%s" % (
                    rc, running.log_tail())
    res["wall_s"] = round(time.monotonic() - t0, 2)
    return res


def _meta(args):
    def out(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    try:
        from importlib.metadata import version
        amqtt_v = version("amqtt")
    except Exception:  # not installed: reported as None
        amqtt_v = None
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs": args.runs, "quick": args.quick,
        "git": out(["git", "rev-parse", "--short", "HEAD"]),
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "mosquitto": out([MOSQUITTO, "-h"]), "amqtt": amqtt_v,
        "loadgen_loop": loop_runner()[1], "edge_loop": args.edge_loop,
    }


def run(args, log=print):
    """Returns the results document (also written as JSON by __main__)."""
    _raise_nofile()
    scs = [scenarios.BY_NAME[n] for n in args.scenarios]
    active, skipped = [], {}
    for name in args.brokers:
        L = LAUNCHERS[name]()
        if name == "edgebroker":
            L.env = {"EDGEBROKER_LOOP": args.edge_loop}
        reason = L.available()
        if reason is None:
            try:
                L.prepare()
            except Exception as e:  # e.g. the ROMFS image cannot be built
                reason = "prepare failed: %s" % e
        if reason:
            skipped[name] = reason
            log("skipping %s: %s" % (name, reason))
        else:
            active.append(L)
    rows = []
    tmp = tempfile.mkdtemp(prefix="edgebench-")
    try:
        for r in range(args.runs):
            order = active if r % 2 == 0 else active[::-1]
            for sc in scs:
                params = sc.settings(args.quick)
                for pos, L in enumerate(x for x in order if x.runs(sc)):
                    wd = os.path.join(tmp, "%d-%s-%s" % (r, sc.name, L.name))
                    res = _run_one(L, sc, params, wd)
                    res.update({"run": r, "scenario": sc.name, "broker": L.name, "order": pos})
                    rows.append(res)
                    log(_progress(res, sc))
    finally:
        if args.keep:
            log("broker work directories kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    names = [L.name for L in active]
    doc = {
        "meta": _meta(args),
        "scenarios": {sc.name: {
            "title": sc.title, "kind": sc.kind, "params": sc.settings(args.quick),
            "metrics": [{"key": k, "unit": u, "higher_is_better": h} for k, u, h in sc.metrics],
        } for sc in scs},
        "brokers": {L.name: {"label": L.label, "settings": L.settings, "e2e_window": L.e2e_window}
                    for L in active},
        "skipped": skipped,
        "runs": rows,
    }
    doc["summary"] = report.summarise(rows, scs, names)
    return doc


def _progress(res, sc):
    head = "run %d %-20s %-15s" % (res["run"] + 1, sc.name, res["broker"])
    if res.get("error"):
        return head + " ERROR " + res["error"].splitlines()[0]
    figs = ", ".join("%s %s" % (report.fmt(res.get(k)), u) for k, u, _ in sc.metrics)
    extra = ""
    if res.get("cpu_loadgen_pct") is not None:
        b = res.get("cpu_broker_pct")
        extra = " (cpu: broker %s, loadgen %.0f%%)" % ("-" if b is None else "%.0f%%" % b,
                                                     res["cpu_loadgen_pct"])
    bad = [k for k in ("lost", "duplicated", "reordered", "corrupt") if res.get(k)]
    if bad:
        extra += " " + ", ".join("%s %d" % (k, res[k]) for k in bad)
    return head + " " + figs + extra


def write(doc, out_dir, chart=True):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path + ".new", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".new", path)
    png = None
    if chart:
        try:
            png = report.chart(doc, os.path.join(out_dir, "results.png"))
        except ImportError:
            png = None
    return path, png


def names(values, known, what):
    """Command-line name lists ("a,b" "c") as a list, checked against known;
    an unknown one ends the program naming what it is (for __main__.py and coap.py)."""
    out = []
    for v in values or []:
        for n in v.split(","):
            n = n.strip()
            if not n:
                continue
            if n not in known:
                raise SystemExit("unknown %s %r (one of: %s)" % (what, n, ", ".join(known)))
            if n not in out:
                out.append(n)
    return out
