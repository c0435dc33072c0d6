# A client's session state (MQTT 3.1.1 §4.1): subscriptions, outgoing QoS 1/2
# messages in flight, the bounded queue behind them, incoming QoS 2 packet ids,
# and the packet-identifier allocator. A session outlives its connection when
# clean session is 0. Every limit is explicit and every drop is counted.
from edge.compat import const, slots

# Outgoing QoS 1/2 state, in `inflight` by packet id. Packet ids are handed
# out in sequence and never skipped (if the next one is still in flight after
# a wrap-around, the window counts as full), so the order they were sent in is
# the order of (pid - next_pid) % 65535 and no sequence number is kept
# [MQTT-4.6.0-1]. An entry is
#   msg            PUBLISH sent at the message's own QoS without RETAIN (the
#                  usual case: the entry allocates nothing)
#   (msg, flags)   PUBLISH sent at QoS flags & 3, RETAIN if flags & 4
#   _RELEASED      QoS 2: PUBREC came, PUBREL sent, waiting for PUBCOMP
# The offline queue holds the same msg or (msg, flags) items, in order.
_QOS = const(3)
_RETAIN = const(4)
_RELEASED = const(0)
_PUBREL = const(6)  # packet type, as in consts.py


def _entry(msg, qos, retain):
    if qos == msg.qos and not retain:
        return msg
    return (msg, qos | _RETAIN if retain else qos)


def _unpack(e):
    """(msg, qos, retain) of a msg or (msg, flags) entry."""
    if type(e) is tuple:
        return e[0], e[1] & _QOS, bool(e[1] & _RETAIN)
    return e, e.qos, False


