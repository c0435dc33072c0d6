# Keeps tools/replayheap.py working (docs/persistence.md "On a board": replay
# heap vs queued messages, issue #19): a store with an away session's queue
# written on CPython is replayed on the board runtime, every message back,
# the heap it holds flat in the queue's length when the queue is on flash.
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.micropython


def _run(*args):
    p = subprocess.run([sys.executable, "-m", "tools.replayheap", "--json"] + list(args),
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(180)
def test_replay_heap_is_flat_in_the_flash_queue_length(micropython_exe):
    # a board queues an away session's QoS 1 messages on flash
    # (edge/store/fqueue.py): its replay holds the same heap for 100 or
    # 300 (and fqueue.py's code, loaded once, over an empty store's)
    rows = _run("--n", "0,100,300")
    assert [r["replayed"] for r in rows] == [0, 100, 300]
    assert rows[2]["flash_bytes"] > rows[1]["flash_bytes"] + 200 * 64
    assert abs(rows[2]["held"] - rows[1]["held"]) < 512, rows
    assert rows[1]["held"] - rows[0]["held"] < 2048, rows


@pytest.mark.timeout(180)
def test_replay_heap_grows_with_a_ram_queue(micropython_exe):
    # the same queue kept in RAM (a gateway's, and a board's before issue
    # #19): each queued message holds at least its payload after replay
    rows = _run("--ram", "--n", "0,40")
    assert [r["replayed"] for r in rows] == [0, 40]
    assert rows[1]["held"] - rows[0]["held"] > 40 * 64, rows
