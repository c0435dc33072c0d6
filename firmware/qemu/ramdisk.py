# The QEMU board's flash: a block device over part of a memory buffer
# (_edgeboard.flash(), outside the GC heap), with the extended block
# protocol littlefs uses (MicroPython's vfs.AbstractBlockDev: readblocks
# and writeblocks with an offset, ioctl 4/5/6).
#
# cut(n): a power cut for the store's tests (tests/firmware/board_powercut.py):
# the n-th write from now writes only the first half of its bytes and fails,
# and so does every write after it, until cut(-1).
_EIO = 5


class RAMDisk:
    def __init__(self, buf, first=0, count=None, block_size=4096):
        if count is None:
            count = len(buf) // block_size - first
        self.bs = block_size
        self.count = count
        self.mem = memoryview(buf)[first * block_size:(first + count) * block_size]
        self.writes = 0  # writes made (tests count them)
        self._left = -1  # writes before the cut; -1: none

    def cut(self, n):
        self._left = n

    def readblocks(self, block, buf, offset=0):
        a = block * self.bs + offset
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, block, buf, offset=0):
        a = block * self.bs + (offset or 0)
        n = len(buf)
        if self._left == 0:
            return _EIO  # the power is gone: nothing written
        if self._left > 0:
            self._left -= 1
            if self._left == 0:
                n //= 2  # torn: the cut comes mid-write
        self.mem[a:a + n] = buf[:n] if n < len(buf) else buf
        self.writes += 1
        return 0 if n == len(buf) else _EIO

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.count
        if op == 5:  # block size
            return self.bs
        return 0  # init, deinit, sync, erase (RAM: nothing to erase)
