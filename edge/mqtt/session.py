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
#   RELEASED       QoS 2: PUBREC came, PUBREL sent, waiting for PUBCOMP
# The offline queue holds the same msg or (msg, flags) items, in order; a
# None item (the store's FLASH) stands for QoS 1 messages on the store's
# flash, read back as the client drains them (edge/store/fqueue.py, a
# board's default, through the store's `queue`: edge/store/ledger.py).
# None, and a name this module holds already: a board's 64 KiB boot with
# auth had no room for more interned names (docs/heap.md "Offline queues
# and replay").
_QOS = const(3)
_RETAIN = const(4)
RELEASED = const(0)
_PUBREL = const(6)  # packet type, as in consts.py
# What the memory budget counts, in heap bytes on a board: measured with
# tools/heapcost.py on the board runtime (64-bit unix port, docs/heap.md;
# an ESP32's 32-bit pointers make each less), rounded up.
_ENTRY_COST = const(208)    # a held message beyond its topic + payload (measured 185)
_NODE_COST = const(192)     # a topic tree node: level name, [kids, value], dict slot (188)
_SUB_COST = const(128)      # a subscription beyond its tree nodes (114, 13-byte filter)
_SESSION_COST = const(320)  # a persistent session while its client is away (308)
_RC_PID_NOT_FOUND = const(0x92)


def entry(msg, qos, retain):
    if qos == msg.qos and not retain:
        return msg
    return (msg, qos | _RETAIN if retain else qos)


