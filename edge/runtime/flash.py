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
import os

if hasattr(os, "fsync"):
    from edge.runtime.flash_cpython import fsync_dir, fsync_file, handle_of, truncate_file
else:
    fsync_dir = fsync_file = handle_of = truncate_file = None  # type: ignore[assignment]

_CUT_SUFFIX = ".cut~"  # truncate()'s temporary copy (MicroPython)
_COPY = 512            # copy buffer for truncate() on MicroPython
_ENOSPC = 28


class Flash:
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
        for name in os.listdir(self.path):
            if name.endswith(_CUT_SUFFIX):
                os.remove(self._p(name))  # a truncate cut short: original intact

    def _p(self, name):
        return self.path + "/" + name

    def listdir(self):
        return os.listdir(self.path)

    def size(self, name):
        return os.stat(self._p(name))[6]

    def readinto(self, name, offset, mv):
        r = self._r
        if r is None or r[0] != name:
            self._close_r()
            r = self._r = (name, open(self._p(name), "rb"))
        r[1].seek(offset)
        return r[1].readinto(mv) or 0

    def append(self, name, data):
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
        self._release(old)
        self._release(new)
        os.rename(self._p(old), self._p(new))

    def remove(self, name):
        self._release(name)
        os.remove(self._p(name))

    def truncate(self, name, size):
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
        self._close_w()
        self._close_r()

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
