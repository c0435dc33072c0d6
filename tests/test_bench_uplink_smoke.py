# Keeps the uplink benchmark (python -m tools.bench.uplink) working: every
# scenario with small counts through the real entry point, against a private
# RabbitMQ node, edgebroker and (when installed) mosquitto's bridge. The
# edge's rows must show no loss; mosquitto's are only checked to be there.
import json
import os
import subprocess
import sys

import pytest

from tools.rabbitnode import SERVER

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(240)
def test_quick_uplink_bench(tmp_path):
    if not os.access(SERVER, os.X_OK):
        pytest.skip("no %s: `make deps` installs rabbitmq-server" % SERVER)
    servers = ["edgebroker"] + (["mosquitto"] if os.access("/usr/sbin/mosquitto", os.X_OK) else [])
    out = tmp_path / "bench"
    p = subprocess.run(
        [sys.executable, "-m", "tools.bench.uplink", "--quick", "--messages", "500", "--backlog", "500",
         "--flap-messages", "1000", "--servers"] + servers + ["--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=220)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "uplink.json").read_text())
    rows = {(r["scenario"], r["server"]): r for r in doc["runs"]}
    assert set(rows) == {(s, b) for s in ("throughput", "drain", "flap") for b in servers}
    for (sc, server), r in rows.items():
        assert r["error"] is None, r
        if server == "edgebroker":
            assert r["lost"] == 0 and r["arrived"] == r["acknowledged"] == r["messages"], r
    assert rows["throughput", "edgebroker"]["msgs_per_s"] > 0
    assert rows["drain", "edgebroker"]["drain_msgs_per_s"] > 0
    assert 0 < rows["drain", "edgebroker"]["flash_bytes_per_msg"] < 1000
    assert rows["flap", "edgebroker"]["flaps"] >= 1
