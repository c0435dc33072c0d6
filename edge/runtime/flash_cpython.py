# CPython-only halves of edge/runtime/flash.py. Named *cpython* so the
# MicroPython type check and the board's .mpy tree leave it out (os.open,
# os.fsync and truncate don't exist there).
import os
import threading


def fsync_file(f):
    """f's data is on the disk, not only in the page cache."""
    f.flush()
    os.fsync(f.fileno())


def dup_fd(f):
    """A descriptor of f's file that outlives f (closed by whoever syncs
    it): the runtime fsyncs a segment on a thread while the loop may go on
    to close or remove it."""
    f.flush()
    return os.dup(f.fileno())


def fsync_fd(fd):
    """Sync fd and close it (on the sync thread: os.fsync lets go of the GIL)."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    """Creates, renames and removes in `path` survive a power cut: on ext4
    and most POSIX filesystems a rename is durable only once its directory
    is fsynced (as SQLite and PostgreSQL do)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate_file(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)
        fsync_file(f)


class Syncer:
    """One thread that fsyncs the descriptors the event loop hands it, one
    at a time, and says when each is done through a pipe the loop reads.
    Not loop.run_in_executor: its queue, future and locks took about 17
    futex calls per sync, each a switch between the threads; here the
    thread holds the GIL only between its read, fsync and write calls."""

    def __init__(self, loop, done):
        self.loop = loop
        self.done = done  # done(errno): on the loop, 0 when the sync succeeded
        self._req_r, self._req_w = os.pipe()
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        loop.add_reader(self._done_r, self._ready)
        self._thread = threading.Thread(target=self._run, name="edge-fsync", daemon=True)
        self._thread.start()

    def submit(self, fd):
        os.write(self._req_w, fd.to_bytes(4, "little", signed=True))

    def _run(self):
        while True:
            req = os.read(self._req_r, 4)
            if len(req) < 4:
                break  # close()
            err = 0
            try:
                fsync_fd(int.from_bytes(req, "little", signed=True))
            except OSError as e:
                err = e.errno or 5  # (EIO)
            os.write(self._done_w, bytes((min(err, 255),)))

    def _ready(self):
        try:
            got = os.read(self._done_r, 64)
        except BlockingIOError:
            return
        for err in got:
            self.done(err)

    def close(self):
        self.loop.remove_reader(self._done_r)
        os.close(self._req_w)  # the thread reads EOF and ends
        self._thread.join(5)
        for fd in (self._req_r, self._done_r, self._done_w):
            os.close(fd)
