# An append-only, segmented record log on flash (STYLE H9), sans-IO: every
# file operation goes through an injected `files` object (edge/runtime/
# flash.py on a device, an in-memory fake in tests), and time comes in as
# now_ms (H5). The owner (sessions, retained store, outbox) gives each record
# a kind and a body and gets back a sequence number; delete(seq) retires it.
#
# Files, in one directory, named PREFIX.<id>:
#   HEADER, META(next_seq, floor), then records in append order.
# A user record's body is varint(seq) + the owner's body; a DEL record's body
# is varint(seq). META is the first record of every segment: next_seq keeps
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
# on every change, "never" writes on tick but never syncs.
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
    append_record, append_seq_record, get_varint, header_version, put_varint,
)

K_META = const(1)   # varint next_seq, varint floor
K_DEL = const(2)    # varint seq
KIND_MIN = const(16)  # kinds below are the log's own (3..15 reserved)
KIND_MAX = const(254)

SYNC_MODES = ("always", "batch", "never")
_SEQ_MAX = const(8)     # varint bytes of a seq (get_varint's bound)
_HEAD_READ = const(32)  # HEADER + the largest META record
TMP_SUFFIX = ".new"     # compaction output before its rename
_ERR_BODY = "body"      # good CRC, body not ours (a seq that won't parse)

# Segment entry fields: [id, size, decode, top]. top is an upper bound on
# the seqs of the segment's records, so replay(from_seq) (the outbox reading
# on from its cursor) skips whole segments instead of walking them.
_ID = const(0)
_SIZE = const(1)
_DECODE = const(2)
_TOP = const(3)


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
        self.live_bytes = 0
        self.disk_bytes = 0     # all segments, garbage included
        self.refused = 0        # appends over the budget or max_record
        self.syncs = 0
        self.written = 0        # bytes appended to segment files, ever
        self.compactions = 0
        self.quarantined = 0
        self.compact_failed = False
        self.problems = []      # (name, offset, err, action) found by open()
        self._segs = []         # [id, size, decode, top], oldest first
        self._live = {}         # seq -> record size on flash
        self._floor = 0
        self._next_id = 1
        self._rotate = False    # a write failed: the next flush starts a segment
        self._pending = bytearray()
        self._due = -1          # tick() flushes the batch at this time
        self._buf = None        # read buffer, allocated on first read
        self._walk_end = (0, None)

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
    def append(self, kind, body):
        """Add a record; its seq (> 0), or -1 if refused (over the byte
        budget or max_record), counted in `refused`. Durable after flush()."""
        if not KIND_MIN <= kind <= KIND_MAX:
            raise ValueError("kind %d" % kind)
        seq = self.next_seq
        buf = self._pending
        start = len(buf)
        size = append_seq_record(buf, kind, seq, body)
        if len(body) > self.max_record or self.live_bytes + size > self.budget_bytes:
            # (rare: framing first is cheaper than sizing twice; a copy, as
            # MicroPython's bytearray has no slice deletion)
            self._pending = buf[:start]
            self.refused += 1  # explicit and counted; the owner picks what to drop
            return -1
        self.next_seq = seq + 1
        self._live[seq] = size
        self.live_bytes += size
        self._after_change()
        return seq

    def delete(self, seq):
        """Retire a record (a tombstone goes in the batch). False if seq is
        not live."""
        size = self._live.pop(seq, None)
        if size is None:
            return False
        self.live_bytes -= size
        append_seq_record(self._pending, K_DEL, seq, b"")
        self._after_change()
        return True

    def _after_change(self):
        if self.sync == "always" or len(self._pending) >= self.batch_bytes:
            self.flush()

    def pending(self):
        """Bytes of the batch not written yet (0: everything is written,
        and synced unless sync="never")."""
        return len(self._pending)

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
        data = self._pending
        if not data:
            return 0
        f = self.files
        seg = self._segs[-1] if self._segs else None
        created = seg is None or seg[_SIZE] >= self.segment_bytes or self._rotate
        try:
            if created:
                seg = self._start_segment(f)
            name = self._name(seg[_ID])
            f.append(name, data)
            self.written += len(data)
            seg[_SIZE] += len(data)
            seg[_TOP] = self.next_seq - 1
            self.disk_bytes += len(data)
            if self.sync != "never":
                f.sync(name)
                if created:
                    f.sync_dir()  # the new file's name must survive too
                self.syncs += 1
        except OSError:
            # What reached the file is unknown: never append after it. Its
            # recorded size stays at the last good write, so reads stop there
            # and the next open() cuts whatever was torn.
            self._rotate = True
            raise
        self._rotate = False
        self._pending = bytearray()
        self._due = -1
        self.synced = self.next_seq - 1
        return len(data)

    def _start_segment(self, f):
        sid = self._new_id()
        head = bytearray(HEADER)
        append_record(head, K_META, self._meta(self._floor))
        f.append(self._name(sid), head)
        self.written += len(head)
        seg = [sid, len(head), READERS[HEADER[4]], 0]
        self._segs.append(seg)
        self.disk_bytes += len(head)
        return seg

    def _new_id(self):
        # Taken before the first write, so a failed creation is never reused
        self._next_id += 1
        return self._next_id - 1

    def _meta(self, floor):
        body = bytearray()
        put_varint(body, self.next_seq)
        put_varint(body, floor)
        return body

    def tick(self, now):
        """Flush a batch that has waited max_delay_ms; compact when garbage
        outweighs live data (keeps flash use O(live): at most about
        2 x budget + a segment)."""
        if self._pending:
            if self._due < 0:
                self._due = now + self.max_delay_ms
            if now >= self._due:
                self.flush()
        garbage = self.disk_bytes - self.live_bytes
        if garbage > max(self.live_bytes, self.segment_bytes) and not self.compact_failed:
            self.compact()

    def close(self):
        self.flush()
        self.files.close()

    def compact(self):
        """Rewrite the live records into one new segment and drop the old
        ones (edge/store/compact.py). False if nothing changed."""
        from edge.store.compact import compact

        return compact(self)

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
        self._next_id = found[-1] + 1 if found else 1
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
        return [sid, size, READERS[v], 0], floor  # _index() sets top

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
        self.synced = nxt - 1
        self.live_bytes = nbytes
        self.disk_bytes = disk
