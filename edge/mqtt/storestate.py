# What the broker says about its store (docs/persistence.md "When the store
# cannot keep it"): $SYS/broker/store/state (systree.py) and, when QoS 1/2
# are not kept now, a 5.0 CONNACK's User Property and Reason String
# (v5.py). Imported only with persistence on, so a board without a store
# pays no heap for it.
from edge.compat import const

_P_REASON_STRING = const(0x1F)
_P_USER = const(0x26)


def state(b):
    """$SYS/broker/store/state (docs/persistence.md "When the store cannot
    keep it"): "ok"; "failing" (a write or sync failed and its retry too:
    new QoS 1/2 publishes are refused); "off" (store.persistence false); "best-effort"
    (it did not open and the config allows running without it)."""
    if b.store_off is not None:
        return "best-effort"
    if b.store is None:
        return "off"
    return "failing" if b.store.log.failing else "ok"


def notice(b, ack):
    """A 5.0 CONNACK's properties (ack) when the store keeps nothing now: a
    User Property ("store", state) and a Reason String saying why (5.0
    §3.2.2.3.9-10: both are the Server's to send)."""
    st = state(b)
    ack[_P_USER] = [("store", st)]
    if st == "failing":
        ack[_P_REASON_STRING] = "the broker's store is failing: QoS 1/2 publishes are refused"
    else:
        ack[_P_REASON_STRING] = ("the broker runs without its store (%s): QoS 1/2 messages "
                                 "do not survive a restart" % b.store_off)[:255]
