# Opening the broker's store at start ([store] config, docs/design.md "Delivery
# guarantees"): the Log in the data directory, replayed into the Broker, what
# was cut or quarantined logged. Imported only when persistence is on.
#
# A store that cannot be read never stops the broker from starting: Log.open()
# cuts torn tails and quarantines segments it cannot read; if anything still
# fails (a replay bug, an unreadable directory entry), every segment of the
# store is renamed aside with a timestamp, the loss is logged, and the broker
# starts empty.
import sys
import time

from edge.runtime.flash import Flash
from edge.store.layout import FMSG
from edge.store.log import Log
from edge.store.state import StateStore

PREFIX = "state"  # segment files: state.<id> (the outbox will have its own)
_RESERVE = 512    # bytes kept free for records that replace others (state.py)
# Offline QoS 1 queues on flash, not in RAM (edge/store/fqueue.py): a
# board's heap is what bounds its queues; a gateway keeps them in RAM, where
# a drain costs no flash reads (docs/persistence.md "Offline queues on flash")
FLASH_QUEUE = sys.implementation.name == "micropython"


def _stamp():
    # Wall-clock seconds for quarantine names (a board without RTC counts
    # from its epoch: still unique enough with the collision suffix)
    return int(time.time())


def start(cfg, broker, log):
    """The runtime's entry: open_store(), then give a board back the heap
    of what only the start needs. (Log, None), or (None, why) if the heap
    or the files failed it: the caller decides whether the broker may run
    without it (main.py, store.persistence)."""
    import gc

    why = None
    try:
        wal = open_store(cfg, broker, log)
    except MemoryError:
        _reset(broker)  # what replay half-built
        wal = None
        why = "out of heap replaying it"
    except OSError as e:
        # not the data (open_store sets bad data aside) but the flash or
        # the directory itself: unreadable, unwritable, gone
        _reset(broker)
        wal = None
        why = "%s: %s" % (cfg["store"]["dir"], e)
    from edge.runtime.main import forget

    for name in ("edge.runtime.persist", "edge.store.replay", "edge.store.logread"):
        forget(name)
    gc.collect()
    return wal, why


def open_store(cfg, broker, log, files=None):
    """Open the store in cfg["store"]["dir"] (or the files object given:
    tests) and restore broker from it. Returns the Log (the runtime flushes
    it); never raises for bad data."""
    if files is None:
        files = Flash(cfg["store"]["dir"])
    try:
        wal = _open(files, cfg, broker, log)
    except MemoryError:
        raise  # the heap, not the data: the files stay as they are
    except Exception as e:  # noqa: BLE001  whatever it was, start anyway
        log(40, "store: cannot be read (%r): set aside, starting empty" % (e,))
        _set_aside(files, log)
        _reset(broker)
        wal = _open(files, cfg, broker, log)
    return wal


def _new_log(files, cfg):
    sc = cfg["store"]
    seg = sc["segment_bytes"]
    return Log(files, PREFIX, sc["sync"], sc["sync_max_delay_ms"], sc["budget_bytes"],
               cfg["broker"]["max_packet_size"], seg, min(65536, max(1024, seg // 4)), FMSG)


def _open(files, cfg, broker, log):
    wal = _new_log(files, cfg)
    for name, offset, err, action in wal.open(_stamp()):
        if action == "cut":
            log(30, "store: %s cut at byte %d (%s): the records after it are lost" % (name, offset, err))
        elif action == "removed":
            log(30, "store: %s removed (empty, creation cut short)" % name)
        else:
            log(40, "store: %s unreadable (%s), quarantined as %s" % (name, err, action))
    st = StateStore(wal, cfg["store"]["session_budget"], _RESERVE)
    # (a store that never syncs keeps its queues in RAM: a flash queue reads
    # its records back, and littlefs shows them to a reader once committed)
    if FLASH_QUEUE and cfg["store"]["sync"] != "never":
        st.queue = st.fq
    counts, problems = broker.restore(st)
    wal.flush()  # replay's repairs
    wal.drop_buffer()  # a board's heap: compaction allocates it again
    for seq, kind, what in problems:
        log(30, "store: record %d (kind %d) dropped: %s" % (seq, kind, what))
    log(20, "store: %s in %s, %d live bytes, sync %s" % (
        ", ".join("%d %s" % (counts[k], k) for k in sorted(counts)), cfg["store"]["dir"],
        wal.live_bytes, wal.sync))
    return wal


def _set_aside(files, log):
    files.close()
    stamp = _stamp()
    for name in files.listdir():
        if name.startswith(PREFIX + ".") and ".corrupt-" not in name:
            new = "%s.corrupt-%d" % (name, stamp)
            files.rename(name, new)
            log(40, "store: %s quarantined as %s" % (name, new))
    files.sync_dir()


def _reset(broker):
    # What a failed replay may have half-built
    broker.store = None
    broker.sessions.clear()
    broker.subs = type(broker.subs)()
    broker.retained = type(broker.retained)(broker.retained.max_messages, broker.retained.max_bytes)