def unpack(e):
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
    rx_qos2 = None      # {pid: True} PUBREC'd, waiting PUBREL [MQTT-4.3.3-2]
    dropped = 0
    expiry = None       # 5.0 Session Expiry Interval (s); None: from clean (3.1.1)
    # The StateStore (edge/store/state.py) of a session that outlives its
    # connection, set by the broker once the store holds it; clean sessions
    # keep the class's None and pay nothing. Every change of persistent state
    # below calls the store's hook of the same name (docs/design.md "Delivery
    # guarantees"); the runtime syncs them before the acks go out.
    store = None
    # With [auth] on (edge/auth/guard.py): the ACL Rules (and user name) of
    # its last CONNECT; None: not known, as for a session the store restored,
    # which is delivered nothing under an ACL file until its client is back.
    rules = None

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
                    conn.write(data, False)
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

    def _refuse(self):
        # A QoS 1/2 delivery not kept for a limit (queue, memory budget,
        # store budgets): dropped, and counted apart, so a 5.0 publisher's
        # PUBACK/PUBREC says Quota exceeded (broker.py _on_publish)
        self._drop()
        self.stats.msgs_refused += 1

    def _enqueue(self, msg, qos, retain):
        st = self.store
        q = self.queue
        if qos == 1 and st is not None and st.queue and self.expiry is None:
            return st.queue(self, msg, retain)  # on flash, no heap each (edge/store/ledger.py fq)
        size = len(msg.topic) + len(msg.payload)  # what queued_bytes counts
        lim = self.limits
        if q is None:
            q = self.queue = []
        if len(q) >= lim.max_queued_messages or self.queued_bytes + size > lim.max_queued_bytes:
            self._refuse()
            return False
        budget = None
        if self.conn is None:  # held for a client that is away: Budget
            budget = lim.budget
            if not budget.room(size + _ENTRY_COST):
                self._refuse()
                budget.note(False, "new messages for offline sessions")
                return False
        if st is not None and st.msg_queued(self, msg, qos, retain):
            self._refuse()  # over a store budget: refused there, counted (H7)
            return False
        if budget is not None:
            budget.add(size + _ENTRY_COST)
        q.append(entry(msg, qos, retain))
        self.queued_bytes += size
        return True

    def _held(self):
        # what the session, its messages in flight and its queue count
        # against the budget while the client is away (its subscriptions
        # count in Budget.add(0)); they do not change until attach/release
        n = _SESSION_COST
        for e in self.inflight.values():
            if e != RELEASED:
                m = e[0] if type(e) is tuple else e
                n += len(m.topic) + len(m.payload) + _ENTRY_COST
        if self.queue:
            n += self.queued_bytes + len(self.queue) * _ENTRY_COST  # (FLASH: one entry)
        return n

    def release(self):
        """The session is discarded: give its share back to the budget."""
        if self.conn is None:
            self.limits.budget.add(-self._held())
        self.queue = None
        self.queued_bytes = 0

    def _send_new(self, msg, qos, retain, e=None):
        # the caller checked there is room, next_pid included; e: msg's
        # entry (see unpack) if the caller holds it already. 1 if it took a
        # slot of the window, else 0
        pid = self.next_pid
        st = self.store
        if st is not None and st.msg_sent(self, pid, msg, qos, retain):
            self._refuse()  # over a store budget: refused there, counted (H7)
            return 0
        # Queued for the socket before the window takes it: a MemoryError
        # there leaves no slot taken by a message the client never gets.
        sent = self.conn.send_publish(msg, qos, retain, False, pid)
        self.next_pid = pid + 1 if pid < 65535 else 1
        if sent is None:
            # over a 5.0 client's Maximum Packet Size: dropped, counted, done with
            if st is not None:
                st.acked(self, pid, msg)
            return 0
        self.inflight[pid] = entry(msg, qos, retain) if e is None else e
        self.stats.msgs_sent += 1
        return 1

    def pump(self):
        """Move queued messages into the inflight window while there is room."""
        conn = self.conn
        q = self.queue
        if conn is None or not q:
            return
        lim = self.limits
        inflight = self.inflight
        # each _send_new() takes one slot of the window
        room = lim.max_inflight - len(inflight)
        n = len(q)
        max_bytes = lim.max_queued_bytes
        i = 0
        size = 0
        while room > 0 and i < n and self.next_pid not in inflight and conn.out_bytes <= max_bytes:
            e = q[i]
            if e is None:
                break  # FLASH: the rest is on flash, below
            i += 1
            msg = e[0] if type(e) is tuple else e
            size += len(msg.topic) + len(msg.payload)
            if msg.props is not None and msg.__class__ is not Message and msg.expired():
                self._drop()  # [MQTT-3.3.2-5] 5.0 Message Expiry passed while queued
                if self.store is not None:
                    self.store.unqueued(self, 0, msg)  # (the sent ones left its queue)
                continue
            # a message that takes no slot (over a 5.0 client's Maximum
            # Packet Size, or refused by the store) leaves the room to the next
            if msg is e:  # the usual entry (see unpack)
                room -= self._send_new(e, e.qos, False, e)
            else:
                room -= self._send_new(msg, e[1] & _QOS, bool(e[1] & _RETAIN), e)
        self.queued_bytes -= size
        if i == len(q):
            self.queue = None  # drained: an idle session holds no queue
            return
        elif i:
            del q[:i]  # one move for the whole batch
        if q[0] is None and room > 0:  # FLASH
            self.store.queue(self, None, room)  # the flash tail, a window at a time

    # ---- acknowledgements from the client -----------------------------------
    def qos2_seen(self, pid):
        """Record an incoming QoS 2 pid; True if it was already waiting for
        PUBREL (a resent PUBLISH, not to be delivered again)."""
        s = self.rx_qos2
        if s is None:
            # A dict, not a set: a MicroPython set that runs out of heap
            # while growing forgets its members (edge/runtime/tcp.py's
            # draining says how), and a forgotten pid is a QoS 2 duplicate
            s = self.rx_qos2 = {}
        if pid in s:
            return True
        s[pid] = True
        return False

    def qos2_released(self, pid):
        """PUBREL for pid; False if pid was not waiting for it."""
        s = self.rx_qos2
        if s and pid in s:
            del s[pid]
            if self.store is not None:
                self.store.qos2_released(self, pid)
            return True
        return False

    # PUBACK and PUBCOMP make room in the window; the broker calls pump()
    # once after the feed that brought them, so a batch of acks moves the
    # queue once, not once per ack.
    def on_puback(self, pid):
        e = self.inflight.get(pid)
        if e and (e[1] & _QOS if type(e) is tuple else e.qos) == 1:
            del self.inflight[pid]
            if self.store is not None:
                self.store.acked(self, pid, e[0] if type(e) is tuple else e)

    def on_pubrec(self, pid, reason=0):
        e = self.inflight.get(pid)
        if reason >= 0x80:
            # 5.0 §4.3.3: a PUBREC with an error ends the flow, no PUBREL
            if e and e != RELEASED:
                del self.inflight[pid]
                if self.store is not None:
                    self.store.acked(self, pid, e[0] if type(e) is tuple else e)
            return
        if e and (e[1] & _QOS if type(e) is tuple else e.qos) == 2:
            self.inflight[pid] = RELEASED  # the message is no longer needed
            if self.store is not None:
                self.store.released(self, pid, e[0] if type(e) is tuple else e)
        elif e != RELEASED:
            # [MQTT-4.3.3-1] answer PUBREL for an unknown pid too, so the
            # client can finish its state; 5.0 says 0x92 there
            self.conn.send_ack(_PUBREL, pid, _RC_PID_NOT_FOUND)
            return
        self.conn.send_ack(_PUBREL, pid)

    def on_pubcomp(self, pid):
        if self.inflight.get(pid) == RELEASED:
            del self.inflight[pid]
            if self.store is not None:
                self.store.acked(self, pid)

    # ---- (re)connection -------------------------------------------------------
    def attach(self, conn):
        """Bind a new connection; resend unacknowledged messages in order."""
        self.limits.budget.add(-self._held())  # no longer held for an absent client
        self.conn = conn
        nxt = self.next_pid
        entries = list(self.inflight.items())
        entries.sort(key=lambda item: (item[0] - nxt) % 65535)  # send order
        for pid, e in entries:
            if e == RELEASED:
                conn.send_ack(_PUBREL, pid)
            else:
                # [MQTT-4.4.0-1] resend unacknowledged PUBLISH with DUP set
                msg, qos, retain = unpack(e)
                conn.send_publish(msg, qos, retain, True, pid)
                self.stats.msgs_sent += 1
        self.pump()

    def detach(self):
        """The session and its queue are now held for a client that is away
        (detached, new, or restored from the store): they count against
        the budget, which refuses new offline messages to stay within it.
        A session without a connection is always counted, so attach() and
        release() give its share back."""
        self.conn = None
        self.limits.budget.add(self._held())