@slots("topic", "payload", "qos", "retain", "props", "enc0")
class Message:
    """An application message, shared by every session it is delivered to."""

    def __init__(self, topic, payload, qos=0, retain=False, props=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.props = props
        self.enc0 = None  # 3.1.1 QoS 0 PUBLISH bytes, encoded once for all


class Session:
    # Every instance attribute costs heap per client on a board (MicroPython
    # keeps them in a hash map that grows 8, 10, 12, 17 slots): eight are set
    # here; the offline queue, the QoS 2 set and the drop count only when
    # first needed, defaulting on the class until then.
    # A list, not a deque: MicroPython's deque allocates its whole maxlen up
    # front (264 bytes for the board's 32), a list only what is queued.
    queue = None        # [entry] behind the window, FIFO (see above)
    queued_bytes = 0
    rx_qos2 = None      # set of pids PUBREC'd, waiting PUBREL [MQTT-4.3.3-2]
    dropped = 0
    expiry = None       # 5.0 Session Expiry Interval (s); None: from clean (3.1.1)
    # The StateStore (edge/store/state.py) of a session that outlives its
    # connection, set by the broker once the store holds it; clean sessions
    # keep the class's None and pay nothing. Every change of persistent state
    # below calls the store's hook of the same name (DESIGN "Delivery
    # guarantees"); the runtime syncs them before the acks go out.
    store = None

    def __init__(self, client_id, clean, limits, stats):
        self.client_id = client_id
        self.clean = clean
        self.conn = None
        self.subs = {}         # filter -> options byte (QoS in bits 0-1)
        self.inflight = {}     # pid -> entry, see above
        self.next_pid = 1
        self.limits = limits   # max_inflight, max_queued_messages, max_queued_bytes
        self.stats = stats

    # ---- delivery ------------------------------------------------------------
    def deliver(self, msg, qos, retain=False):
        """Send `msg` at `qos` (already the granted minimum) or queue it."""
        conn = self.conn
        if qos == 0:
            if conn is None:
                return  # QoS 0 is not queued for offline clients (as mosquitto)
            if conn.out_bytes > self.limits.max_queued_bytes:
                self._drop()  # slow reader: bounded output, counted
                return
            if conn.v5 or retain:
                conn.send_publish(msg, 0, retain)
            else:
                data = msg.enc0
                if data is None:
                    data = msg.enc0 = conn.send_publish(msg)
                else:
                    conn.write(data)
            self.stats.msgs_sent += 1
            return
        lim = self.limits
        inflight = self.inflight
        if (conn is not None and not self.queue and len(inflight) < lim.max_inflight
                and self.next_pid not in inflight and conn.out_bytes <= lim.max_queued_bytes):
            self._send_new(msg, qos, retain)
        else:
            self._enqueue(msg, qos, retain)

    def _drop(self):
        self.dropped += 1
        self.stats.msgs_dropped += 1

    def _enqueue(self, msg, qos, retain):
        size = len(msg.topic) + len(msg.payload)  # what queued_bytes counts
        lim = self.limits
        q = self.queue
        if q is None:
            q = self.queue = []
        if len(q) >= lim.max_queued_messages or self.queued_bytes + size > lim.max_queued_bytes:
            self._drop()
            return False
        st = self.store
        if st is not None and st.msg_queued(self, msg, qos, retain):
            self._drop()  # over a store budget: refused there, counted (H7)
            return False
        q.append(_entry(msg, qos, retain))
        self.queued_bytes += size
        return True

    def _send_new(self, msg, qos, retain):
        # the caller checked there is room, next_pid included
        pid = self.next_pid
        st = self.store
        if st is not None and st.msg_sent(self, pid, msg, qos, retain):
            self._drop()  # over a store budget: refused there, counted (H7)
            return
        self.next_pid = pid + 1 if pid < 65535 else 1
        self.inflight[pid] = _entry(msg, qos, retain)
        self.conn.send_publish(msg, qos, retain, False, pid)
        self.stats.msgs_sent += 1

    def pump(self):
        """Move queued messages into the inflight window while there is room."""
        conn = self.conn
        q = self.queue
        if conn is None or not q:
            return
        lim = self.limits
        inflight = self.inflight
        # each _send_new() takes one slot of the window
        n = min(len(q), lim.max_inflight - len(inflight))
        max_bytes = lim.max_queued_bytes
        i = 0
        size = 0
        while i < n and self.next_pid not in inflight and conn.out_bytes <= max_bytes:
            e = q[i]
            i += 1
            if type(e) is tuple:
                msg = e[0]
                self._send_new(msg, e[1] & _QOS, bool(e[1] & _RETAIN))
            else:  # the usual entry (see _unpack)
                msg = e
                self._send_new(e, e.qos, False)
            size += len(msg.topic) + len(msg.payload)
        self.queued_bytes -= size
        if i == len(q):
            self.queue = None  # drained: an idle session holds no queue
        elif i:
            del q[:i]  # one move for the whole batch

    # ---- acknowledgements from the client -----------------------------------
    def qos2_seen(self, pid):
        """Record an incoming QoS 2 pid; True if it was already waiting for
        PUBREL (a resent PUBLISH, not to be delivered again)."""
        s = self.rx_qos2
        if s is None:
            s = self.rx_qos2 = set()
        if pid in s:
            return True
        s.add(pid)
        return False

    def qos2_released(self, pid):
        if self.rx_qos2:
            self.rx_qos2.discard(pid)
            if self.store is not None:
                self.store.qos2_released(self, pid)

    # PUBACK and PUBCOMP make room in the window; the broker calls pump()
    # once after the feed that brought them, so a batch of acks moves the
    # queue once, not once per ack.
    def on_puback(self, pid):
        e = self.inflight.get(pid)
        if e and (e[1] & _QOS if type(e) is tuple else e.qos) == 1:
            del self.inflight[pid]
            if self.store is not None:
                self.store.acked(self, pid, e[0] if type(e) is tuple else e)

    def on_pubrec(self, pid):
        e = self.inflight.get(pid)
        if e and (e[1] & _QOS if type(e) is tuple else e.qos) == 2:
            self.inflight[pid] = _RELEASED  # the message is no longer needed
            if self.store is not None:
                self.store.released(self, pid, e[0] if type(e) is tuple else e)
        # [MQTT-4.3.3-1] answer PUBREL; for an unknown pid too, so the client
        # can finish its state (5.0 adds reason 0x92 there).
        self.conn.send_ack(_PUBREL, pid)

    def on_pubcomp(self, pid):
        if self.inflight.get(pid) == _RELEASED:
            del self.inflight[pid]
            if self.store is not None:
                self.store.acked(self, pid)

    # ---- (re)connection -------------------------------------------------------
    def attach(self, conn):
        """Bind a new connection; resend unacknowledged messages in order."""
        self.conn = conn
        nxt = self.next_pid
        entries = list(self.inflight.items())
        entries.sort(key=lambda item: (item[0] - nxt) % 65535)  # send order
        for pid, e in entries:
            if e == _RELEASED:
                conn.send_ack(_PUBREL, pid)
            else:
                # [MQTT-4.4.0-1] resend unacknowledged PUBLISH with DUP set
                msg, qos, retain = _unpack(e)
                conn.send_publish(msg, qos, retain, True, pid)
                self.stats.msgs_sent += 1
        self.pump()

    def detach(self):
        self.conn = None

