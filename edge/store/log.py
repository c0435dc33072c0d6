# An append-only, segmented record log on flash (STYLE H9), sans-IO: every
# file operation goes through an injected `files` object (edge/runtime/
# flash.py on a device, an in-memory fake in tests), and time comes in as
# now_ms (H5). The owner (sessions, retained store, outbox) gives each record
# a kind and a body and gets back a sequence number; delete(seq) retires it.
#
# Files, in one directory, named PREFIX.<id>:
#   HEADER, META(next_seq, floor), then records in append order.
# A user record's body is varint(seq) + the owner's body; a DEL record's body
# is varint(seq), a DELS record's varint(first seq) + varint(count): a run of
# consecutive seqs deleted in one record (a subscriber acking in order
# deletes its deliveries' records in seq order: one tombstone a batch, not
# one a message). META is the first record of every segment: next_seq keeps
# sequence numbers from being reused even when every record was deleted and
# compacted away (an outbox seq is an upstream idempotency key), and floor
# says "segments with a lower id are superseded" (see compact()).
#
# Durability (DESIGN "Delivery guarantees"): append()/delete() only add to an
# in-RAM batch; flush() writes the batch and syncs once (group commit: one
# flash block rewrite for many records, PLATFORM "littlefs"). The caller that
# must not ack before a record is durable (PUBACK after a QoS 1 append,
# PUBREC after a QoS 2 pid) calls flush() before it sends; tick(now) bounds
# how long anything else waits (sync_max_delay_ms). sync = "always" flushes
# on every change, "never" writes on tick but never syncs. settled() tells a
# runtime that holds each ack until what it promises is kept (tcp_cpython.py)
# how far acks may go: a record deleted before it was written needs no flash
# (what promised it is done with it), and a deletion marked quiet (an ended
# delivery) holds no output back; any other deletion holds what is queued
# after it until its tombstone is durable.
#
# Recovery (open): a torn or bad record ends its segment and the tail is cut;
# a segment we can't read at all is renamed PREFIX.<id>.corrupt-<now> and
# reported in `problems`: nothing here stops the broker from starting.
#
# The files object's methods are listed (and implemented) in
# edge/runtime/flash.py; tests/core/_memfiles.py is the in-memory one.
from edge.compat import const
from edge.store.record import (
    ERR_TORN, HDR_BAD, HDR_TORN, HEADER, HEADER_LEN, MAX_BODY, OVERHEAD, READERS,
    append_record, append_seq_record, body_len, get_varint, header_version, put_varint,
    record_size,
)

K_META = const(1)   # varint next_seq, varint floor
K_DEL = const(2)    # varint seq
K_DELS = const(3)   # varint first seq, varint count (a run of deletions)
KIND_MIN = const(16)  # kinds below are the log's own (3..15 reserved)
KIND_MAX = const(254)

SYNC_MODES = ("always", "batch", "never")
_SEQ_MAX = const(8)     # varint bytes of a seq (get_varint's bound)
_HEAD_READ = const(32)  # HEADER + the largest META record
TMP_SUFFIX = ".new"     # compaction output before its rename
_ERR_BODY = "body"      # good CRC, body not ours (a seq that won't parse)
_EAGAIN = const(11)

# Segment entry fields: [id, size, decode, top, live]. top is an upper
# bound on the seqs of the segment's records, so replay(from_seq) (the outbox
# reading on from its cursor) skips whole segments instead of walking them;
# live is the bytes of its records still live, so compaction (compact.py)
# drops a dead segment without reading it and copies only what lives.
_ID = const(0)
_SIZE = const(1)
_DECODE = const(2)
_TOP = const(3)
_LIVE = const(4)
# New segments take every other id: compacting the oldest segments up to id
# b writes id b + 1, which sorts before the segments after them (compact.py).
_ID_STEP = const(2)


