# The uplink's durable outbox (docs/design.md "Delivery guarantees",
# store-and-forward):
# a FIFO of opaque bodies on a Log of its own (its own file prefix and byte
# budget, [upstream] outbox_budget_bytes). The bridge appends what it must
# send up, reads from a cursor, and acks what the upstream confirmed.
#
# A body's id is its log seq: it grows by one per append, is never reused,
# not even after everything was acked and compacted away (log.py keeps
# next_seq in every segment's META), so it serves as the upstream
# idempotency key (`message-id`). After a restart everything not acked is
# read again from seq 0: at-least-once, as promised upstream.
#
# Record body layout 1 (kind K_OUTBOX): the body as given, nothing added.
# A changed layout takes a new kind (edge/store/state.py explains why).
#
# Drop policy when full: the newest is refused (append returns -1) and
# counted in `refused`; what is already queued is never dropped to make room,
# so the backlog that reaches the upstream is a gapless prefix.
#
# Commands down (docs/uplink.md "Commands down") share the log: a command
# is persisted (K_CMD) and synced before it is acked upstream, then
# published locally; cmd_done() then replaces it with a K_SEEN record of its
# message_id, so a redelivery of it is recognised (and not published
# twice), and a K_CMD still live at a start is a command persisted but
# maybe never published: the uplink publishes it then.
# K_CMD body: u8 len(mid), mid, u16 len(topic), topic, payload.
# K_SEEN body: mid.
from edge.compat import const

K_OUTBOX = const(24)
K_CMD = const(29)
K_SEEN = const(30)


class Outbox:
    def __init__(self, log):
        self.log = log  # opened by the caller; its budget is the outbox's
        self.refused = 0

    def append(self, body):
        """Queue body (bytes); its seq, or -1 if refused (over the byte
        budget or the log's max_record), counted in `refused`. Durable after
        log.flush() (or log.tick())."""
        seq = self.log.append(K_OUTBOX, body)
        if seq < 0:
            self.refused += 1
        return seq

    def read(self, from_seq=0, n=16):
        """Up to n [(seq, body)] not yet acked with seq >= from_seq, oldest
        first. Flushes the pending batch (reads come from the files): call
        it when the uplink has room, not once per message. Reads only the
        segments that can hold seq >= from_seq."""
        out = []
        if n <= 0:
            return out
        for seq, kind, body in self.log.replay(from_seq):
            if kind == K_OUTBOX:
                out.append((seq, body))
                if len(out) >= n:
                    break
        return out

    def ack(self, seq):
        """The upstream confirmed seq: forget it. False if it was not queued.
        Quiet (Log.delete): no local output waits for the tombstone; lost
        in a crash, the message is sent again with its message_id."""
        return self.log.delete(seq, True, True)

    def __len__(self):
        return len(self.log)

    def bytes(self):
        """Bytes the queued bodies take on flash (what the budget counts)."""
        return self.log.live_bytes

    # ---- commands down
    def cmd_append(self, mid, topic, payload):
        """Persist a command (mid, topic: str; payload: bytes) until
        cmd_done(); its seq, or -1 if refused (full)."""
        m = mid.encode()[:255]
        t = topic.encode()
        return self.log.append(K_CMD, bytes((len(m),)) + m + bytes((len(t) >> 8, len(t) & 255)) + t + payload)

    def cmd_done(self, seq, mid):
        """Command seq was published locally: its message_id is kept as
        seen (a K_SEEN record, written before the K_CMD's tombstone: a torn
        batch keeps either); the K_SEEN's seq, 0 for no mid, -1 if full."""
        s = 0
        if mid:
            s = self.log.append(K_SEEN, mid.encode()[:255])
        self.log.delete(seq, True, True)
        return s

    def forget(self, seq):
        """A seen message_id too old to matter: gone."""
        return self.log.delete(seq, True, True)

    def commands(self):
        """What a previous run left of the commands: load()'s last two."""
        return self.load()[1:]

    def load(self):
        """Everything a previous run left, in one pass over the log (a
        100,000-message backlog took a second a pass): ([(seq, body)]
        queued, [(seq, mid, topic, payload)] commands persisted and maybe
        never published, [(seq, mid)] seen), each oldest first."""
        msgs = []
        cmds = []
        seen = []
        for seq, kind, body in self.log.replay(0):
            if kind == K_OUTBOX:
                msgs.append((seq, body))
            elif kind == K_CMD:
                n = body[0]
                mid = bytes(body[1:1 + n]).decode()
                i = 1 + n
                k = body[i] << 8 | body[i + 1]
                cmds.append((seq, mid, bytes(body[i + 2:i + 2 + k]).decode(), bytes(body[i + 2 + k:])))
            elif kind == K_SEEN:
                seen.append((seq, bytes(body).decode()))
        return msgs, cmds, seen
