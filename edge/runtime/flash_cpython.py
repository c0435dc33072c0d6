# CPython-only halves of edge/runtime/flash.py. Named *cpython* so the
# MicroPython type check and the board's .mpy tree leave it out (os.open,
# os.fsync and truncate don't exist there).
import os


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