class Log:
    def __init__(self, files, prefix="log", sync="batch", max_delay_ms=50,
                 budget_bytes=65536, max_record=1024, segment_bytes=16384,
                 batch_bytes=4096):
        if sync not in SYNC_MODES:
            raise ValueError("sync %r" % sync)
        self.files = files
        self.prefix = prefix
        self.sync = sync
        self.max_delay_ms = max_delay_ms
        self.budget_bytes = budget_bytes  # live records, bytes on flash
        self.max_record = max_record      # largest owner body accepted
        self.segment_bytes = segment_bytes
        self.batch_bytes = batch_bytes    # a batch this big flushes at once (H7)
        self.next_seq = 1
        self.synced = 0         # every seq <= synced is durable ("never": written)
        self.top = 0            # every seq <= top is in a segment file (write())
        self.live_bytes = 0
        self.disk_bytes = 0     # all segments, garbage included
        self.refused = 0        # appends over the budget or max_record
        self.syncs = 0
        self.written = 0        # bytes appended to segment files, ever
        self.compactions = 0
        self.quarantined = 0
        self.compact_failed = False
        self.problems = []      # (name, offset, err, action) found by open()
        self._segs = []         # [id, size, decode, top, live], oldest first
        self._live = {}         # seq -> record size on flash
        self._floor = 0
        self._next_id = 1
        self._rotate = False    # a write failed: the next flush starts a segment
        # The batch: records not framed yet (a deletion just drops one),
        # framed bytes a failed write left, tombstones.
        self._pend = []         # (kind, seq, body, body length) or None once deleted
        self._pbase = 0         # the seq of _pend[0]: appends take consecutive seqs
        self._pbytes = 0        # what _pend's records will take
        self._room = 0          # what the batch may still take before it is written: write()
        self._redo = bytearray()
        self._pending = bytearray()
        self._redo_live = 0     # live bytes of the records framed in _redo
        self._unsynced = None   # what write() wrote and no sync has covered yet
        self._del_lo = 0        # a run of deletions not framed yet: seqs
        self._del_hi = 0        # _del_lo.._del_hi (0: none)
        self._due = -1          # tick() flushes the batch at this time
        self._buf = None        # read buffer, allocated on first read
        self._walk_end = (0, None)
        self._pc = 0            # _pend's entries before it are deleted (settled())
        self._tomb_batch = -1   # where the batch's first tombstone was made (settled())
        self._tomb_written = -1  # the same for what write() wrote and no sync has covered
        self._seq_bytes = 0     # varint bytes of next_seq, until it reaches...
        self._seq_grow = 0      # ...this (seqs only grow: append() rarely counts them)
        self._reset_room()

    # ---- names ---------------------------------------------------------------
    def _name(self, sid):
        return "%s.%d" % (self.prefix, sid)

    def _parse(self, name):
        # -> (segment id, is compaction temp file) or (-1, False)
        p = self.prefix + "."
        rest = name[len(p):]
        tmp = rest.endswith(TMP_SUFFIX)
        if tmp:
            rest = rest[:-len(TMP_SUFFIX)]
        if not name.startswith(p) or not rest.isdigit() or str(int(rest)) != rest:
            return -1, False  # a quarantined file, or not ours
        return int(rest), tmp

    # ---- writing -------------------------------------------------------------
    def append(self, kind, body, blen=-1):
        """Add a record; its seq (> 0), or -1 if refused (over the byte
        budget or max_record), counted in `refused`. Durable after flush().
        body: bytes, or a tuple of bytes parts framed in order (state.py's
        QMSG: its topic and payload are never joined, and a record deleted
        before write() is never built at all); blen, if given, its length.
        Kept as it is until then: don't change it."""
        if not KIND_MIN <= kind <= KIND_MAX:
            raise ValueError("kind %d" % kind)
        if blen < 0:
            blen = body_len(body)
        seq = self.next_seq
        if seq >= self._seq_grow:
            self._count_seq(seq)
        size = record_size(blen + self._seq_bytes)  # body: varint(seq) + body; framed by write()
        if blen > self.max_record or self.live_bytes + size > self.budget_bytes:
            self.refused += 1  # explicit and counted; the owner picks what to drop
            return -1
        self.next_seq = seq + 1
        self._live[seq] = size
        self.live_bytes += size
        pend = self._pend
        if not pend:
            self._pbase = seq
        pend.append((kind, seq, body, blen))
        self._pbytes += size
        self._room -= size
        if self._room <= 0:
            self.flush()
        return seq

    def _count_seq(self, seq):
        n = 1
        top = 0x80
        while seq >= top:
            n += 1
            top <<= 7
        self._seq_bytes = n
        self._seq_grow = top

    def delete(self, seq, elide=True, quiet=False):
        """Retire a record (a tombstone goes in the batch). False if seq is
        not live. A record still in the batch is dropped from it instead,
        unless elide is False: a record a later one replaces through a
        back reference (state.py: RELEASED -> INFLIGHT -> QUEUED) must reach
        the flash, or a torn batch could keep the later one and lose the
        link to what it replaced. quiet: no output will promise this
        deletion (an ended delivery), so settled() does not wait for its
        tombstone."""
        size = self._live.pop(seq, None)
        if size is None:
            return False
        self.live_bytes -= size
        i = seq - self._pbase
        if elide and 0 <= i < len(self._pend):
            # Not framed yet: it never reaches the flash, nor does a
            # tombstone (a subscriber that acks within the sync's time
            # costs no flash at all)
            self._pend[i] = None
            self._pbytes -= size
            self._room += size
            return True
        if seq > self.top:
            self._redo_live -= size  # framed, not written yet (a failed write)
        else:
            self._seg_of(seq)[_LIVE] -= size
        # A run of consecutive seqs takes one tombstone, framed when the run
        # ends or the batch is written: a tombstone only ever moves later,
        # which replay already meets in a torn batch (state.py's rules).
        lo = self._del_lo
        if lo and seq == self._del_hi + 1:
            self._del_hi = seq
        elif lo and seq == lo - 1:
            self._del_lo = seq
        else:
            if lo:
                self._put_dels()
            self._del_lo = self._del_hi = seq
        if not quiet and self._tomb_batch < 0:
            self._tomb_batch = self.next_seq - 1  # (settled())
        if self._room <= 0:
            self.flush()
        return True

    def _put_dels(self):
        lo = self._del_lo
        n = self._del_hi - lo + 1
        if n == 1:
            self._room -= append_seq_record(self._pending, K_DEL, lo, b"")
        else:
            body = bytearray()
            put_varint(body, n)
            self._room -= append_seq_record(self._pending, K_DELS, lo, body)
        self._del_lo = 0

    def _seg_of(self, seq):
        # The written segment holding seq (binary search on top)
        segs = self._segs
        lo = 0
        hi = len(segs) - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if segs[mid][_TOP] < seq:
                lo = mid + 1
            else:
                hi = mid
        return segs[lo]

    def _reset_room(self):
        # An empty batch: it is written once it holds batch_bytes (H7), or
        # at every change with sync="always"
        self._room = 0 if self.sync == "always" else self.batch_bytes

    def pending(self):
        """Bytes of the batch not written yet (0: everything is written;
        synced too, unless sync="never" or a sync() elsewhere is still on
        its way: see write())."""
        return self._pbytes + len(self._redo) + len(self._pending) + (1 if self._del_lo else 0)

    def settled(self):
        """Output the owner queued while next_seq - 1 was at most this may
        go out: every record appended and every deletion made by then is
        durable, or void. A record deleted before write() reached it is
        void: it never reaches the flash, and what promised it needs no
        flash any more (a delivery acknowledged, a session ended). So a
        runtime that holds each piece of output until settled() reaches
        what next_seq - 1 was when it was queued lets an ack go as soon as
        what it promises is kept, without waiting for a sync when that was
        acknowledged onward first (tcp_cpython.py). flush() makes it
        next_seq - 1."""
        if self._unsynced is not None or self._redo:
            s = self.synced  # written, not synced (or a failed write): not yet
        else:
            pend = self._pend
            i = self._pc
            n = len(pend)
            while i < n and pend[i] is None:  # (amortized: the cursor only moves on)
                i += 1
            self._pc = i
            s = self._pbase + i - 1 if i < n else self.next_seq - 1
        # A tombstone made when next_seq - 1 was t: output queued since then
        # may promise the deletion (UNSUBACK, PUBCOMP, a clean CONNACK)
        t = self._tomb_written if self._tomb_written >= 0 else self._tomb_batch
        if 0 <= t <= s:
            s = t - 1
        return s

    def is_live(self, seq):
        return seq in self._live

    def size_of(self, seq):
        """Bytes live record seq takes on flash (what the budget counts); 0
        if not live."""
        return self._live.get(seq, 0)

    def __len__(self):  # live records
        return len(self._live)

    def flush(self):
        """Write the batch with one append and one sync (none with
        sync="never"). Returns the bytes written. A failed write leaves the
        batch in RAM and moves later writes to a new segment, so a half-
        written batch can only ever be a torn tail."""
        n = self.write()
        if self._unsynced is not None:  # (this batch, and one synced elsewhere)
            if self.sync != "never":
                try:
                    self.files.sync(self._name(self._segs[-1][_ID]))
                except OSError:
                    self.sync_failed()
                    raise
            self.sync_done(self.top)
        return n

    def write(self):
        """The first half of flush(): append the batch to its segment, not
        synced; its bytes (0: none). A runtime that syncs elsewhere (on a
        helper process: tcp_cpython.py) then calls sync_done(top) with `top` as
        write() left it, or sync_failed(). Until then a later write() stays
        in the same segment, so a flush() in between syncs both batches."""
        if self._del_lo:
            self._put_dels()
        # Records, then tombstones: a record that replaces another is on
        # flash before the deletion of the old one (state.py's rule)
        data = self._redo
        for e in self._pend:
            if e is not None:
                append_seq_record(data, e[0], e[1], e[2], e[3])
        data.extend(self._pending)
        self._redo = data  # framed: a failed write writes it again
        self._redo_live += self._pbytes
        self._pend = []
        self._pc = 0
        self._pbytes = 0
        self._pending = bytearray()
        self._reset_room()
        if not data:
            return 0
        f = self.files
        seg = self._segs[-1] if self._segs else None
        created = seg is None or seg[_SIZE] >= self.segment_bytes or self._rotate
        if created and self._unsynced is not None and seg is not None:
            if self._rotate:
                raise OSError(_EAGAIN)  # a failed write, a sync in flight: retry after it
            created = False
        try:
            if created:
                seg = self._start_segment(f)
            name = self._name(seg[_ID])
            f.append(name, data)
            if created and self.sync != "never":
                f.sync_dir()  # the new file's name must survive too
        except OSError:
            # What reached the file is unknown: never append after it. Its
            # recorded size stays at the last good write, so reads stop there
            # and the next open() cuts whatever was torn.
            self._rotate = True
            raise
        self.written += len(data)
        seg[_SIZE] += len(data)
        seg[_TOP] = self.top = self.next_seq - 1
        seg[_LIVE] += self._redo_live
        self._redo_live = 0
        self.disk_bytes += len(data)
        self._rotate = False
        self._unsynced = data if self._unsynced is None else self._unsynced + data
        if self._tomb_written < 0:
            self._tomb_written = self._tomb_batch
        self._tomb_batch = -1
        self._redo = bytearray()
        self._due = -1
        return len(data)

    def sync_done(self, top):
        """What write() wrote up to seq top is durable."""
        if top > self.synced:
            self.synced = top
        if top >= self.top:
            self._unsynced = None
            self._tomb_written = -1
        if self.sync != "never":
            self.syncs += 1

    def sync_failed(self):
        """The sync after write() failed: what it wrote may never reach the
        flash. Its records go back in the batch, and the next write starts
        a new segment (a rewritten record's later copy is ignored by
        open(): _index)."""
        if self._unsynced is not None:
            self._redo = self._unsynced + self._redo
            self._unsynced = None
        if self._tomb_written >= 0:  # (older than the batch's)
            self._tomb_batch = self._tomb_written
            self._tomb_written = -1
        self._rotate = True

    def sync_handle(self):
        """A handle another thread or process can sync what write() wrote through
        (edge/runtime/flash.py); None if nothing waits for a sync (or
        sync="never"), or the files have no such handle: flush() then."""
        h = getattr(self.files, "sync_handle", None)
        if h is None or self._unsynced is None or self.sync == "never":
            return None
        return h(self._name(self._segs[-1][_ID]))

    def _start_segment(self, f):
        sid = self._new_id()
        head = bytearray(HEADER)
        append_record(head, K_META, self._meta(self._floor))
        f.append(self._name(sid), head)
        self.written += len(head)
        seg = [sid, len(head), READERS[HEADER[4]], self.top, 0]
        self._segs.append(seg)
        self.disk_bytes += len(head)
        return seg

    def _new_id(self):
        # Taken before the first write, so a failed creation is never reused
        self._next_id += _ID_STEP
        return self._next_id - _ID_STEP

    def _meta(self, floor):
        body = bytearray()
        put_varint(body, self.next_seq)
        put_varint(body, floor)
        return body

    def tick(self, now):
        """Flush a batch that has waited max_delay_ms; compact when garbage
        outweighs live data (keeps flash use O(live): at most about
        2 x budget + a segment)."""
        if self.pending():
            if self._due < 0:
                self._due = now + self.max_delay_ms
            if now >= self._due:
                self.flush()
        if self.compact_failed:
            return
        segs = self._segs
        if len(segs) > 1 and not segs[0][_LIVE]:
            self.compact(self._prefix(True))  # dead files: removed, not read
        garbage = self.disk_bytes - self.live_bytes
        if garbage > max(self.live_bytes, self.segment_bytes):
            self.compact(self._prefix(False))

    def _prefix(self, dead):
        # How many of the oldest segments to compact: dead, the leading run
        # with nothing live; else the longest prefix (the newest segment
        # left out) at least half garbage, so compaction reads at most twice
        # what it frees; 0 (all of them) when no prefix is.
        segs = self._segs
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

    def close(self):
        self.flush()
        self.files.close()

    def compact(self, upto=0):
        """Rewrite the live records of the oldest segments (all of them, or
        the first upto) into one new segment and drop the old ones
        (edge/store/compact.py). False if nothing changed."""
        from edge.store.compact import compact

        return compact(self, upto)

    # ---- reading -------------------------------------------------------------
    def _walk(self, seg):
        # Yield (kind, mv, pos, body_start, body_end) for each good record of
        # a segment, reading through one buffer of max_record + slack bytes
        # (a board can't hold a whole segment). mv is reused: copy what you
        # keep. Leaves (good_end, err or None) in self._walk_end.
        buf = self._rbuf()
        mv = memoryview(buf)
        cap = len(buf)
        name = self._name(seg[_ID])
        size = seg[_SIZE]
        decode = seg[_DECODE]
        base = HEADER_LEN  # file offset of mv[0]
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
                got = self.files.readinto(name, base + n, mv[n:cap])
                if got > 0:
                    n += got
                    continue
            if err is None and kind >= KIND_MIN and get_varint(mv, b0, b1)[0] < 0:
                err = _ERR_BODY
            if err is not None:
                self._walk_end = (base + pos, err)
                return
            yield kind, mv, pos, b0, b1
            pos = b1 + 4
        self._walk_end = (base + pos, None)

    def drop_buffer(self):
        """Free the read buffer (max_record + slack bytes) until the next
        read: a board reads only at start and when compacting."""
        self._buf = None

    def _rbuf(self):
        if self._buf is None:
            self._buf = bytearray(max(self.max_record + _SEQ_MAX + OVERHEAD, _HEAD_READ))
        return self._buf

    def replay(self, from_seq=0):
        """Yield (seq, kind, body) for every live record with seq >=
        from_seq, in append order. Flushes the batch first (records are read
        back from the files). Stop iterating early if you like; don't append
        or delete while iterating."""
        self.flush()
        last = from_seq - 1
        for seg in self._segs:
            if seg[_TOP] <= last:
                continue  # every record in it is older
            for kind, mv, pos, b0, b1 in self._walk(seg):
                if kind >= KIND_MIN:
                    seq, i = get_varint(mv, b0, b1)
                    if seq > last and seq in self._live:  # see _index()
                        last = seq
                        yield seq, kind, bytes(mv[i:b1])

    # ---- recovery ------------------------------------------------------------
    def open(self, now=0):
        """Recover the directory and rebuild the live index; returns
        `problems`, a list of (name, offset, err, action), empty when all was
        clean. now (ms) names quarantined files. Removes what an interrupted
        compaction left, quarantines segments we can't read, cuts torn
        tails. Never raises for bad data, only for failing file operations."""
        f = self.files
        self.problems = []
        names = f.listdir()
        changed = False
        found = []
        for name in names:
            sid, tmp = self._parse(name)
            if tmp:
                f.remove(name)  # unfinished compaction: the old files are whole
                changed = True
            elif sid >= 0:
                found.append(sid)
        found.sort()
        self._next_id = found[-1] + _ID_STEP if found else 1
        segs = []
        floor = 0
        for sid in found:
            seg, seg_floor = self._open_segment(sid, names, now)
            if seg is not None:
                segs.append(seg)
                floor = max(floor, seg_floor)
        self._segs = []
        for seg in segs:
            if seg[_ID] < floor:
                f.remove(self._name(seg[_ID]))  # superseded by a compaction
                changed = True
            else:
                self._segs.append(seg)
        self._floor = floor
        self.compact_failed = False
        self._index()
        if changed or self.problems:
            f.sync_dir()  # removes, quarantine renames (CPython)
        return self.problems

    def _open_segment(self, sid, names, now):
        # Check header and META -> ([id, size, decode], floor) or (None, 0)
        f = self.files
        name = self._name(sid)
        size = f.size(name)
        mv = memoryview(self._rbuf())
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
            self.problems.append((name, 0, err, "removed"))
            return None, 0
        if err is not None:
            self._quarantine(name, names, now, err)
            return None, 0
        floor = get_varint(mv, get_varint(mv, b0, b1)[1], b1)[0]
        return [sid, size, READERS[v], 0, 0], floor  # _index() sets top, live

    def _quarantine(self, name, names, now, err):
        q = "%s.corrupt-%d" % (name, now)
        k = 1
        while q in names:  # a second one in the same ms (or after a reboot)
            k += 1
            q = "%s.corrupt-%d-%d" % (name, now, k)
        self.files.rename(name, q)
        names.append(q)
        self.quarantined += 1
        self.problems.append((name, 0, err, q))

    def _index(self):
        # Pass over every record: live index, byte counts, next seq; cut
        # each segment at its first bad record.
        live = self._live = {}
        nbytes = 0
        disk = 0
        nxt = self.next_seq
        top = 0  # highest record seq seen
        for seg in self._segs:
            for kind, mv, pos, b0, b1 in self._walk(seg):
                n, i = get_varint(mv, b0, b1)
                if kind >= KIND_MIN:
                    if n > seg[_TOP]:
                        seg[_TOP] = n
                    # Seqs only grow through the log; a seq seen again is a
                    # batch rewritten after a failed sync (flush()): one copy.
                    if n > top:
                        top = n
                        live[n] = b1 + 4 - pos
                        nbytes += b1 + 4 - pos
                elif kind == K_DEL:
                    nbytes -= live.pop(n, 0)
                elif kind == K_DELS:
                    for x in range(n, n + get_varint(mv, i, b1)[0]):
                        nbytes -= live.pop(x, 0)
                elif kind == K_META:
                    nxt = max(nxt, n)
            good, err = self._walk_end
            if err is not None:
                name = self._name(seg[_ID])
                self.files.truncate(name, good)
                self.problems.append((name, good, err, "cut"))
                seg[_SIZE] = good
            disk += seg[_SIZE]
        self.next_seq = nxt = max(nxt, top + 1)
        self.synced = self.top = nxt - 1
        self.live_bytes = nbytes
        self.disk_bytes = disk
        last = 0
        for seg in self._segs:  # tops only grow (a cut segment's too)
            if seg[_TOP] < last:
                seg[_TOP] = last
            last = seg[_TOP]
        if self._segs:
            for seq in live:
                self._seg_of(seq)[_LIVE] += live[seq]
