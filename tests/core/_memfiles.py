# An in-memory stand-in for edge/runtime/flash.py's Flash, with a power-cut
# model, for the store tests (runs on both runtimes).
#
# Each file keeps what a read sees and how much of it is durable (synced).
# crash_after = k makes the k-th mutating call from now raise Crash before it
# takes effect, as if the power went at that point; power_cut(keep) then
# drops what was never synced, keeping `keep` bytes of each file's unsynced
# tail (a torn write). Renames and removes are atomic and durable at once,
# as on littlefs.


class Crash(Exception):
    pass


class MemFiles:
    def __init__(self):
        self.data = {}     # name -> bytearray
        self.durable = {}  # name -> synced length
        self.ops = []      # mutating calls made, by name
        self.crash_after = -1
        self.dir_syncs = 0
        self.fail = None   # an exception the next append raises (e.g. ENOSPC)
        self.fail_sync = None  # ... the next sync raises, data written

    def _step(self, what):
        if self.crash_after == 0:
            raise Crash(what)
        if self.crash_after > 0:
            self.crash_after -= 1
        self.ops.append(what)

    def listdir(self):
        return list(self.data)

    def size(self, name):
        return len(self.data[name])

    def readinto(self, name, offset, mv):
        d = self.data[name]
        n = max(0, min(len(mv), len(d) - offset))
        mv[0:n] = memoryview(d)[offset:offset + n]
        return n

    def append(self, name, data):
        self._step("append")
        if name not in self.data:
            self.data[name] = bytearray()
            self.durable[name] = 0
        if self.fail is not None:
            # a partial write, then the error, as a full flash does
            self.data[name].extend(memoryview(data)[:len(data) // 2])
            e = self.fail
            self.fail = None
            raise e
        self.data[name].extend(data)

    def sync(self, name):
        self._step("sync")
        if self.fail_sync is not None:
            e = self.fail_sync
            self.fail_sync = None
            raise e
        self.durable[name] = len(self.data[name])

    def sync_dir(self):
        self._step("sync_dir")
        self.dir_syncs += 1

    def rename(self, old, new):
        self._step("rename")
        self.data[new] = self.data.pop(old)
        self.durable[new] = self.durable.pop(old)

    def remove(self, name):
        self._step("remove")
        del self.data[name]
        del self.durable[name]

    def truncate(self, name, size):
        self._step("truncate")
        self.data[name] = self.data[name][:size]
        self.durable[name] = size

    def close(self):
        pass

    def power_cut(self, keep=0):
        """Lose every unsynced byte except the first `keep` of each tail."""
        for name in self.data:
            d = self.data[name]
            n = min(len(d), self.durable[name] + keep)
            self.data[name] = d[:n]
            self.durable[name] = n
        self.crash_after = -1

    def copy(self):
        m = MemFiles()
        for name in self.data:
            m.data[name] = bytearray(self.data[name])
            m.durable[name] = self.durable[name]
        return m


def spy_reads(m):
    """The list of file names m.readinto() is called with from now on."""
    read = []
    real = m.readinto

    def spy(name, offset, mv):
        read.append(name)
        return real(name, offset, mv)
    m.readinto = spy
    return read
