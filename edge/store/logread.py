# The read side of the Log (edge/store/log.py): recovery at open, replay,
# and the segment walk both of them and compaction (compact.py) read with.
# A board reads its log at start and when compacting, never per message, so
# log.py imports this only when first needed and edge/runtime/persist.py
# drops it again after the start: a store that opens empty keeps none of it.
#
# Recovery (open): a torn or bad record ends its segment and the tail is cut;
# a segment we can't read at all is renamed PREFIX.<id>.corrupt-<now> and
# reported in `problems`: nothing here stops the broker from starting.
from edge.compat import const
from edge.store.record import (
    ERR_TORN, HDR_BAD, HDR_TORN, HEADER_LEN, K_CUR, K_DEL, K_DELS, K_META, KIND_MIN, MAX_BODY, OVERHEAD,
    READERS, TMP_SUFFIX, get_varint, header_version,
)

_SEQ_MAX = const(8)     # varint bytes of a seq (get_varint's bound)
_HEAD_READ = const(32)  # HEADER + the largest META record
_ERR_BODY = "body"      # good CRC, body not ours (a seq that won't parse)
# Segment entry fields, record.py's _SEG_* (a private const is inlined by
# MicroPython and can't be imported)
_ID = const(0)
_SIZE = const(1)
_DECODE = const(2)
_TOP = const(3)
_LIVE = const(4)
_ID_STEP = const(2)
AT = [0]  # walk()'s buffer's file offset (read_owned's position hint)


def walk(log, seg, start=HEADER_LEN):
    """Yield (kind, mv, pos, body_start, body_end) for each good record of
    segment entry seg from file offset start (a record's), reading through
    one buffer of max_record + slack bytes (a board can't hold a whole
    segment). mv is reused: copy what you keep; AT[0] + pos is the
    record's file offset. Leaves (good_end, err or None) in log._walk_end."""
    buf = _rbuf(log)
    mv = memoryview(buf)
    cap = len(buf)
    name = log._name(seg[_ID])
    size = seg[_SIZE]
    decode = seg[_DECODE]
    files = log.files
    base = start  # file offset of mv[0]
    n = 0
    pos = 0
    while base + pos < size:
        kind, b0, b1, err = decode(mv, pos, n, MAX_BODY)
        if err == ERR_TORN and base + n < size:
            if pos:  # keep the partial record, read on
                mv[0:n - pos] = mv[pos:n]
                base += pos
                n -= pos
                pos = 0
            elif n == cap:
                # A record longer than the buffer (written with a larger
                # max_record): grow, bounded by what the file holds,
                # rather than cut good data. Dropped after this walk.
                buf = bytearray(min(2 * cap, size - base))
                buf[0:n] = mv[0:n]
                mv = memoryview(buf)
                cap = len(buf)
            got = files.readinto(name, base + n, mv[n:cap])
            if got > 0:
                n += got
                continue
        if err is None and kind >= KIND_MIN and get_varint(mv, b0, b1)[0] < 0:
            err = _ERR_BODY
        if err is not None:
            log._walk_end = (base + pos, err)
            return
        AT[0] = base
        yield kind, mv, pos, b0, b1
        pos = b1 + 4
    log._walk_end = (base + pos, None)


def _rbuf(log):
    if log._buf is None:
        log._buf = bytearray(max(log.max_record + _SEQ_MAX + OVERHEAD, _HEAD_READ))
    return log._buf


def replay(log, from_seq):
    """Log.replay(): yield (seq, kind, body) of every live record with seq
    >= from_seq, in append order, after a flush (records are read back
    from the files)."""
    log.flush()
    last = from_seq - 1
    live = log._live
    for seg in log._segs:
        if seg[_TOP] <= last:
            continue  # every record in it is older
        for kind, mv, pos, b0, b1 in walk(log, seg):
            if kind >= KIND_MIN:
                seq, i = get_varint(mv, b0, b1)
                if seq > last and seq in live:  # see _index()
                    last = seq
                    yield seq, kind, bytes(mv[i:b1])


