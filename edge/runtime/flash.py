# The `files` object edge/store/log.py writes through: one directory of
# real files, on both runtimes. The only file I/O of the store. Names are
# plain file names inside the directory. The interface:
#   listdir() -> [name]          size(name) -> int
#   readinto(name, offset, mv) -> n (0 at the end)
#   append(name, data)           creates the file if missing
#   sync(name)                   what was appended is durable
#   sync_handle(name)            CPython: an fd to sync off the loop (or None)
#   sync_dir()                   creates, renames and removes are durable
#   rename(old, new)             atomic; remove(name)
#   truncate(name, size)         durable when it returns
#   close()
#
# Durability differs by runtime (docs/design.md "Platform notes"):
# - CPython: sync = flush + os.fsync; sync_dir fsyncs the directory, since a
#   new or renamed name is durable only then; truncate is os-level.
# - MicroPython has no os.fsync, os.replace or file.truncate. littlefs (and
#   FAT) commit a file on flush/close, so sync = flush + close (the next
#   append reopens). A littlefs rename or remove is one atomic metadata
#   commit, so sync_dir has nothing to do. truncate copies the prefix to a
#   temporary file and renames it over the original.
# CPython-only calls live in flash_cpython.py, imported only when os.fsync
# exists (the board's .mpy tree doesn't have that file at all).
#
# Pieces (MicroPython: `Flash` is `Pieces` there; docs/persistence.md "Flash
# wear"): on littlefs a sync of an appended file copies the file's last
# block into a freshly erased one, one erase per sync, which at one persisted
# message a second wears a 2 MiB partition out in 1.6 years. A file small
# enough to be *inline* (kept in its directory's metadata log: up to 128
# bytes with MicroPython's geometry) costs a metadata commit instead, and a
# metadata block is erased only when its log is full. So a small synced
# batch is not appended to its file: it becomes a piece, a file of its own
# named `<name>+<offset>` (where its bytes belong in <name>), and up to
# _PIECES of them are later appended to the file in one write (one erase),
# then removed. Readers see one file: size() and readinto() span the file
# and its pieces; listdir() shows the file, not the pieces. Crash safety: a
# piece is written whole or not at all (a littlefs commit); after a merge's
# commit the file covers the pieces' offsets, so at the next open a piece
# below the file's size was merged and is removed, and the rest, following
# on from the file without a gap, are its tail. That takes littlefs's atomic
# commits, which a board's store has (docs/firmware.md); `Files` (CPython)
# never makes pieces and merges any it finds (a board's store read on a Pi).
import os

if hasattr(os, "fsync"):
    from edge.runtime.flash_cpython import fsync_dir, fsync_file, handle_of, truncate_file
else:
    fsync_dir = fsync_file = handle_of = truncate_file = None  # type: ignore[assignment]

_CUT_SUFFIX = ".cut~"  # truncate()'s temporary copy (MicroPython)
_COPY = 512            # copy buffer for truncate() on MicroPython
_ENOSPC = 28
_PIECE = "+"           # <name>+<offset>: a piece of <name> (the head comment)
_PIECE_MAX = 128       # bytes: littlefs's inline limit with MicroPython's geometry
_PIECES = 64           # pieces a file may have before they are merged into it


