# The uplink to RabbitMQ (docs/uplink.md, docs/design.md "Upstream"),
# sans-IO: the runtime's shell (edge/runtime/uplink_cpython.py) owns the
# socket and the clock; this owns the outbox, the protocol client
# (amqp.py or stomp.py) and the back-off.
#
#   u = Uplink(broker, section, rng, log, now)   # subscribes locally at once
#   host, port = u.host, u.port
#   when u.due(now): connect, then u.connected(now); send u.take()
#   u.feed(data, now); u.tick(now)               # then send u.take()
#   u.lost(now, why)                             # socket closed or failed
#   u.stop(now)                                  # clean stop: "offline", close
#
# Promised (docs/uplink.md): every message a local publisher sent on a
# `publish` filter is appended to the outbox and leaves it only when the
# upstream confirmed it (AMQP publisher confirm, STOMP RECEIPT): at least
# once. At most `window` are unconfirmed at a time; after a reconnect
# every unconfirmed one is sent again, oldest first, with the same
# message_id "<edge-id>:<seq>" (routing.message_id), so a consumer can drop
# the duplicates. A full outbox refuses the newest, counted; nothing queued
# is dropped to make room.
#
# The outbox: with persistence on, edge/store/outbox.py on a log of its own
# (the runtime opens it; `outbox` below), so the backlog survives a restart
# and the seq, the log's, is never reused: a message sent again after a
# restart carries the same message_id. The runtime holds the local
# publisher's PUBACK (or CoAP 2.04) until the record is durable: `appended`,
# if set, is told each record's seq (tcp_cpython.py's outbox_appended,
# which gates output on the outbox's sync). The queue `q`
# holds every waiting message in RAM as well (CPython only so far).
# Without persistence the queue alone is the outbox, bounded by
# outbox_budget_bytes.
from edge.bridge import routing
from edge.bridge.commands import Commands
from edge.bridge.url import parse_list, redact, split

_BASE_MS = 1000   # decorrelated-jitter back-off (docs/uplink.md "Reconnect")
_CAP_MS = 60000
_ENTRY = 64       # bytes an outbox entry costs beyond its key and body


def _filters(v):
    # "publish" is a comma-separated string of MQTT filters
    return [f.strip() for f in v.split(",") if f.strip()]


