# Keeps tools/replayheap.py working (docs/persistence.md "On a board": replay
# heap vs queued messages, issue #19): a store with an away session's queue
# written on CPython is replayed on the board runtime, every message back.
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.micropython


@pytest.mark.timeout(180)
def test_replayheap_reports_what_replay_holds(micropython_exe):
    p = subprocess.run([sys.executable, "-m", "tools.replayheap", "--n", "0,40", "--json"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["replayed"] for r in rows] == [0, 40], p.stdout
    assert rows[1]["flash_bytes"] > rows[0]["flash_bytes"] + 40 * 64
    # Offline queues live in RAM after a replay (docs/heap.md): each queued
    # message holds at least its payload
    assert rows[1]["held"] - rows[0]["held"] > 40 * 64, rows
