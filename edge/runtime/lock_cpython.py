# The data directory's lock on CPython (lock.py says why): an exclusive
# flock on <dir>/lock, which the kernel drops when the process dies, so even
# a kill -9 leaves no stale lock. The file keeps the holder's pid for the
# message a second broker prints (and for a MicroPython broker's check).
# The file stays after a stop, emptied (unlinking a locked file would let a
# third broker lock a new one while a second still holds the old).
import fcntl
import os

from edge.runtime.lock import NAME, check, held


def acquire(d, log):
    """Take d's lock or raise held(); the descriptor release() takes."""
    fd = os.open(os.path.join(d, NAME), os.O_RDWR | os.O_CREAT, 0o644)  # not inherited
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip()
            raise held(d, pid or "unknown") from None
        check(d, log, os.getpid())  # a MicroPython broker's record
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


def release(fd):
    os.ftruncate(fd, 0)  # no pid left behind for a MicroPython broker to take over
    os.close(fd)
