# The MicroPython half of tools/flashwear.py: runs under the unix port
# (`micropython tools/flashwear_mpy.py RATE MESSAGES DRAIN_S PAYLOAD`, repo
# root on sys.path), the store on littlefs as a board has it: vfs.VfsLfs2,
# its default geometry (readsize/progsize/lookahead 32), on a 2 MiB block
# device of 4 KiB blocks that counts erases and programmed bytes.
#
# The broker core (board profile) with its store in /flash/data: one 3.1.1
# publisher sends RATE QoS 1 msg/s (simulated time) to a persistent
# subscriber that is away; every DRAIN_S seconds it comes back, takes its
# queue, acknowledges it all and goes away again. Each message is its own
# feed and its PUBACK waits for its record, as on the board runtime
# (edge/runtime/commit.py: one sync per poller round, and at these rates a
# round holds one message): the batch is flushed after each feed; Log.tick
# runs every 250 ms of simulated time, as the runtime's tick does.
# PIECES 0 writes every batch into its segment file, as before the store's
# small batches became pieces (edge/runtime/flash.py). Prints one line:
# "RESULT rate messages erases programmed_bytes syncs max_block_erases
# blocks".
import sys
import vfs

_BLOCK = 4096
_BLOCKS = 512  # 2 MiB
_TICK_MS = 250


class CountingBdev:
    """A RAM block device with littlefs's extended interface (offsets,
    ioctl 6 = erase), counting erases per block and programmed bytes."""

    def __init__(self, blocks=_BLOCKS, size=_BLOCK):
        self.size = size
        self.blocks = blocks
        self.data = bytearray(b"\xff" * (blocks * size))
        self.wear = [0] * blocks
        self.erases = 0
        self.programmed = 0

    def readblocks(self, n, buf, off=0):
        a = n * self.size + off
        buf[:] = memoryview(self.data)[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:  # the simple interface: erase, then write whole blocks
            for i in range(len(buf) // self.size):
                self.ioctl(6, n + i)
            off = 0
        a = n * self.size + off
        self.data[a:a + len(buf)] = buf
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.size
        if op == 6:  # erase block arg
            self.erases += 1
            self.wear[arg] += 1
            a = arg * self.size
            self.data[a:a + self.size] = b"\xff" * self.size
            return 0
        return 0  # init, deinit, sync


def main(rate, messages, drain_s, payload_len, segment_bytes=0, pieces=1):
    bdev = CountingBdev()
    vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), "/flash")
    from edge import config
    from edge.mqtt import codec
    from edge.mqtt.broker import Broker
    from edge.mqtt.packets import Connect, Puback, Publish, Subscribe
    from edge.runtime.flash import Files, Pieces
    from edge.runtime.persist import open_store

    # the board profile, its queue limits raised so that a DRAIN_S-long
    # absence is kept whole (what is measured is the flash, not the heap)
    cfg = config.load({"broker": {"max_queued_messages": 100000, "max_queued_bytes": 1 << 26,
                                  "memory_budget_bytes": 1 << 26, "max_inflight": 64},
                       "store": {"session_budget": 1 << 20, "budget_bytes": 1 << 20}}, "board")
    if segment_bytes:
        cfg["store"]["segment_bytes"] = segment_bytes  # (an experiment: below the schema's minimum)
    now = 0
    b = Broker(cfg, now)
    wal = open_store(cfg, b, lambda level, msg: None, (Pieces if pieces else Files)("/flash/data"))

    def feed(cid, pkt):
        b.data_received(cid, codec.encode(pkt, False), now)

    def out(cid):
        conn = b.conns.get(cid)
        data = conn.take() if conn is not None and conn.out else b""
        b.dirty.clear()
        return data

    b.open(1, now)
    feed(1, Connect("sub", False, 0))
    feed(1, Subscribe(1, [("wear/#", 1)], None))
    wal.flush()
    out(1)
    b.connection_lost(1, now)  # away: its messages are queued, in the store
    b.open(2, now)
    feed(2, Connect("pub", True, 0))
    wal.flush()
    out(2)
    syncs0 = wal.syncs
    erases0 = bdev.erases
    prog0 = bdev.programmed
    body = b"x" * payload_len
    step = 1000 // rate if rate <= 1000 else 1
    next_tick = now + _TICK_MS
    next_drain = now + drain_s * 1000
    cid = 3
    for i in range(messages):
        now += step
        while now >= next_tick:
            b.tick(next_tick)
            wal.tick(next_tick)
            next_tick += _TICK_MS
        feed(2, Publish("wear/t", body, 1, False, False, (i % 65535) + 1))
        if wal.pending():
            wal.flush()  # the PUBACK's sync (commit.py)
        out(2)
        if now >= next_drain:
            next_drain += drain_s * 1000
            b.open(cid, now)  # the subscriber back: its queue, all acknowledged
            feed(cid, Connect("sub", False, 0))
            wal.flush()
            while True:
                data = out(cid)
                pids = []
                j = 0
                while j < len(data):
                    pkt, used = codec.decode(data, j, len(data), False)
                    if pkt is None:
                        break
                    if pkt.kind == 3:
                        pids.append(pkt.pid)
                    j += used
                if not pids:
                    break
                for p in pids:
                    feed(cid, Puback(p))
                if wal.pending():
                    wal.flush()
            b.connection_lost(cid, now)
            cid += 1
    for k in range(8):  # the last deletions' tick, compaction
        now += _TICK_MS
        b.tick(now)
        wal.tick(now)
    print("RESULT %d %d %d %d %d %d %d" % (rate, messages, bdev.erases - erases0, bdev.programmed - prog0,
                                           wal.syncs - syncs0, max(bdev.wear), bdev.blocks))


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
