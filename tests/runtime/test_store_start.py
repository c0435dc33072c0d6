# A store that cannot open at start (issue #19, docs/persistence.md "When
# the store cannot keep it"), on CPython: store.dir is not a directory the
# store can use. With persistence true the start stops with the directory
# and the error named; "best-effort" runs without the store and says why.
# (The board's case, a heap without room for the store, runs real
# processes: tests/integration/test_19_store_failing.py.)
import pytest

from edge import config
from edge.errors import ConfigError
from edge.mqtt.broker import Broker
from edge.mqtt.systree import values
from edge.runtime import main


def _cfg(tmp_path, persistence):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    return config.load({"store": {"dir": str(f), "persistence": persistence}}), str(f)


def test_persistence_true_stops_the_start(tmp_path):
    cfg, f = _cfg(tmp_path, True)
    lines = []
    with pytest.raises(ConfigError) as e:
        main._open_store(cfg, Broker(cfg, 0), lambda level, msg: lines.append(msg))
    msg = str(e.value)
    assert msg.startswith("store.persistence: the store cannot open (%s: " % f), msg
    assert "a writable store.dir" in msg and 'store.persistence = "best-effort"' in msg, msg


def test_best_effort_runs_without_it_and_says_why(tmp_path):
    cfg, f = _cfg(tmp_path, "best-effort")
    lines = []
    b = Broker(cfg, 0)
    assert main._open_store(cfg, b, lambda level, msg: lines.append((level, msg))) is None
    assert b.store is None and b.store_off.startswith(f + ": ")
    assert any(level == 40 and "running WITHOUT persistence" in msg for level, msg in lines), lines
    assert dict(values(b))["store/state"] == "best-effort"
