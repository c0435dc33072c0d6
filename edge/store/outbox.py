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
from edge.compat import const

K_OUTBOX = const(24)


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
        """The upstream confirmed seq: forget it. False if it was not queued."""
        return self.log.delete(seq)

    def __len__(self):
        return len(self.log)

    def bytes(self):
        """Bytes the queued bodies take on flash (what the budget counts)."""
        return self.log.live_bytes
