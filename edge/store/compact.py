# Compaction: keep the log O(live data) (STYLE H9, mosquitto's
# persist_write.c order). Rarely run, so edge/store/log.py imports it only
# when first needed.
#
#   1. write the live records, in order, to PREFIX.<new>.new
#   2. sync it                      (its bytes are on flash)
#   3. rename it to PREFIX.<new>    (atomic on littlefs and POSIX)
#   4. sync the directory           (CPython: the rename survives a power cut)
#   5. remove the old segments, sync the directory
#
# <new> is higher than every old id and its META floor is <new>: once step 3
# is done the new segment supersedes all older ones, and open() removes any
# that step 5 did not get to. Before step 3 the .new file is only a leftover
# that open() removes. So a power cut at any step leaves the old segments or
# the new one, never a mix: a deleted record can't come back (its tombstone
# and its record are dropped together), a live one can't be lost. No step
# renames over an existing file, so this holds on FAT too.
from edge.compat import const
from edge.store.log import K_META, KIND_MIN, TMP_SUFFIX
from edge.store.record import HEADER, READERS, append_record, get_varint

# Segment entry field, as in log.py (a private const is inlined by
# MicroPython and can't be imported)
_ID = const(0)


def compact(log):
    """Rewrite log's live records into a new segment; True when done. False
    (and nothing changed) if a live record could not be read back: the old
    segments stay, and the problem is added to log.problems."""
    log.flush()
    f = log.files
    segs = log._segs
    sid = log._new_id()
    final = log._name(sid)
    tmp = final + TMP_SUFFIX
    out = bytearray(HEADER)
    append_record(out, K_META, log._meta(sid))
    live = log._live
    size = 0
    copied = 0
    bad = (tmp, 0, None)
    last = 0
    for seg in segs:
        for kind, mv, pos, b0, b1 in log._walk(seg):
            seq = get_varint(mv, b0, b1)[0] if kind >= KIND_MIN else 0
            if seq > last and seq in live:  # one copy of a rewritten batch
                last = seq
                out.extend(mv[pos:b1 + 4])
                copied += 1
                if len(out) >= log.batch_bytes:  # bounded RAM (H7)
                    f.append(tmp, out)
                    size += len(out)
                    out = bytearray()
        good, err = log._walk_end
        if err is not None and bad[2] is None:
            # Possibly only the torn tail of a failed write (see flush()):
            # read on; the count below tells whether anything live was lost.
            bad = (log._name(seg[_ID]), good, err)
    if copied != len(live):
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
    for seg in segs:
        f.remove(log._name(seg[_ID]))
    f.sync_dir()
    log._segs = [[sid, size, READERS[HEADER[4]], log.next_seq - 1]]
    log._floor = sid
    log._rotate = False
    log.disk_bytes = size
    log.compactions += 1
    log.drop_buffer()  # rarely needed again: a board's heap gets it back
    return True
