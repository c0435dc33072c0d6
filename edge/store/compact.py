# Compaction: keep the log O(live data) (docs/design.md H9, mosquitto's
# persist_write.c order). Rarely run, so edge/store/log.py imports it only
# when first needed.
#
# It takes the oldest segments, all of them or a prefix (log.tick() picks
# the prefix that frees the most for what it reads: in a standing queue the
# old segments are all garbage but a session's few records):
#   1. write their live records, in order, to PREFIX.<new>.new
#   2. sync it                      (its bytes are on flash)
#   3. rename it to PREFIX.<new>    (atomic on littlefs and POSIX)
#   4. sync the directory           (CPython: the rename survives a power cut)
#   5. remove the old segments, oldest first, sync the directory
#
# <new> is higher than every id it replaces and lower than every id it
# keeps (all of them: a new id; a prefix ending at id b: b + 1, free because
# new segments take every other id), and its META floor is <new>: once step
# 3 is done it supersedes the segments it replaces, and open() removes any
# that step 5 did not get to. Before step 3 the .new file is only a leftover
# that open() removes. So a power cut at any step leaves the old segments or
# the new one, never a mix: a deleted record can't come back (its tombstone
# is in the prefix or after it, and its record goes with the prefix), a live
# one can't be lost. A prefix with nothing live writes no new segment: its
# files are removed oldest first, and whatever a power cut leaves of them is
# a suffix of the log, each record's tombstone no older than the record. Segments
# with nothing live are not even read. No step renames over an existing
# file, so this holds on FAT too.
from edge.compat import const
from edge.store.logread import walk
from edge.store.record import HEADER, K_META, KIND_MIN, READERS, TMP_SUFFIX, append_record, get_varint

# Segment entry fields, record.py's _SEG_* (a private const is inlined by
# MicroPython and can't be imported)
_ID = const(0)
_SIZE = const(1)
_TOP = const(3)
_LIVE = const(4)


def compact(log, upto=0):
    """Rewrite the live records of log's oldest `upto` segments (0: all)
    into a new segment; True when done. False (and nothing changed) if a
    live record could not be read back."""
    f = log.files
    segs = log._segs
    if 0 < upto < len(segs) and not _live(segs[:upto]):
        _remove(log, segs[:upto])  # (the batch can wait: their records are deleted)
        log._segs = segs[upto:]
        log.compactions += 1
        return True
    log.flush()
    segs = log._segs  # (a new segment, if the flush started one)
    full = not 0 < upto < len(segs) or segs[upto - 1][_ID] + 1 >= segs[upto][_ID]
    if full:  # (or a store written before ids had gaps: all of it)
        upto = len(segs)
        sid = log._new_id()
    else:
        sid = segs[upto - 1][_ID] + 1
    old = segs[:upto]
    want = _live(old)  # bytes to copy
    final = log._name(sid)
    tmp = final + TMP_SUFFIX
    out = bytearray(HEADER)
    append_record(out, K_META, log._meta(sid))
    live = log._live
    owned = log.owned
    size = 0
    copied = 0
    nlive = 0
    bad = (tmp, 0, None)
    last = 0
    for seg in old:
        if not seg[_LIVE]:
            continue  # nothing live: never read
        for kind, mv, pos, b0, b1 in walk(log, seg):
            seq, i = get_varint(mv, b0, b1) if kind >= KIND_MIN else (0, 0)
            if seq <= last:
                continue  # one copy of a rewritten batch
            if seq in live:
                nlive += 1
            elif kind != owned or not owned_live(log, get_varint(mv, i, b1)[0], seq):
                continue  # (an owned record lives until its owner's cursor: record.py)
            last = seq
            out.extend(mv[pos:b1 + 4])
            copied += b1 + 4 - pos
            if len(out) >= log.batch_bytes:  # bounded RAM (H7)
                f.append(tmp, out)
                size += len(out)
                out = bytearray()
        good, err = log._walk_end
        if err is not None and bad[2] is None:
            # Possibly only the torn tail of a failed write (see flush()):
            # read on; the count below tells whether anything live was lost.
            bad = (log._name(seg[_ID]), good, err)
    if copied != want or (full and nlive != len(live)):
        # A segment went bad since open(): copying would drop live records
        # silently. Keep everything; the next open() cuts and reports it.
        if size:
            f.remove(tmp)
        log.problems.append(bad + ("compaction skipped",))
        log.compact_failed = True  # tick() stops trying until the next open()
        return False
    f.append(tmp, out)
    size += len(out)
    log.written += size
    f.sync(tmp)
    f.rename(tmp, final)
    f.sync_dir()
    log.disk_bytes += size
    _remove(log, old)
    top = log.next_seq - 1 if full else old[-1][_TOP]
    log._segs = [[sid, size, READERS[HEADER[4]], top, copied]] + segs[upto:]
    log._floor = sid
    if full:
        log._rotate = False
    log.compactions += 1
    log.drop_buffer()  # rarely needed again: a board's heap gets it back
    return True


def prefix(log, dead):
    """How many of log's oldest segments to compact (log.tick()): dead, the
    leading run with nothing live; else the longest prefix (the newest
    segment left out) at least half garbage, so compaction reads at most
    twice what it frees; 0 (all of them) when no prefix is."""
    segs = log._segs
    best = 0
    size = 0
    live = 0
    for k in range(len(segs) - 1):
        size += segs[k][_SIZE]
        live += segs[k][_LIVE]
        if dead and live:
            break
        if 2 * live <= size:
            best = k + 1
    return best


def _live(segs):
    n = 0
    for seg in segs:
        n += seg[_LIVE]
    return n


def _remove(log, old):
    f = log.files
    for seg in old:
        f.remove(log._name(seg[_ID]))
        log.disk_bytes -= seg[_SIZE]
    f.sync_dir()


def owned_live(log, owner, seq):
    # owner's owned record seq: not passed by its cursor (record.py)
    return log._cur is None or seq >= log._cur.get(owner, 0)
