# The store did not open (heap, flash, a replay out of heap) with
# store.persistence on: what happens then (docs/persistence.md "When the
# store cannot keep it"). Imported only on that path, so its messages cost
# a board's heap nothing when the store opens or is off.
from edge.errors import ConfigError


def refuse(cfg, broker, log, why, needed):
    """why: the free heap (an int) short of `needed`, or the reason the
    store failed (a str). Raises ConfigError with store.persistence true (the
    start stops: QoS 1/2 would be acknowledged without being kept, docs/
    design.md "Delivery guarantees"); with "best-effort" the broker runs
    without the store and says so ($SYS/broker/store/state, 5.0 CONNACK)."""
    if type(why) is int:
        why = "%d bytes of heap free, %d needed" % (why, needed)
        fix = "a larger heap (96 KiB or more; the unix port: -X heapsize=96k)"
    elif why.startswith("out of heap"):
        fix = "a larger heap, or fewer messages queued in the store"
    else:
        fix = "a writable store.dir on a working filesystem"
    if cfg["store"]["persistence"] is True:
        raise ConfigError("store.persistence", "the store cannot open (%s), so QoS 1/2 could not be kept. "
                          "Give the broker %s, or set store.persistence = \"best-effort\" to run "
                          "without the store (clients are told), or false" % (why, fix))
    broker.store_off = why
    log(40, "store: cannot open (%s): running WITHOUT persistence (store.persistence = \"best-effort\"); "
        "$SYS/broker/store/state and 5.0 CONNACKs say so" % why)
