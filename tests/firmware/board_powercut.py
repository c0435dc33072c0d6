# Runs on the QEMU board (tests/firmware/test_qemu.py), not under pytest: the
# store's power-cut test on littlefs. The store (edge/runtime/flash.py's
# Flash, edge/store/) writes to a littlefs on the board's spare RAM-disk
# partition; the block device (firmware/qemu/ramdisk.py) cuts the power at
# the k-th write from a chosen point (that write torn in half, none after
# it). Then the filesystem is mounted again and the store replayed: every
# QoS 1 message whose PUBACK went out is delivered (docs/design.md "Delivery
# guarantees": an ack goes out only once what it promises is synced, as the
# MicroPython runtime does after each feed: edge/runtime/tcp.py).
import gc
import vfs

import _edgeboard
from edge.mqtt.packets import Puback, Publish
from edge.runtime.flash import Flash
from ramdisk import RAMDisk
from tests.core._pair import Client, publishes
from tests.core._store import boot, sub_and_pub

MOUNT = "/pc"
SPARE_FIRST = 240  # blocks 240..255 of the RAM disk (firmware/qemu/_boot.py)
SPARE_BLOCKS = 16


def _mount(bdev, fresh):
    if fresh:
        vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), MOUNT)


def one(cut, n=8):
    """Publish n QoS 1 messages with the power cut at write `cut` (counted
    from the first publish); returns (acked, delivered after the replay)."""
    bdev = RAMDisk(_edgeboard.flash(), SPARE_FIRST, SPARE_BLOCKS)
    _mount(bdev, True)
    try:
        b, log, _ = boot(Flash(MOUNT + "/store"))
        sub, pub = sub_and_pub(b, "t", 1)  # a persistent subscriber, offline
        log.flush()
        pub.recv()
        bdev.cut(cut)
        acked = []
        for i in range(n):
            payload = b"m%d" % i
            pub.send(Publish("t", payload, 1, False, False, i + 1))
            try:
                log.flush()  # the runtime syncs before the PUBACK goes out
            except OSError:
                break  # the power is gone: this PUBACK never went out
            if any(p.kind == 4 for p in pub.recv()):
                acked.append(payload)
        b = log = sub = pub = None
    finally:
        vfs.umount(MOUNT)  # littlefs writes nothing at unmount
    gc.collect()
    bdev.cut(-1)  # power back
    _mount(bdev, False)
    try:
        b, log, counts = boot(Flash(MOUNT + "/store"))
        sub = Client(b)
        sub.connect("sub", clean=False)
        got = []
        while True:
            pkts = publishes(sub.recv())
            if not pkts:
                break
            for p in pkts:
                got.append(p.payload)
                sub.send(Puback(p.pid))
            log.flush()
    finally:
        vfs.umount(MOUNT)
    return acked, got


def run(cuts=range(1, 25)):
    """Every cut point; prints one line each and a summary; True if no
    acknowledged message was lost in any."""
    ok = True
    lost_total = 0
    for k in cuts:
        acked, got = one(k)
        lost = [m for m in acked if m not in got]
        lost_total += len(lost)
        ok = ok and not lost
        print("cut at write %d: %d acked, %d delivered after replay, %d lost" % (k, len(acked), len(got), len(lost)))
    print("power cuts: %d, acknowledged messages lost: %d" % (len(cuts), lost_total))
    return ok
