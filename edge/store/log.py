# An append-only, segmented record log on flash (docs/design.md H9),
# sans-IO: every file operation goes through an injected `files` object
# (edge/runtime/flash.py on a device, an in-memory fake in tests), and time
# comes in as now_ms (docs/design.md H5). The owner (sessions, retained
# store, outbox) gives each record a kind and a body and gets back a
# sequence number; delete(seq) retires it.
#
# Files, in one directory, named PREFIX.<id>: HEADER, META, then records in
# append order (edge/store/record.py describes the log's own record kinds).
#
# Durability (docs/design.md "Delivery guarantees"): append()/delete() only
# add to an in-RAM batch; flush() writes the batch and syncs once (group
# commit: one flash block rewrite for many records, docs/design.md "Platform
# notes"). The caller that must not ack before a record is durable (PUBACK after a QoS 1 append,
# PUBREC after a QoS 2 pid) calls flush() before it sends; tick(now) bounds
# how long anything else waits (sync_max_delay_ms). sync = "always" flushes
# on every change, "never" writes on tick but never syncs. settled() tells a
# runtime that holds each ack until what it promises is kept (tcp_cpython.py)
# how far acks may go: a record deleted before it was written needs no flash
# (what promised it is done with it), and a deletion marked quiet (an ended
# delivery) holds no output back; any other deletion holds what is queued
# after it until its tombstone is durable.
#
# Reading (open's recovery, which installs what it found with its
# restore(), and replay) is edge/store/logread.py's, compaction
# edge/store/compact.py's: each is imported when first needed, and a board
# forgets logread after its start. The owned records' calls (release(),
# cursor(), read_owned()) are their owner's, edge/store/fqueue.py, loaded
# when a session first queues on flash: a store with none holds none of it.
#
# The files object's methods are listed (and implemented) in
# edge/runtime/flash.py; tests/core/_memfiles.py is the in-memory one.
from edge.compat import const
from edge.store.record import (
    HEADER, K_CUR, K_DEL, K_DELS, K_META, KIND_MAX, KIND_MIN, READERS, append_record, append_seq_record,
    body_len, put_varint, record_size,
)

SYNC_MODES = ("always", "batch", "never")
_EAGAIN = const(11)

# Segment entry fields, record.py's _SEG_* (private copies, folded away)
_ID = const(0)
_SIZE = const(1)
_TOP = const(3)
_LIVE = const(4)
_ID_STEP = const(2)


class Log:
    # True once a write or sync failed and its retry failed too, until a
    # sync succeeds: what the store is asked to keep now may not be kept, so
    # the broker refuses new QoS 1/2 publishes meanwhile (publish.py). One
    # failure alone (a sync helper that died, a hiccup) only holds the acks
    # until the retry. Class defaults: a store that never fails holds no
    # attribute for them.
    failing = False
    failures = 0  # failed writes and syncs since the last good sync
    # The owned kind (record.py): no _live entry, alive until its owner's
    # cursor passes it. _cur: owner -> cursor; _cpend: cursors not framed yet
    owned = 0
    _cur = None
    _cpend = None
    owned_stats = None  # what open() found: owner -> [records, bytes, first seq]

    def __init__(self, files, prefix="log", sync="batch", max_delay_ms=50,
                 budget_bytes=65536, max_record=1024, segment_bytes=16384,
                 batch_bytes=4096, owned=0):
        if sync not in SYNC_MODES:
            raise ValueError("sync %r" % sync)
        if owned:
            self.owned = owned
        self.files = files
        self.prefix = prefix
        self.sync = sync
        self.max_delay_ms = max_delay_ms
        self.budget_bytes = budget_bytes  # live records, bytes on flash
        self.max_record = max_record      # largest owner body accepted
        self.segment_bytes = segment_bytes
        self.batch_bytes = batch_bytes    # a batch this big flushes at once (docs/design.md H7)
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
        if kind != self.owned:
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
        # An empty batch: it is written once it holds batch_bytes (docs/design.md H7), or
        # at every change with sync="always"
        self._room = 0 if self.sync == "always" else self.batch_bytes

    def pending(self):
        """Bytes of the batch not written yet (0: everything is written;
        synced too, unless sync="never" or a sync() elsewhere is still on
        its way: see write())."""
        return (self._pbytes + len(self._redo) + len(self._pending) + (1 if self._del_lo else 0)
                + (1 if self._cpend else 0))

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
        mark = len(data)
        try:
            for e in self._pend:
                if e is not None:
                    append_seq_record(data, e[0], e[1], e[2], e[3])
            cp = self._cpend
            if cp:  # after the records they may pass (record.py)
                for o in cp:
                    body = bytearray()
                    put_varint(body, o)
                    put_varint(body, cp[o])
                    append_record(data, K_CUR, body)
        except MemoryError:
            # A full heap while framing the batch (a board's): the batch
            # stays pending, and what this call framed goes, so that the
            # flush the caller retries frames each record once
            data[mark:] = b""  # (MicroPython's bytearray has no del of a slice)
            raise
        self._cpend = None
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
            self._failed()
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
            if self.failures and not self._redo:
                self.failures = 0
                self.failing = False
        if self.sync != "never":
            self.syncs += 1

    def sync_failed(self):
        """The sync after write() failed: what it wrote may never reach the
        flash. Its records go back in the batch, and the next write starts
        a new segment (a rewritten record's later copy is ignored by
        open(): _index)."""
        self._failed()
        if self._unsynced is not None:
            self._redo = self._unsynced + self._redo
            self._unsynced = None
        if self._tomb_written >= 0:  # (older than the batch's)
            self._tomb_batch = self._tomb_written
            self._tomb_written = -1
        self._rotate = True

    def _failed(self):
        self.failures += 1
        if self.failures > 1:
            self.failing = True

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
            self._compact(True)  # dead files: removed, not read
        garbage = self.disk_bytes - self.live_bytes
        if garbage > max(self.live_bytes, self.segment_bytes):
            self._compact(False)

    def _compact(self, dead):
        # tick()'s: the oldest segments compact.prefix() picks
        from edge.store.compact import compact, prefix

        compact(self, prefix(self, dead))

    def close(self):
        self.flush()
        self.files.close()

    def compact(self, upto=0):
        """Rewrite the live records of the oldest segments (all of them, or
        the first upto) into one new segment and drop the old ones
        (edge/store/compact.py). False if nothing changed."""
        from edge.store.compact import compact

        return compact(self, upto)

    # ---- reading (edge/store/logread.py) ---------------------------------------
    def open(self, now=0):
        """Recover the directory and rebuild the live index; returns
        `problems`, a list of (name, offset, err, action), empty when all was
        clean. now (ms) names quarantined files. Removes what an interrupted
        compaction left, quarantines segments we can't read, cuts torn
        tails. Never raises for bad data, only for failing file operations."""
        from edge.store.logread import open_log

        return open_log(self, now)

    def replay(self, from_seq=0):
        """Yield (seq, kind, body) for every live record with seq >=
        from_seq, in append order. Flushes the batch first (records are read
        back from the files). Stop iterating early if you like; don't append
        or delete while iterating."""
        from edge.store.logread import replay

        return replay(self, from_seq)

    def drop_buffer(self):
        """Free the read buffer (max_record + slack bytes) until the next
        read: a board reads only at start and when compacting."""
        self._buf = None
