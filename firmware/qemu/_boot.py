# The QEMU board's boot (frozen, run by main.c before boot.py): littlefs on
# the RAM disk's first 960 KiB mounted at / as an ESP32's flash is, formatted
# on first use; the last 64 KiB are a spare partition for the tests.
import gc
import os
import vfs

import _edgeboard
from ramdisk import RAMDisk

FLASH_BLOCKS = 240  # of 256 x 4 KiB


def _mount():
    bdev = RAMDisk(_edgeboard.flash(), 0, FLASH_BLOCKS)
    try:
        fs = vfs.VfsLfs2(bdev)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev)
        fs = vfs.VfsLfs2(bdev)
    vfs.mount(fs, "/")
    os.chdir("/")


_mount()
del _mount
gc.collect()
