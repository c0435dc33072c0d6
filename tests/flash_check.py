# edge/store/log.py over edge/runtime/flash.py on real files, written to run
# under both runtimes (no pytest, no os.path). tests/test_flash_files.py
# calls it in-process (CPython) and as a `micropython` subprocess:
#
#     micropython tests/flash_check.py scenario DIR   -> "ok <live records>"
#     micropython tests/flash_check.py kill DIR N     -> "synced <seq>" lines,
#         one per durable batch, then "done" and a sleep until killed
#     micropython tests/flash_check.py reread DIR|lfs -> "ok <bytes read>";
#         lfs: on littlefs (vfs.VfsLfs2) over a RAM block device
#
# Run from the repository root.
import os
import sys
import time

if "" not in sys.path:
    sys.path.insert(0, "")

from edge.runtime.flash import Flash  # noqa: E402
from edge.store.log import Log  # noqa: E402

K = 16


def body(i):
    return b"rec-%d-" % i + bytes([i & 0xFF]) * (i % 40)


def expected(n_total, deleted):
    return [(i + 1, K + i % 2, body(i)) for i in range(n_total) if (i + 1) not in deleted]


def open_log(path, now=0):
    log = Log(Flash(path), segment_bytes=256, max_record=128)
    log.open(now)
    return log


def _check(cond, what):
    if not cond:  # not assert: MicroPython may strip asserts (-O)
        raise AssertionError(what)


def scenario(path):
    log = open_log(path)
    _check(log.problems == [] and len(log) == 0, "fresh directory")
    deleted = set()
    for i in range(60):
        log.append(K + i % 2, body(i))
        if i % 5 == 4:
            log.flush()
        if i % 3 == 0:
            log.delete(i + 1)
            deleted.add(i + 1)
    log.close()
    want = expected(60, deleted)
    _check(len([n for n in os.listdir(path) if n.startswith("log.")]) > 2, "rotated")
    log = open_log(path)
    _check(list(log.replay()) == want, "replay after reopen")
    last = "log.%d" % log._segs[-1][0]
    log.close()
    # a torn tail on the last segment and a garbage segment
    size = os.stat(path + "/" + last)[6]
    with open(path + "/" + last, "ab") as f:
        f.write(b"\x10\x40torn")
    with open(path + "/log.999", "wb") as f:
        f.write(b"garbage, not a segment")
    log = open_log(path, now=77)
    _check(list(log.replay()) == want, "replay after damage")
    _check(log.problems == [("log.999", 0, "magic", "log.999.corrupt-77"), (last, size, "torn", "cut")],
           "problems %r" % (log.problems,))
    _check(os.stat(path + "/" + last)[6] == size, "tail cut on disk")
    _check("log.999.corrupt-77" in os.listdir(path), "quarantined")
    _check(log.compact(), "compaction")
    log.close()
    segs = [n for n in os.listdir(path) if n.startswith("log.") and "corrupt" not in n]
    _check(segs == ["log.1001"], "one segment after compaction (past log.999, every other id): %r" % (segs,))
    log = open_log(path)
    _check(list(log.replay()) == want and log.problems == [], "replay after compaction")
    log.close()
    return len(want)


def kill(path, n):
    log = Log(Flash(path), segment_bytes=512, sync="batch")
    log.open(0)
    for i in range(n):
        log.append(K + i % 2, body(i))
        if i % 7 == 6 or i == n - 1:
            log.flush()
            print("synced %d" % log.synced)
    print("done")
    while True:  # killed with SIGKILL: no close(), no interpreter cleanup
        time.sleep(1)


def reread(path):
    """Appends after a read, synced, are read back: by Files, and by Pieces
    (a batch too large for a piece, appended to its file). On littlefs a
    handle opened before an append never sees it (a flash queue's drain
    read nothing new, edge/store/fqueue.py). The bytes read."""
    from edge.runtime.flash import Files, Pieces

    if path == "lfs":
        path = _lfs()
    got = 0
    for cls in (Files, Pieces):
        f = cls(path + "/" + cls.__name__)
        buf = bytearray(256)
        mv = memoryview(buf)
        at = 0
        for i in range(4):
            data = bytes([65 + i]) * 200  # > a piece's 128 bytes
            f.append("seg", data)
            f.sync("seg")
            n = f.readinto("seg", at, mv)
            _check(n == 200 and bytes(buf[:n]) == data, "%s read %d at %d after append %d" % (
                cls.__name__, n, at, i))
            at += n
            got += n
        f.close()
    return got


def _lfs():
    import vfs

    class Ram:  # littlefs's extended block device interface, 64 x 4 KiB
        def __init__(self):
            self.data = bytearray(b"\xff" * (64 * 4096))

        def readblocks(self, n, buf, off=0):
            a = n * 4096 + off
            buf[:] = memoryview(self.data)[a:a + len(buf)]

        def writeblocks(self, n, buf, off=0):
            a = n * 4096 + off
            self.data[a:a + len(buf)] = buf

        def ioctl(self, op, arg):
            if op == 4:
                return 64
            if op == 5:
                return 4096
            if op == 6:
                self.data[arg * 4096:(arg + 1) * 4096] = b"\xff" * 4096
            return 0

    bd = Ram()
    vfs.VfsLfs2.mkfs(bd)
    vfs.mount(vfs.VfsLfs2(bd), "/lfs")
    return "/lfs"


def main(argv):
    if argv[1] == "scenario":
        print("ok %d" % scenario(argv[2]))
    elif argv[1] == "reread":
        print("ok %d" % reread(argv[2]))
    elif argv[1] == "kill":
        kill(argv[2], int(argv[3]))


if __name__ == "__main__":
    main(sys.argv)
