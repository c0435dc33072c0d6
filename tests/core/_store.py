# Booting and restarting a store over in-memory files (tests/core/_memfiles.py:
# a "crash" keeps only what was synced), for the store tests and the budget
# tests: one copy of "a Log over files m, opened, a StateStore on it,
# replayed into a fresh broker, what replay repaired flushed", as the
# runtime starts (edge/runtime/persist.py). Plain functions: pytest and
# tests/mpy_runner.py.
from edge.store.log import Log
from edge.store.state import StateStore
from tests.core._memfiles import MemFiles
from tests.core._pair import Client, make_broker


def new_store(m=None, **kw):
    """(files, opened Log, StateStore) over m (new MemFiles if None). kw:
    the Log's (segment_bytes defaults to 512), and the StateStore's
    session_budget and reserve_bytes."""
    m = m or MemFiles()
    kw.setdefault("segment_bytes", 512)
    sk = {}
    for k in ("session_budget", "reserve_bytes"):
        if k in kw:
            sk[k] = kw.pop(k)
    log = Log(m, **kw)
    log.open(0)
    return m, log, StateStore(log, **sk)


def restart(m, **kw):
    """A fresh Log + StateStore + Broker over m, replayed (and what replay
    repaired flushed, as the runtime will before it listens). The broker
    is not wired to the store: the caller calls its hooks."""
    m, log, st = new_store(m, **kw)
    b = make_broker()
    counts, problems = st.replay(b)
    log.flush()
    return b, st, counts, problems


def boot(m, budget=65536, session_budget=65536, now=0, **broker_cfg):
    """A broker restored from the files m, as the runtime starts one:
    (broker, log, replay's counts)."""
    m, log, st = new_store(m, prefix="state", budget_bytes=budget, segment_bytes=2048,
                           session_budget=session_budget)
    b = make_broker(now, **broker_cfg)
    counts, problems = b.restore(st)
    log.flush()
    return b, log, counts


def crash(m):
    """kill -9 / power cut: what was not synced is gone."""
    m.power_cut()
    return m


def sub_and_pub(b, f, qos, offline=True, v5=False):
    """A persistent subscriber "sub" to f (gone again if offline), and a
    connected clean publisher "pub" (MQTT 5.0 if v5)."""
    sub = Client(b)
    sub.connect("sub", clean=False)
    sub.subscribe((f, qos))
    if offline:
        sub.lose()
    pub = Client(b, v5=v5)
    pub.connect("pub")
    return sub, pub
