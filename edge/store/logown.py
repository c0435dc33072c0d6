# The Log's owned records (record.py: alive until their owner's cursor
# passes them, no live-index entry each; edge/store/fqueue.py's offline
# queues) and the calls recovery and compaction install what they found
# with (logread.py's open_log, compact.py): Log methods, kept here so that
# log.py is its batch and its sync.
from edge.compat import const

_LIVE = const(4)  # record.py's SEG_LIVE


def release(log, seq, size):
    """Owned record seq (size bytes on flash) is dead: its owner will
    move its cursor past it (cursor()). One still in the batch is
    dropped from it: it never reaches the flash."""
    log.live_bytes -= size
    i = seq - log._pbase
    pend = log._pend
    if 0 <= i < len(pend) and pend[i] is not None:
        pend[i] = None
        log._pbytes -= size
        log._room += size
    elif seq > log.top:
        log._redo_live -= size
    else:
        log._seg_of(seq)[_LIVE] -= size

def cursor(log, owner, seq):
    """owner's owned records below seq are dead (each release()d): one
    CUR record in the batch, the owner's latest. Promises nothing
    (settled() does not wait for it): a record revived by a torn batch
    is one its owner consumed, delivered again at least once."""
    if log._cur is None:
        log._cur = {}
    log._cur[owner] = seq
    if log._cpend is None:
        log._cpend = {}
    log._cpend[owner] = seq

def owned_live(log, owner, seq):
    return log._cur is None or seq >= log._cur.get(owner, 0)

def read_owned(log, owner, from_seq, n):
    """Up to n live owned records of owner with seq >= from_seq, in
    order: [(seq, size, body)], body after the seq. Writes the batch
    first (not synced: records are read back from the files)."""
    from edge.store.logread import read_owned

    return read_owned(log, owner, from_seq, n)


def restore(log, segs, live, next_seq, floor, next_id, live_bytes, disk_bytes, cur=None,
            owned=None):
    """Install what recovery (logread.py's open_log) found: the segment
    entries (record.py's SEG_*), oldest first, their live records
    {seq: size on flash}, the next seq, the compaction floor, the next
    segment id and the byte counts. Everything found is on flash:
    synced and written up to next_seq - 1. cur: the owned records'
    cursors, owned: what lives of them, per owner (owned_stats)."""
    log._segs = segs
    log._live = live
    log.next_seq = next_seq
    log.synced = log.top = next_seq - 1
    log._floor = floor
    log._next_id = next_id
    log.live_bytes = live_bytes
    log.disk_bytes = disk_bytes
    log.compact_failed = False
    log._cur = cur or None
    log.owned_stats = owned
    if segs:
        for seq in live:
            log._seg_of(seq)[_LIVE] += live[seq]

def compacted(log, segs, floor=0, full=False):
    """compact.py replaced the oldest segments: segs is the new list,
    floor the new segment's id (0: none written, the floor stays); full:
    it replaced all of them, a failed write's segment too."""
    log._segs = segs
    if floor:
        log._floor = floor
    if full:
        log._rotate = False