# ---- the broker-wide memory budget -----------------------------------------
# broker.memory_budget_bytes (the Budget below, one per broker): one bound on
# the state that accumulates while nobody reads it: persistent sessions
# whose client is away and their queues, the retained store, and the
# subscriptions. The per-session limits (max_queued_messages/bytes) times
# the sessions, plus max_retained_*, can add up to more than a board's heap;
# this bound cannot. Queues of connected clients are live traffic, bounded
# per session and drained as the client acknowledges: they count from the
# moment their client goes away. What each thing counts is what it costs a
# board's heap, measured (the constants above, docs/heap.md "Board heap
# budget"): a held message its topic and payload plus _ENTRY_COST (a message
# held for several sessions counts once per queue: the count errs on the
# safe side), a retained message the same, an away session _SESSION_COST,
# a subscription _SUB_COST, and every node of the subscription and retained
# trees _NODE_COST. The trees' share is read from their exact counts when
# needed (add(0)), so nothing that changes them has to report here.
#
# (Here rather than a module of its own: a module costs a board ~320 bytes
# of heap.)
#
# Policy, as a production broker sheds load (mosquitto's memory_limit
# refuses work too; we say what, and count it):
#   1. A queued message is never dropped to make room: its publisher has
#      its PUBACK/PUBREC (issue #4, acknowledged means durable). Full, the
#      NEW message is refused for the offline client: counted in its
#      session, publish/messages/dropped and budget/dropped; a 5.0 publisher
#      gets PUBACK/PUBREC 0x97 Quota exceeded (broker.py _on_publish), a
#      3.1.1 one its normal ack, as the protocol has no refusing one.
#      (QoS 0 is never queued for offline clients, so none can go first.)
#   2. A retained message that does not fit is not stored (and the topic's
#      older value not kept, as for max_retained_bytes).
#   3. A new persistent session gets CONNACK 0x03 Server unavailable and a
#      persistent session's new subscription SUBACK 0x80 unless the
#      headroom is free: a sixteenth of the budget, at least what an away
#      session with a subscription of two new levels costs (_HEADROOM);
#      they are what accumulates offline state; `refused`. A clean
#      session's new subscription is refused (SUBACK 0x80, 5.0 0x97) only
#      past the budget and half as much again (subscribe.py add): they are
#      live state, but a client that subscribes to deep filters must not
#      take a board's heap either.
# Counters: $SYS/broker/budget/{bytes,dropped,refused}; a warning is logged
# when the budget first drops or refuses something, again after usage has
# fallen below three quarters of it.
_HEADROOM = const(832)  # _SESSION_COST + _SUB_COST + 2 * _NODE_COST


def cost(msg):
    """What holding msg counts against the budget (queued or retained)."""
    return len(msg.topic) + len(msg.payload) + _ENTRY_COST


class Budget:
    # Every method and name here costs a board heap too, so the class is
    # kept small: six attributes, four methods (as before the trees counted).
    def __init__(self, limit, broker):
        self.limit = limit
        self.used = 0          # bytes counted by add(): away sessions, their queues
        self.b = broker        # its trees (subs, retained) and its log
        self.dropped = 0       # messages not queued, or retained not stored, for it
        self.refused = 0       # sessions and subscriptions refused
        self.warned = False    # a warning logged for this episode

    def room(self, need=None):
        """True if `need` more bytes fit (< 0: that many over the limit);
        need None: the headroom new state (a persistent session, its
        subscription) needs. Full means the NEW message is refused: a
        queued message was acknowledged to its publisher and stays (issue
        #4: acknowledged means durable)."""
        if need is None:
            need = self.limit >> 4
            if need < _HEADROOM:
                need = _HEADROOM
        return self.add(0) + need <= self.limit

    def add(self, n):
        """Count n more bytes held (n < 0: given back); returns everything
        counted now, the trees' share included (add(0): $SYS budget/bytes).
        (One method for both: each method costs a board heap.)"""
        self.used += n
        t = self.b.subs
        total = self.used + t.nodes * _NODE_COST + len(t) * _SUB_COST
        t = self.b.retained
        total += t.nodes * _NODE_COST + t.bytes + len(t) * _ENTRY_COST
        if n < 0 and self.warned and total * 4 < self.limit * 3:
            self.warned = False  # a new episode gets a new warning
        return total

    def note(self, refused, what):
        """Count a drop (or a refusal) for the budget; warn once an episode."""
        if refused:
            self.refused += 1
        else:
            self.dropped += 1
        if not self.warned:
            self.warned = True
            self.b.log(30, "memory_budget_bytes %d reached, refusing: %s"
                     % (self.limit, what))
