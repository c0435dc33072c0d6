# The uplink's durable outbox (edge/store/outbox.py) on a log of its own in
# <store.dir>/uplink/, with the store's sync settings and the uplink's byte
# budget: opened the same way by both runtimes' shells (uplink.py on a
# board, uplink_cpython.py on the gateway), imported only with an uplink.
from edge.runtime.clock import now_ms
from edge.runtime.flash import Flash
from edge.store.log import Log
from edge.store.outbox import Outbox


def open_outbox(cfg, log):
    sc = cfg["store"]
    seg = sc["segment_bytes"]
    wal = Log(Flash(sc["dir"].rstrip("/") + "/uplink"), "outbox", sc["sync"], sc["sync_max_delay_ms"],
              cfg["upstream"]["outbox_budget_bytes"], cfg["broker"]["max_packet_size"] + 512, seg,
              min(65536, max(1024, seg // 4)))
    for name, offset, err, action in wal.open(now_ms()):
        log(30, "uplink: outbox %s: %s at byte %d (%s)" % (name, action, offset, err))
    ob = Outbox(wal)
    log(20, "uplink: outbox in %s/uplink, %d waiting" % (sc["dir"], len(ob)))
    return ob