# ---- recovery ----------------------------------------------------------------
def open_log(log, now):
    """Log.open(): recover the directory and rebuild the live index."""
    f = log.files
    log.problems = []
    names = f.listdir()
    changed = False
    found = []
    for name in names:
        sid, tmp = _parse(log.prefix, name)
        if tmp:
            f.remove(name)  # unfinished compaction: the old files are whole
            changed = True
        elif sid >= 0:
            found.append(sid)
    found.sort()
    segs = []
    floor = 0
    for sid in found:
        seg, seg_floor = _open_segment(log, sid, names, now)
        if seg is not None:
            segs.append(seg)
            floor = max(floor, seg_floor)
    kept = []
    for seg in segs:
        if seg[_ID] < floor:
            f.remove(log._name(seg[_ID]))  # superseded by a compaction
            changed = True
        else:
            kept.append(seg)
    live, nbytes, disk, nxt, cur, owned = _index(log, kept)
    restore(log, kept, live, nxt, floor, found[-1] + _ID_STEP if found else 1, nbytes, disk, cur, owned)
    if changed or log.problems:
        f.sync_dir()  # removes, quarantine renames (CPython)
    return log.problems


def restore(log, segs, live, next_seq, floor, next_id, live_bytes, disk_bytes, cur=None,
            owned=None):
    """Install what recovery (open_log()) found in log: the segment
    entries (record.py's _SEG_*), oldest first, their live records
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


def _parse(prefix, name):
    # -> (segment id, is compaction temp file) or (-1, False)
    p = prefix + "."
    rest = name[len(p):]
    tmp = rest.endswith(TMP_SUFFIX)
    if tmp:
        rest = rest[:-len(TMP_SUFFIX)]
    if not name.startswith(p) or not rest.isdigit() or str(int(rest)) != rest:
        return -1, False  # a quarantined file, or not ours
    return int(rest), tmp


def _open_segment(log, sid, names, now):
    # Check header and META -> ([id, size, decode], floor) or (None, 0)
    f = log.files
    name = log._name(sid)
    size = f.size(name)
    mv = memoryview(_rbuf(log))
    got = f.readinto(name, 0, mv[0:min(size, _HEAD_READ)]) if size else 0
    v = header_version(mv, got)
    if v == HDR_TORN:
        err = ERR_TORN
    elif v == HDR_BAD:
        err = "magic"
    elif v not in READERS:
        err = "version %d" % v
    else:
        kind, b0, b1, err = READERS[v](mv, HEADER_LEN, got, _HEAD_READ)
        if err is None and kind != K_META:
            err = "meta"
    if err == ERR_TORN and got == size:
        # Creation cut short (header + META are the first write): empty
        f.remove(name)
        log.problems.append((name, 0, err, "removed"))
        return None, 0
    if err is not None:
        _quarantine(log, name, names, now, err)
        return None, 0
    floor = get_varint(mv, get_varint(mv, b0, b1)[1], b1)[0]
    return [sid, size, READERS[v], 0, 0], floor  # _index() sets top, live


def _quarantine(log, name, names, now, err):
    q = "%s.corrupt-%d" % (name, now)
    k = 1
    while q in names:  # a second one in the same ms (or after a reboot)
        k += 1
        q = "%s.corrupt-%d-%d" % (name, now, k)
    log.files.rename(name, q)
    names.append(q)
    log.quarantined += 1
    log.problems.append((name, 0, err, q))


def _index(log, segs):
    # Pass over every record of segs -> (live index, live bytes, disk
    # bytes, next seq); cut each segment at its first bad record.
    live = {}
    nbytes = 0
    disk = 0
    nxt = log.next_seq
    top = 0  # highest record seq seen
    owned = log.owned
    cur = {}
    seen = False  # an owned record: a second pass counts what lives
    for seg in segs:
        for kind, mv, pos, b0, b1 in walk(log, seg):
            n, i = get_varint(mv, b0, b1)
            if kind >= KIND_MIN:
                if n > seg[_TOP]:
                    seg[_TOP] = n
                # Seqs only grow through the log; a seq seen again is a
                # batch rewritten after a failed sync (flush()): one copy.
                if n > top:
                    top = n
                    if kind == owned:
                        seen = True
                        continue
                    live[n] = b1 + 4 - pos
                    nbytes += b1 + 4 - pos
            elif kind == K_CUR:
                c = get_varint(mv, i, b1)[0]
                if c > cur.get(n, 0):
                    cur[n] = c
            elif kind == K_DEL:
                nbytes -= live.pop(n, 0)
            elif kind == K_DELS:
                for x in range(n, n + get_varint(mv, i, b1)[0]):
                    nbytes -= live.pop(x, 0)
            elif kind == K_META:
                nxt = max(nxt, n)
        good, err = log._walk_end
        if err is not None:
            name = log._name(seg[_ID])
            log.files.truncate(name, good)
            log.problems.append((name, good, err, "cut"))
            seg[_SIZE] = good
        disk += seg[_SIZE]
    last = 0
    for seg in segs:  # tops only grow (a cut segment's too)
        if seg[_TOP] < last:
            seg[_TOP] = last
        last = seg[_TOP]
    stats = {}
    if seen:
        nbytes += _owned_pass(log, segs, cur, stats)
    return live, nbytes, disk, max(nxt, top + 1), cur, stats


def _owned_pass(log, segs, cur, stats):
    # The owned records that live (at or above their owner's cursor): in
    # their segment's live bytes, and per owner [records, bytes, first seq]
    # (O(owners) of RAM, not O(records)). Their bytes in all.
    owned = log.owned
    last = 0
    total = 0
    for seg in segs:
        for kind, mv, pos, b0, b1 in walk(log, seg):
            if kind != owned:
                continue
            n, i = get_varint(mv, b0, b1)
            o = get_varint(mv, i, b1)[0]
            if n > last and o >= 0 and n >= cur.get(o, 0):
                last = n
                size = b1 + 4 - pos
                seg[_LIVE] += size
                total += size
                st = stats.get(o)
                if st is None:
                    stats[o] = [1, size, n]
                else:
                    st[0] += 1
                    st[1] += size
    return total


def read_owned(log, owner, from_seq, n, hint):
    """Up to n live owned records (record.py) of owner with seq >=
    from_seq, in order: [(seq, size, body)], body after the seq. Flushes
    the batch first: records are read back from the files, and appended
    bytes not synced yet are not there to read on every files object (a
    board's Pieces keep a small batch in RAM until its sync; littlefs shows
    a file's appends to another handle once committed). A drain that
    reaches the batch so syncs it early, the sync its publishers' PUBACKs
    wait for anyway.
    hint, [segment id, file offset], is where the last read for owner
    stopped (0: none): the walk goes on from there, not from the start of
    its segment (a drain reads each record once); updated in place."""
    if log.pending():
        log.flush()
    out = []
    last = from_seq - 1
    owned = log.owned
    c = log._cur.get(owner, 0) if log._cur else 0
    if last < c - 1:
        last = c - 1
    segs = log._segs
    k = 0
    off = 0
    for i in range(len(segs)):
        if segs[i][_ID] == hint[0]:
            k = i  # (compacted away: from the first segment)
            off = hint[1]
    for i in range(k, len(segs)):
        seg = segs[i]
        if seg[_TOP] <= last:
            continue
        for kind, mv, pos, b0, b1 in walk(log, seg, off if i == k and off else HEADER_LEN):
            if kind != owned:
                continue
            seq, j = get_varint(mv, b0, b1)
            if seq > last:
                o, j2 = get_varint(mv, j, b1)
                if o == owner:
                    last = seq
                    out.append((seq, b1 + 4 - pos, bytes(mv[j:b1])))
                    if len(out) >= n:
                        hint[0] = seg[_ID]
                        hint[1] = AT[0] + b1 + 4
                        return out
        hint[0] = seg[_ID]
        hint[1] = log._walk_end[0]
    return out
