# The write side of the Log (edge/store/log.py): framing a batch (its
# records, tombstone runs and the owned records' cursors: record.py) and
# appending it to the segment files, creating segments, and a failed
# sync's retry. log.py keeps the live index, the batch and the durability
# bookkeeping (settled(), the sync protocol) and calls these. What only
# some stores run lives where it is used, so a board's idle store holds
# none of it: installing what recovery found (restore()) in logread.py,
# which a board drops after its start; what compaction installs
# (compacted()) in compact.py, loaded when first needed; the owned
# records' release() and cursor() in fqueue.py, loaded when a session
# first queues on flash. compact.py creates its segment with new_id() and
# meta() from here.
from edge.compat import const
from edge.store.record import (
    HEADER, K_CUR, K_DEL, K_DELS, K_META, READERS, append_record, append_seq_record, put_varint,
)

# Segment entry fields (record.py's _SEG_*: private copies, folded away)
_ID = const(0)
_SIZE = const(1)
_TOP = const(3)
_LIVE = const(4)
_ID_STEP = const(2)
_EAGAIN = const(11)


def write(log):
    """Log.write(): frame the batch, append it to the last segment (or a
    new one), not synced; the bytes written."""
    if log._del_lo:
        put_dels(log)
    # Records, then tombstones: a record that replaces another is on
    # flash before the deletion of the old one (state.py's rule)
    data = log._redo
    for e in log._pend:
        if e is not None:
            append_seq_record(data, e[0], e[1], e[2], e[3])
    cp = log._cpend
    if cp:  # after the records they may pass (record.py)
        for o in cp:
            body = bytearray()
            put_varint(body, o)
            put_varint(body, cp[o])
            append_record(data, K_CUR, body)
        log._cpend = None
    data.extend(log._pending)
    log._redo = data  # framed: a failed write writes it again
    log._redo_live += log._pbytes
    log._pend = []
    log._pc = 0
    log._pbytes = 0
    log._pending = bytearray()
    log._reset_room()
    if not data:
        return 0
    f = log.files
    seg = log._segs[-1] if log._segs else None
    created = seg is None or seg[_SIZE] >= log.segment_bytes or log._rotate
    if created and log._unsynced is not None and seg is not None:
        if log._rotate:
            raise OSError(_EAGAIN)  # a failed write, a sync in flight: retry after it
        created = False
    try:
        if created:
            seg = start_segment(log, f)
        name = log._name(seg[_ID])
        f.append(name, data)
        if created and log.sync != "never":
            f.sync_dir()  # the new file's name must survive too
    except OSError:
        # What reached the file is unknown: never append after it. Its
        # recorded size stays at the last good write, so reads stop there
        # and the next open() cuts whatever was torn.
        log._rotate = True
        log._failed()
        raise
    log.written += len(data)
    seg[_SIZE] += len(data)
    seg[_TOP] = log.top = log.next_seq - 1
    seg[_LIVE] += log._redo_live
    log._redo_live = 0
    log.disk_bytes += len(data)
    log._rotate = False
    log._unsynced = data if log._unsynced is None else log._unsynced + data
    if log._tomb_written < 0:
        log._tomb_written = log._tomb_batch
    log._tomb_batch = -1
    log._redo = bytearray()
    log._due = -1
    return len(data)


def start_segment(log, f):
    sid = new_id(log)
    head = bytearray(HEADER)
    append_record(head, K_META, meta(log, log._floor))
    f.append(log._name(sid), head)
    log.written += len(head)
    seg = [sid, len(head), READERS[HEADER[4]], log.top, 0]
    log._segs.append(seg)
    log.disk_bytes += len(head)
    return seg


def new_id(log):
    """A new segment id. Taken before the first write, so a failed creation
    is never reused."""
    log._next_id += _ID_STEP
    return log._next_id - _ID_STEP


def meta(log, floor):
    """The body of a segment's META record (record.py)."""
    body = bytearray()
    put_varint(body, log.next_seq)
    put_varint(body, floor)
    return body


def put_dels(log):
    """Frame the run of deletions log.delete() gathered: one tombstone."""
    lo = log._del_lo
    n = log._del_hi - lo + 1
    if n == 1:
        log._room -= append_seq_record(log._pending, K_DEL, lo, b"")
    else:
        body = bytearray()
        put_varint(body, n)
        log._room -= append_seq_record(log._pending, K_DELS, lo, body)
    log._del_lo = 0


def sync_failed(log):
    """Log.sync_failed(): what the last write()s wrote goes back in the
    batch, and the next write starts a new segment."""
    log._failed()
    if log._unsynced is not None:
        log._redo = log._unsynced + log._redo
        log._unsynced = None
    if log._tomb_written >= 0:  # (older than the batch's)
        log._tomb_batch = log._tomb_written
        log._tomb_written = -1
    log._rotate = True
