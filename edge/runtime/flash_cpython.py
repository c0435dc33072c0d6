# CPython-only halves of edge/runtime/flash.py. Named *cpython* so the
# MicroPython type check and the board's .mpy tree leave it out (os.open,
# os.fsync and truncate don't exist there).
import errno
import os


def fsync_file(f):
    """f's data is on the disk, not only in the page cache."""
    f.flush()
    os.fsync(f.fileno())


def handle_of(f):
    """f's descriptor, its buffer written out: what the Syncer's helper
    fsyncs (through a copy of its own: the loop may go on to close f)."""
    f.flush()
    return f.fileno()


def fsync_fd(fd):
    """Sync fd and close it (in the Syncer's helper process)."""
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


_REQ = [b"s"]
_MAX_FDS = 2  # descriptors per request: the store and the outbox (Syncer.submit)


class Syncer:
    """fsyncs, off the event loop, the descriptors the loop hands it, one at
    a time, and says when each is done. The fsync runs in a helper process
    (`python -m edge.runtime.flash_cpython`, this file), which gets each
    descriptor over a socketpair (SCM_RIGHTS) and answers with one byte,
    the errno (0: synced). Not a thread: a thread needs the GIL after each
    blocking call, and each handover to and from it stalled the loop; on 2
    busy cores the persistent fan-in ran about a fifth slower on a thread.
    The helper ends when its socket closes: with the broker, even on
    SIGKILL. If it dies, the sync in flight fails (the log writes the batch
    again) and the next sync starts a new helper (the runtime gives up on
    helpers when one dies before its first answer: commit_cpython.py)."""

    def __init__(self, loop, done):
        import socket
        import subprocess
        import sys

        self.loop = loop
        self.done = done  # done(errno): on the loop, 0 when the sync succeeded
        self.dead = False
        self.answered = 0  # syncs it has answered
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.runtime.flash_cpython", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        except BaseException:
            self._sock.close()
            raise
        finally:
            theirs.close()
        self._sock.setblocking(False)
        self._fd = self._sock.fileno()  # (a closed socket's fileno() is -1)
        loop.add_reader(self._fd, self._ready)

    def submit(self, *fds):
        """Sync the files of fds (one or two: the store's and the uplink's
        outbox, one answer for both): the helper gets copies (SCM_RIGHTS),
        so the fds themselves may be closed at once."""
        import socket
        import struct

        try:
            # (socket.send_fds, without its array: once per sync)
            self._sock.sendmsg(_REQ, [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       struct.pack("%di" % len(fds), *fds))])
        except OSError:
            self._lost()
            raise

    def _ready(self):
        try:
            got = self._sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            got = b""
        if not got:
            self._lost()
            self.done(errno.EIO)  # the sync in flight is not known to be done
            return
        self.answered += len(got)
        for err in got:
            self.done(err)

    def _lost(self):
        if not self.dead:
            self.dead = True
            self.loop.remove_reader(self._fd)

    def close(self):
        self._lost()
        self._sock.close()  # the helper reads EOF and exits
        try:
            self.proc.wait(5)
        except Exception:
            self.proc.kill()
            self.proc.wait(5)


def _helper(fd):
    # The Syncer's process: each message carries the descriptors to fsync
    # (one or two), answered with one errno
    import socket

    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1, _MAX_FDS)
        except OSError:
            return
        if not msg:
            return  # the broker is gone (or closed us)
        err = 0
        for f in fds:
            try:
                fsync_fd(f)
            except OSError as e:
                err = e.errno or errno.EIO
        if not fds:
            err = errno.EBADF  # a message without its descriptor
        try:
            sock.sendall(bytes((min(err, 255),)))
        except OSError:
            return


if __name__ == "__main__":
    import sys

    _helper(int(sys.argv[1]))