class Uplink(Commands):
    # (commands down: edge/bridge/commands.py)
    def __init__(self, broker, c, rng, log, now, outbox=None):
        # the nodes: one URL, or a cluster's list, tried in turn (lost())
        self.nodes = [(p, redact(u)) for p, u in zip(parse_list(c["url"]), split(c["url"]))]
        self.node = -1
        self._next_node()
        self.edge_id = c["edge_id"]
        self.exchange = c["exchange"]
        self.commands = c["commands"]
        self.heartbeat = c["heartbeat"]
        self.budget = c["outbox_budget_bytes"]
        self.window = c["window"]
        self.broker = broker
        self.rng = rng          # () -> float in [0, 1)
        self.log = log
        self.q = []             # [seq, routing key, body, qos, tag], oldest first
        self.inflight = 0       # q[:inflight] sent on this connection, unconfirmed
        self.bytes = 0
        self.seq = 0            # last message seq given (message_id)
        self.c = None           # the protocol client while connected
        self.up = False         # handshake done, sending
        self.up_at = 0          # when it came up
        self.stopping = False
        self.sleep = _BASE_MS
        self.retry_at = now     # connect at once
        self.state = "connecting"
        self.confirmed = 0
        self.refused = 0
        self.reconnects = 0
        self.returned = 0
        self.commands_in = 0
        self.connects = 0
        self._own = "cmd/" + self.edge_id
        self.outbox = outbox
        self.appended = None    # (seq) -> None: a record appended (the runtime's gate)
        self.wake = None        # () -> None: output queued outside feed()/tick() (the shell writes it)
        loaded = outbox.load() if outbox is not None else ((), (), ())
        for seq, body in loaded[0]:  # what a previous run left, oldest first
            n = body[1] << 8 | body[2]
            e = [seq, body[3:3 + n].decode(), bytes(body[3 + n:]), body[0], 0]
            self.q.append(e)
            self.bytes += _ENTRY + len(e[1]) + len(e[2])
        self.again = False      # reconnect at once (the command queue declared anew)
        self._commands_init()
        lc = self.lc = broker.local_client("$uplink", self._local)
        for f in _filters(c["publish"]):
            broker.subscribe(lc, f, 1)
        if outbox is not None:
            self._load_commands(loaded[1], loaded[2])

    # ---- local side
    def _local(self, msg, qos, retain=False):
        t = msg.topic
        if retain:
            return  # a retained message replayed at subscribe: not news
        if t.startswith(self._own) and (len(t) == len(self._own) or t[len(self._own)] == "/"):
            return  # a command we published locally: never back up
        body = bytes(msg.payload)
        rk = routing.routing_key(t)
        cost = _ENTRY + len(rk) + len(body)
        ob = self.outbox
        if ob is not None:
            k = rk.encode()
            seq = ob.append(bytes((qos, len(k) >> 8, len(k) & 255)) + k + body)
        elif self.bytes + cost > self.budget:
            seq = -1
        else:
            self.seq += 1
            seq = self.seq
        if seq < 0:
            self.refused += 1
            return
        if ob is not None and self.appended is not None:
            self.appended(seq)  # the PUBACK waits for this record's sync
        self.q.append([seq, rk, body, qos, 0])
        self.bytes += cost
        if self.up and self.inflight < self.window:
            idle = not self.inflight
            self._pump()
            if idle and self.wake is not None:
                # Nothing in flight: no confirm is coming to carry it, so
                # written at the end of this loop pass (with whatever else
                # the pass publishes), not left for the 250 ms tick. With
                # some in flight it goes with the write that follows the
                # next confirm: fewer, larger writes under load (Nagle's
                # rule, RFC 896), each read by RabbitMQ at once.
                self.wake()

    # ---- connection life
    def _next_node(self):
        self.node = (self.node + 1) % len(self.nodes)
        p, self.where = self.nodes[self.node]
        self.scheme, self.user, self.password, self.host, self.port, self.vhost = p

    def due(self, now):
        return self.c is None and not self.stopping and now >= self.retry_at

    def connected(self, now):
        """The socket is open: a fresh protocol client; its bytes in take()."""
        if self.scheme == "amqp":
            from edge.bridge.amqp import Amqp

            self.c = Amqp(self.user, self.password, self.vhost, self.heartbeat, now=now)
        else:
            from edge.bridge.stomp import Stomp

            self.c = Stomp(self.user, self.password, self.vhost, self.heartbeat * 1000, now=now)
        self.state = "handshake"

    def take(self):
        return self.c.take() if self.c is not None else b""

    def lost(self, now, why):
        """The connection is gone (or never came): unconfirmed ones wait for
        the next; reconnect after the back-off."""
        was_up = self.up
        self.c = None
        self.up = False
        self.declaring = False
        self.cmd_held = []  # not acked: RabbitMQ redelivers them
        for e in self.q[:self.inflight]:
            e[4] = 0
        self.inflight = 0
        if self.stopping:
            self.state = "stopped"
            return
        if self.again:
            # the command queue to be declared anew (commands.py): no back-off
            self.again = False
            self.retry_at = now
            self.state = "down"
            self.log(30, "uplink: %s: %s; reconnecting at once (%d waiting)" % (self.where, why, len(self.q)))
            return
        if was_up and now - self.up_at >= _CAP_MS:
            # a link that held for a while: from the base again (one that
            # drops right after its handshake, a bad exchange say, keeps
            # backing off)
            self.sleep = _BASE_MS
        # decorrelated jitter: uniform in [base, 3 * previous], capped
        self.sleep = min(_CAP_MS, int(_BASE_MS + self.rng() * (self.sleep * 3 - _BASE_MS)))
        self.retry_at = now + self.sleep
        self.reconnects += 1
        self.state = "down"
        where = self.where
        if len(self.nodes) > 1:
            self._next_node()  # a cluster's next node (a dead one may stay dead)
        self.log(30, "uplink: %s: %s; retry in %.1f s%s (%d waiting)"
                 % (where, why, self.sleep / 1000,
                    " at " + self.where if self.where != where else "", len(self.q)))

    def stop(self, now):
        """Clean stop: "offline" on edge/<id>/state, then close; the shell
        sends take() and waits a little for closed() (or gives up)."""
        self.stopping = True
        c = self.c
        if c is None:
            self.state = "stopped"
            return False
        if self.up:
            try:
                self._state_msg("offline")
            except Exception:
                pass
        c.close()
        # (before the handshake there is nothing to wait for: already CLOSED)
        return c.state != (8 if self.scheme == "amqp" else 3)

    # ---- bytes and time
    def feed(self, data, now):
        """Events out of the received bytes handled; False when the
        connection is over (close it, then lost())."""
        return self._events(self.c.feed(data, now), now)

    def tick(self, now):
        if self.c is None:
            return True
        if self.cmd_held:
            self._retry_held()
        return self._events(self.c.tick(now), now)

    def _events(self, evs, now):
        c = self.c
        alive = True
        for ev in evs:
            k = ev[0]
            if k == "confirm":
                self._confirm(ev[1], ev[2])
            elif k == "ready" or k == "connected":
                self._ready(now)
            elif k == "deliver":  # AMQP: (tag, routing key, props, body)
                self._command(ev[1], ev[2], ev[4], ev[3].get("message_id"))
            elif k == "message":  # STOMP: (ack id, destination, headers, body)
                h = ev[3]
                self._command(ev[1], h.get("destination", ev[2]), ev[4], h.get("amqp-message-id"))
            elif k == "nack":
                self._nack(ev[1], ev[2])
            elif (k == "declare_ok" or k == "subscribed") and self.declaring:
                self._declared(ev)
                if not self.up:
                    self._go()
            elif k == "return":
                self.returned += 1  # unroutable: its confirm follows
            elif k == "oversize":
                c.nack(ev[1], False, False)
            elif k == "close_ok":
                alive = False
            elif k in ("closed", "channel_closed", "error", "dead", "cancelled"):
                self.log(30, "uplink: %s: %s %s" % (self.where, k, ev[1:3] if len(ev) > 1 else ""))
                if (k == "channel_closed" or k == "error") and self.declaring:
                    self._declare_refused(ev[1], ev[2])
                if k == "channel_closed" or k == "cancelled":
                    c.close()
                else:
                    alive = False
        if self.cmd_wait:
            self._settle_commands()
        return alive and c.state != (8 if self.scheme == "amqp" else 3)  # CLOSED

    def _ready(self, now):
        self.up_at = now
        self.state = "up"
        self.connects += 1
        self.log(20, "uplink: connected to %s (%s), %d waiting" % (self.where, self.scheme, len(self.q)))
        if not self.commands or self._subscribe_commands():
            self._go()

    def _go(self):
        # publishing: "online", then the backlog
        self.up = True
        self._state_msg("online")
        self._pump()

    def _state_msg(self, text):
        t = routing.state_topic(self.edge_id)
        self._send(routing.routing_key(t), text.encode(), 1, None)

    def _send(self, rk, body, qos, mid):
        if self.scheme == "amqp":
            return self.c.publish(rk, body, qos, mid, exchange=self.exchange)
        h = {"x-mqtt-publish-qos": str(qos)}
        if mid is not None:
            h["amqp-message-id"] = mid
        if self.exchange == "amq.topic":
            dest = "/topic/" + rk
        else:
            dest = "/exchange/%s/%s" % (self.exchange, rk)
        # persistent (delivery_mode 2) for QoS >= 1 only, as the MQTT
        # plugin (RabbitMQ's STOMP sets no delivery_mode for the others:
        # transient all the same)
        return self.c.send(dest, body, headers=h, persistent=qos > 0)

    def _pump(self):
        q = self.q
        i = self.inflight
        n = min(self.window, len(q))
        if i >= n:
            return
        mid = self.edge_id + ":"  # routing.message_id(edge_id, seq), built here
        try:
            if self.scheme == "amqp":
                pub = self.c.publish
                x = self.exchange
                while i < n:
                    e = q[i]
                    e[4] = pub(e[1], e[2], e[3], mid + str(e[0]), exchange=x)
                    i += 1
            else:
                while i < n:
                    e = q[i]
                    e[4] = self._send(e[1], e[2], e[3], mid + str(e[0]))
                    i += 1
        finally:
            self.inflight = i  # (what was sent, should a send raise)

    def _confirm(self, tag, multiple):
        # q[:inflight] is in the order sent, so by delivery tag (_pump
        # appends, _nack moves one out of the window, lost() empties it):
        # a multiple confirm takes a prefix, a single one the entry found
        # by bisection, without walking the whole window per confirm. Out
        # of q with one slice deletion, not a `del q[i]` per message (each
        # moves the whole backlog behind it)
        q = self.q
        n = self.inflight
        if multiple:
            lo = hi = 0
            while hi < n and q[hi][4] <= tag:
                hi += 1
        else:
            lo, hi = 0, n
            while lo < hi:
                m = (lo + hi) >> 1
                if q[m][4] < tag:
                    lo = m + 1
                else:
                    hi = m
            hi = lo + 1 if lo < n and q[lo][4] == tag else lo
        if hi > lo:
            ob = self.outbox
            b = 0
            for i in range(lo, hi):
                e = q[i]
                b += _ENTRY + len(e[1]) + len(e[2])
                if ob is not None:
                    ob.ack(e[0])
            del q[lo:hi]
            self.bytes -= b
            self.confirmed += hi - lo
            self.inflight = n - (hi - lo)
        self._pump()

    def _nack(self, tag, multiple):
        # the server lost them: sent again after the unconfirmed ones
        q = self.q
        i = 0
        while i < self.inflight:
            e = q[i]
            if e[4] == tag or (multiple and e[4] < tag):
                del q[i]
                self.inflight -= 1
                e[4] = 0
                q.insert(self.inflight, e)
                if not multiple:
                    break
            else:
                i += 1
        self._pump()

    def close(self):
        for f in list(self.lc.subs):
            self.broker.unsubscribe(self.lc, f)

    def sys_values(self):
        """(name under $SYS/broker/, value) pairs, as systree.values()."""
        yield "uplink/state", self.state
        yield "uplink/backlog", len(self.q)
        yield "uplink/backlog/bytes", self.bytes
        yield "uplink/inflight", self.inflight
        yield "uplink/confirmed", self.confirmed
        yield "uplink/refused", self.refused
        yield "uplink/returned", self.returned
        yield "uplink/commands", self.commands_in
        yield "uplink/commands/duplicates", self.cmd_dups
        yield "uplink/commands/deferred", self.cmd_deferred
        yield "uplink/reconnects", self.reconnects