class Files:
    """Files in `path` (created if missing; its parent must exist). Keeps at
    most one file open for appending and one for reading."""

    def __init__(self, path):
        self.path = path.rstrip("/") or "/"
        try:
            os.mkdir(self.path)
        except OSError:
            pass  # exists
        self._w = None  # (name, file) open for append
        self._r = None  # (name, file) open for reading
        # name -> [offset of its first piece, end of its last, bytearray of
        # their lengths]: a few bytes a piece, in order
        self._pieces = {}
        found = []
        for name in os.listdir(self.path):
            if name.endswith(_CUT_SUFFIX):
                os.remove(self._p(name))  # a truncate cut short: original intact
            elif _PIECE in name:
                found.append(name)
        if found:
            self._adopt(found)

    def _p(self, name):
        return self.path + "/" + name

    def listdir(self):
        names = [n for n in os.listdir(self.path) if _PIECE not in n]
        return names + [n for n in self._pieces if n not in names]  # (only pieces yet)

    def size(self, name):
        e = self._pieces.get(name)
        if e:
            return e[1]
        return os.stat(self._p(name))[6]

    def readinto(self, name, offset, mv):
        r = self._r
        if r is None or r[0] != name:
            self._close_r()
            r = self._r = (name, open(self._p(name), "rb"))
        r[1].seek(offset)
        return r[1].readinto(mv) or 0

    def append(self, name, data):
        r = self._r
        if r is not None and r[0] == name:
            # littlefs: a handle opened before an append and its commit
            # never sees the bytes (its size stays): the next read reopens
            self._close_r()
        w = self._w
        if w is None or w[0] != name:
            self._close_w()
            w = self._w = (name, open(self._p(name), "ab"))
        n = w[1].write(data)
        if n is not None and n != len(data):
            raise OSError(_ENOSPC)  # a short write: full filesystem
        if fsync_file is not None:
            w[1].flush()  # CPython: into the OS now, even with sync="never"

    def sync(self, name):
        w = self._w
        if w is None or w[0] != name:
            return  # nothing appended since the last sync
        if fsync_file is not None:
            fsync_file(w[1])
        else:
            w[1].flush()
            w[1].close()  # the commit on littlefs and FAT
            self._w = None
            r = self._r
            if r is not None and r[0] == name:
                self._close_r()  # opened since the append: as in append()

    def sync_handle(self, name):
        """CPython: the descriptor name's appended data can be fsynced
        through off the loop (flash_cpython.Syncer hands its helper a copy
        at once: it is only valid until the next append or close here);
        None where there is none (MicroPython: sync() it is)."""
        w = self._w
        if handle_of is None or w is None or w[0] != name:
            return None
        return handle_of(w[1])

    def sync_dir(self):
        if fsync_dir is not None:
            fsync_dir(self.path)

    def rename(self, old, new):
        self._merge(old)
        self._release(old)
        self._release(new)
        os.rename(self._p(old), self._p(new))

    def remove(self, name):
        self._release(name)
        e = self._pieces.pop(name, None)
        for at, _ in _spans(e) if e else ():
            os.remove(self._p(_piece(name, at)))
        try:
            os.remove(self._p(name))
        except OSError:
            pass  # (only pieces: never created)

    def truncate(self, name, size):
        self._merge(name)
        self._release(name)
        if truncate_file is not None:
            truncate_file(self._p(name), size)
            return
        tmp = name + _CUT_SUFFIX
        buf = bytearray(_COPY)
        mv = memoryview(buf)
        with open(self._p(name), "rb") as src, open(self._p(tmp), "wb") as dst:
            left = size
            while left > 0:
                n = src.readinto(mv[:min(left, _COPY)]) or 0
                if n <= 0:
                    break
                dst.write(mv[:n])
                left -= n
            dst.flush()
        try:
            os.rename(self._p(tmp), self._p(name))  # atomic replace: littlefs, POSIX
        except OSError:
            os.remove(self._p(name))  # FAT won't rename over a file
            os.rename(self._p(tmp), self._p(name))

    def close(self):
        for name in list(self._pieces):
            self._merge(name)  # a clean stop leaves whole files
        self._close_w()
        self._close_r()

    # ---- pieces: merging (the head comment) -----------------------------------
    def _merge(self, name):
        # name's pieces appended to it in one commit, then removed: a crash
        # between leaves pieces below the file's size, removed at the next
        # open (_adopt)
        e = self._pieces.pop(name, None)
        if not e:
            return
        self._close_r()
        buf = bytearray(e[1] - e[0])
        mv = memoryview(buf)
        for at, n in _spans(e):
            with open(self._p(_piece(name, at)), "rb") as f:
                f.readinto(mv[at - e[0]:at - e[0] + n])
        Files.append(self, name, buf)
        Files.sync(self, name)
        for at, _ in _spans(e):
            os.remove(self._p(_piece(name, at)))

    def _adopt(self, found):
        # Pieces a run left. One below its file's size whose bytes the file
        # holds there was merged: removed. One whose bytes the file does not
        # hold there (a merge torn on a filesystem without atomic commits,
        # or bytes written behind the store's back) is the truth: the file
        # is cut back to it. The rest are the file's tail while they follow
        # on without a gap. Files (CPython) then merges them: it makes no
        # pieces of its own.
        by = {}
        for n in found:
            name, _, at = n.rpartition(_PIECE)
            by.setdefault(name, []).append(int(at))
        for name, ats in by.items():
            ats.sort()
            end = _size_or_0(self._p(name))
            e = None
            for at in ats:
                n = _size_or_0(self._p(_piece(name, at)))
                if not n:
                    os.remove(self._p(_piece(name, at)))  # (created, never written)
                    continue
                if e is None and at + n <= end and self._holds(name, at, n):
                    os.remove(self._p(_piece(name, at)))  # merged
                    continue
                if e is None and at < end:
                    Files.truncate(self, name, at)  # (no pieces known yet: a plain cut)
                    end = at
                if e is None and at == end:
                    e = self._pieces[name] = [at, at, bytearray()]
                if e is None or at != e[1]:  # after a gap: never the file's tail
                    os.remove(self._p(_piece(name, at)))
                elif n < 256:  # (its length in a byte)
                    e[2].append(n)
                    e[1] += n
                else:
                    # larger than any piece written here (bytes added behind
                    # the store's back): into the file now, the pieces before it first
                    Files._merge(self, name)
                    Files.append(self, name, self._bytes(_piece(name, at)))
                    Files.sync(self, name)
                    os.remove(self._p(_piece(name, at)))
                    e = self._pieces[name] = [at + n, at + n, bytearray()]
            if name in self._pieces and not self._pieces[name][2]:
                del self._pieces[name]
        if type(self) is Files:
            for name in list(self._pieces):
                self._merge(name)

    def _holds(self, name, at, n):
        # whether the file holds piece `at`'s n bytes at offset at
        with open(self._p(name), "rb") as f:
            f.seek(at)
            return f.read(n) == self._bytes(_piece(name, at))

    def _bytes(self, name):
        with open(self._p(name), "rb") as f:
            return f.read()

    def _release(self, name):
        if self._w is not None and self._w[0] == name:
            self._close_w()
        if self._r is not None and self._r[0] == name:
            self._close_r()

    def _close_w(self):
        if self._w is not None:
            self._w[1].close()
            self._w = None

    def _close_r(self):
        if self._r is not None:
            self._r[1].close()
            self._r = None


