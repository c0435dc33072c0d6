# Keeps the benchmark harness (tools/bench) working: one tiny scenario against
# edgebroker on CPython through the real entry point, and the load
# generator's sequence checking on hand-made input (no sockets).
import json
import os
import subprocess
import sys

import pytest

from tools.bench import wire
from tools.bench.flow import Flow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(120)
def test_store_bench_quick(tmp_path):
    # python -m tools.bench.store: persistence on vs off, bytes/message (issue #4)
    out = tmp_path / "store.json"
    p = subprocess.run(
        [sys.executable, "-m", "tools.bench.store", "--duration", "1", "--runs", "1",
         "--rate", "400", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=100)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    paced = doc["paced"]
    assert paced["messages"] > 0 and paced["lost"] == 0
    assert paced["bytes_per_msg"] > 0 and paced["syncs_per_s"] > 0
    for key in ("flat_persistent", "flat_clean"):
        assert doc[key]["off"] > 0 and doc[key]["on"] > 0, doc
        assert doc[key]["cpu_us_per_msg_off"] > 0 and doc[key]["cpu_us_per_msg_on"] > 0, doc


@pytest.mark.timeout(60)
def test_store_core_bench_runs():
    # python -m tools.bench.store_core: the store's CPU in the core alone;
    # its written regime writes every delivery (about 85 bytes each)
    from tools.bench import store_core

    us_off, b_off = store_core.run(False, 20)
    us_on, b_on = store_core.run(True, 20)
    assert us_off > 0 and us_on > 0 and b_off == 0
    assert 60 < b_on < 120, b_on
    # acked first: every record void, nothing written
    us_on, b_on = store_core.run(True, 20, acked_first=True)
    assert us_on > 0 and b_on == 0, b_on


@pytest.mark.timeout(90)
def test_quick_fanin_q1_against_edgebroker(tmp_path):
    out = tmp_path / "bench"
    p = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--quick", "--runs", "1", "--brokers", "edgebroker",
         "--scenarios", "fanin_q1", "--out", str(out), "--no-chart"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=75)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fanin_q1" in p.stdout and "Integrity: every message verified" in p.stdout, p.stdout
    doc = json.loads((out / "results.json").read_text())
    assert set(doc) >= {"meta", "scenarios", "brokers", "skipped", "runs", "summary"}
    assert doc["meta"]["quick"] is True and doc["meta"]["runs"] == 1
    # the broker runs on the stdlib loop unless --edge-loop says otherwise
    assert doc["meta"]["edge_loop"] == "asyncio" and doc["meta"]["loadgen_loop"] in ("asyncio", "uvloop")
    assert list(doc["brokers"]) == ["edgebroker"]
    [row] = doc["runs"]
    assert row["scenario"] == "fanin_q1" and row["broker"] == "edgebroker"
    assert row["error"] is None
    for key in ("sent", "good", "lost", "duplicated", "reordered", "corrupt", "unacked",
                "msgs_per_s", "cpu_broker_pct", "cpu_loadgen_pct", "elapsed_s"):
        assert key in row, key
    assert row["sent"] > 0 and row["good"] == row["sent"]
    assert (row["lost"], row["duplicated"], row["reordered"], row["corrupt"], row["unacked"]) == (0, 0, 0, 0, 0)
    assert row["msgs_per_s"] > 0
    med = doc["summary"]["medians"]["fanin_q1"]["msgs_per_s"]["edgebroker"]
    assert med["n"] == 1 and med["median"] == row["msgs_per_s"]
    assert doc["summary"]["integrity"]["fanin_q1"]["edgebroker"]["lost"] == 0


class _Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


class _FakeLink:
    def __init__(self):
        self.transport = _Sink()


def _publish(qos, pid, pub, seq, size=64):
    tpl, pid_off, pay_off = wire.publish_template("bench/in/%d" % pub, qos, size, pub)
    b = bytearray(tpl)
    if qos:
        b[pid_off:pid_off + 2] = pid.to_bytes(2, "big")
    b[pay_off + 4:pay_off + 8] = seq.to_bytes(4, "big")
    return bytes(b)


def test_subscriber_counts_loss_duplicates_and_reordering():
    flow = Flow(npubs=2, nsubs=1, qos=1)
    sub = flow.add_subscriber()
    for p in range(2):
        flow.add_publisher("bench/in/%d" % p).seq = 6  # each "sent" 0..5
    link = _FakeLink()
    seqs = [(0, 0), (0, 1), (0, 3), (0, 2), (0, 2), (0, 5),   # pub 0: 4 missing, 2 late, 2 dup
            (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]   # pub 1: clean
    stream = b"".join(_publish(1, i + 1, p, s) for i, (p, s) in enumerate(seqs))
    for i in range(0, len(stream), 7):  # arbitrary read boundaries
        sub.on_data(link, stream[i:i + 7])
    t = flow.tally()
    assert (t["sent"], t["unique"], t["lost"], t["duplicated"], t["reordered"]) == (12, 11, 1, 1, 1)
    assert t["good"] == 10 and t["corrupt"] == 0
    # one PUBACK per PUBLISH, in order, with the broker's packet ids
    acks = bytes(link.transport.data)
    assert acks == b"".join(wire.ack(wire.PUBACK, i + 1) for i in range(len(seqs)))