class Pieces(Files):
    """Files that keep small synced batches as pieces (the head comment)."""

    def __init__(self, path):
        self._pending = None  # (name, bytearray): appended, not synced, small yet
        self._direct = None   # the file a batch is being appended to, unsynced
        Files.__init__(self, path)

    def readinto(self, name, offset, mv):
        e = self._pieces.get(name)
        if not e:
            return Files.readinto(self, name, offset, mv)
        if offset < e[0]:
            return Files.readinto(self, name, offset, mv[:e[0] - offset])  # the file's own
        for at, n in _spans(e):
            if at <= offset < at + n:
                with open(self._p(_piece(name, at)), "rb") as f:
                    f.seek(offset - at)
                    return f.readinto(mv[:at + n - offset]) or 0
        return 0  # at the end

    def append(self, name, data):
        p = self._pending
        if p is not None:
            if p[0] == name and len(p[1]) + len(data) <= _PIECE_MAX:
                p[1].extend(data)
                return
            self._unpend()  # too large for a piece now: into the file
        elif self._direct != name and len(data) <= _PIECE_MAX:
            self._pending = (name, bytearray(data))  # a piece, if it stays small
            return
        if name in self._pieces:
            self._merge(name)  # the pieces go first
        Files.append(self, name, data)
        self._direct = name

    def sync(self, name):
        p = self._pending
        if p is not None and p[0] == name:
            e = self._pieces.get(name)
            if e is None or len(e[2]) < _PIECES:
                at = e[1] if e else _size_or_0(self._p(name))
                with open(self._p(_piece(name, at)), "wb") as f:  # closed: committed
                    n = f.write(p[1])
                if n is not None and n != len(p[1]):
                    raise OSError(_ENOSPC)  # (a torn piece: a torn tail at the next open)
                self._pending = None
                if e is None:
                    e = self._pieces[name] = [at, at, bytearray()]
                e[2].append(len(p[1]))
                e[1] += len(p[1])
                return
            self._unpend()
        if self._direct == name:
            self._direct = None
        Files.sync(self, name)

    def sync_handle(self, name):
        return None  # (MicroPython: sync() it is)

    def _unpend(self):
        # the pending batch into its file, after the file's pieces (unsynced:
        # its sync() follows)
        name, data = self._pending
        self._pending = None
        if name in self._pieces:
            self._merge(name)
        Files.append(self, name, data)
        self._direct = name

    def _merge(self, name):
        p = self._pending
        if p is not None and p[0] == name:
            self._unpend()  # (pieces first, inside)
            return
        Files._merge(self, name)

    def remove(self, name):
        p = self._pending
        if p is not None and p[0] == name:
            self._pending = None
        if self._direct == name:
            self._direct = None
        Files.remove(self, name)


Flash = Files if fsync_file is not None else Pieces


def _spans(e):
    # (offset, length) of each piece of a _pieces entry
    at = e[0]
    for n in e[2]:
        yield at, n
        at += n


def _piece(name, at):
    return "%s%s%d" % (name, _PIECE, at)


def _size_or_0(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0  # not created yet (a file whose bytes are all pieces)
