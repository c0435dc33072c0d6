# The uplink's commands down (docs/uplink.md "Commands down"), a part of
# Uplink (edge/bridge/uplink.py) split off by duty: the command queue's
# declaration, then each command persisted, acked upstream and published
# locally, redeliveries recognised by their message_id. Sans-IO, as
# uplink.py: `self` is the Uplink (its c, outbox, broker, log, edge_id).
from edge.bridge import routing

_PREFETCH = 16    # commands unacked at a time
_SEEN_MAX = 256   # command message_ids remembered (redeliveries: at most _PREFETCH a connection)
# The command queue (AMQP): a quorum queue where the server has them
# (RabbitMQ >= 3.8), so commands survive a node's loss; a queue that exists
# with other arguments is refused with a channel close (406
# PRECONDITION_FAILED, AMQP 0-9-1 §1.7.2.1): then it is used as it is (a
# passive declare), and one that does not exist (404) is declared classic
# durable. Each step takes one reconnection, at once. STOMP the same way:
# RabbitMQ's STOMP plugin takes x-queue-type on a durable SUBSCRIBE (and
# answers an ERROR frame, closing, for a queue declared otherwise); "as it
# is" there is the /amq/queue/<name> destination, which declares nothing.
_QUORUM = {"x-queue-type": "quorum"}


def _quorum_ok(props):
    # RabbitMQ's server properties: product and version ("3.10.8"); STOMP:
    # the CONNECTED frame's server header ("RabbitMQ/3.10.8")
    p = props
    if type(p) is str and p.startswith("RabbitMQ/"):
        p = {"product": "RabbitMQ", "version": p[9:]}
    if type(p) is not dict or p.get("product") != "RabbitMQ":
        return False
    v = str(p.get("version", "")).split(".")
    try:
        return (int(v[0]), int(v[1])) >= (3, 8)
    except (ValueError, IndexError):
        return False


class Commands:
    def _commands_init(self):
        self.cmd_wait = []      # [ack id, seq, mid, topic, body, client, dup]: persisted, not yet acked
        self.cmd_held = []      # [ack id, key, body, mid, client]: the outbox was full, not acked
        self.cmd_deferred = 0   # commands held for a full outbox (counted)
        self.seen = {}          # command message_id -> its K_SEEN seq (0: in RAM only)
        self.seen_q = []        # the same mids, oldest first (bounded: _SEEN_MAX)
        self.cmd_dups = 0       # redelivered commands recognised
        self.cmd_decl = "quorum"  # how the queue is declared: quorum, passive, classic
        self.declaring = False  # queue.declare sent, its answer awaited (AMQP)

    def _load_commands(self, cmds, seen):
        # commands a previous run persisted and maybe never published:
        # published now (at least once, locally), acked upstream or not (a
        # redelivery is recognised by its message_id)
        for seq, mid in seen:
            self._seen(mid, seq)
        for seq, mid, t, body in cmds:
            self._publish_cmd(t, body)
            self._seen(mid, self.outbox.cmd_done(seq, mid))
        if cmds:
            self._sync_published()

    # ---- the command queue
    def _subscribe_commands(self):
        """At connect: AMQP declares the queue first (the rest at its
        declare_ok: _declared()); True when the uplink may publish now."""
        c = self.c
        q = routing.cmd_queue(self.edge_id)
        amqp = self.scheme == "amqp"
        how = self.cmd_decl
        if how == "quorum" and not _quorum_ok(c.server_properties if amqp else c.server):
            how = self.cmd_decl = "classic"
        self.declaring = True
        if amqp:
            # Nothing is published until its answer: a refused declare
            # closes the channel, and the confirms of what was published on
            # it with it (sent again: duplicates). (RabbitMQ runs a
            # channel's methods in order: a declare it is slow to answer
            # holds what would follow it anyway: docs/uplink.md "Not yet".)
            c.declare_queue(q, arguments=_QUORUM if how == "quorum" else None, passive=how == "passive")
            return False
        h = {"prefetch-count": str(_PREFETCH)}
        if how == "passive":
            dest = "/amq/queue/" + q
        else:
            # /exchange/<x>/<pattern> with a durable subscription: the
            # plugin declares the named queue and binds it
            dest = "/exchange/%s/%s" % (self.exchange, routing.cmd_binding(self.edge_id))
            h.update({"durable": "true", "auto-delete": "false", "x-queue-name": q})
            if how == "quorum":
                h.update(_QUORUM)
        # As AMQP, nothing is published before its RECEIPT: a refused
        # SUBSCRIBE is an ERROR, and the connection closes with whatever
        # was unconfirmed on it (sent again: duplicates). (RabbitMQ's plugin
        # runs a connection's frames in order: a SUBSCRIBE it is slow to
        # answer holds the SENDs after it anyway.)
        c.subscribe(dest, "cmd", headers=h, receipt=True)
        return False

    def _declared(self, ev):
        # ("declare_ok", queue, messages, consumers): bound and consumed;
        # STOMP's ("subscribed", sub_id): done
        self.declaring = False
        c = self.c
        q = routing.cmd_queue(self.edge_id)
        if ev[0] == "subscribed":
            self.log(20, "uplink: command queue %s (%s)" % (q, self.cmd_decl))
            return
        self.log(20, "uplink: command queue %s (%s), %d waiting" % (q, self.cmd_decl, ev[2]))
        c.bind(q, self.exchange, routing.cmd_binding(self.edge_id))
        c.qos(_PREFETCH)
        c.consume(q)

    def _declare_refused(self, code, text):
        # the channel closed on our queue.declare: the next connection (at
        # once) declares it the next way
        self.declaring = False
        q = routing.cmd_queue(self.edge_id)
        if type(text) is not str:  # STOMP: the ERROR frame's body
            try:
                text = str(text, "utf-8").strip()
            except UnicodeError:
                text = repr(text)
        if self.cmd_decl == "quorum" and (code == 406 or self.scheme != "amqp"):
            # (STOMP's ERROR frame has no code to tell a refusal of the
            # arguments from another: any is taken as one)
            self.cmd_decl = "passive"
            self.log(30, "uplink: %s: queue %s not declared as a quorum queue (%s %s): it exists with other "
                         "arguments; using it as it is" % (self.where, q, code, text))
        elif self.cmd_decl == "passive" and (code == 404 or "not_found" in str(code).lower()):
            self.cmd_decl = "classic"
            self.log(30, "uplink: %s: queue %s gone (%s %s): declared as a classic durable queue"
                     % (self.where, q, code, text))
        else:
            self.log(40, "uplink: %s: queue %s refused (%s %s)" % (self.where, q, code, text))
            return
        self.again = True

    # ---- each command
    def _command(self, ack, key, body, mid):
        # persisted, then acked upstream, then published locally: the
        # ack waits for _settle_commands() (the outbox synced)
        if key.startswith("/"):  # STOMP: /topic/<key> or /exchange/<x>/<key>
            key = key[key.rfind("/") + 1:]
        t = routing.cmd_topic(self.edge_id, key)
        if t is None:
            self.c.ack(ack)  # not ours: acked and dropped
            return
        mid = mid or ""
        if mid and mid in self.seen:
            self.cmd_dups += 1  # a redelivery (a crash before our ack reached it)
            self.c.ack(ack)
            return
        ob = self.outbox
        if ob is None:
            # no persistence: published, then acked (a crash in between
            # loses nothing; one before the publish does)
            self.commands_in += 1
            self._publish_cmd(t, body)
            self.c.ack(ack)
            if mid:
                self._seen(mid, 0)
            return
        if mid:
            for e in self.cmd_wait:
                if e[2] == mid:  # its first copy is not durable yet: acked with it
                    self.cmd_dups += 1
                    self.cmd_wait.append([ack, e[1], mid, t, body, self.c, True])
                    return
        seq = -1 if self.cmd_held else ob.cmd_append(mid, t, body)  # (in order behind held ones)
        if seq < 0:
            # The outbox is full: not acked, so still RabbitMQ's; tried
            # again at each tick (_retry_held) as confirms make room, and
            # redelivered by RabbitMQ if the link drops meanwhile. At most
            # _PREFETCH are held: RabbitMQ sends no more meanwhile.
            if not self.cmd_held:
                self.log(30, "uplink: outbox full: command on %s held unacked until there is room" % t)
            self.cmd_deferred += 1
            self.cmd_held.append([ack, key, body, mid, self.c])
            return
        self.cmd_wait.append([ack, seq, mid, t, body, self.c, False])

    def _retry_held(self):
        held = self.cmd_held
        self.cmd_held = []
        for i in range(len(held)):
            ack, key, body, mid, c = held[i]
            if c is not self.c:
                continue  # its connection is gone: RabbitMQ redelivers it
            self._command(ack, key, body, mid)
            if self.cmd_held:  # still full: the rest wait behind it, in order
                self.cmd_held.extend(held[i + 1:])
                self.cmd_deferred -= 1  # (counted once, when first held)
                return

    def _settle_commands(self):
        # The persisted commands synced (a sync on the loop: commands are
        # few), then each acked on the connection it came on (a lost one
        # redelivers it: recognised by its mid) and published locally,
        # its record replaced by a K_SEEN one, and that synced before any
        # of this goes out (_sync_published)
        try:
            self.outbox.log.flush()
        except OSError as e:
            self.log(40, "uplink: command not persisted (%s): acked later" % e)
            return  # retried at the next feed or tick
        for ack, seq, mid, t, body, c, dup in self.cmd_wait:
            if c is self.c and c is not None:
                c.ack(ack)
            if not dup:
                self.commands_in += 1
                self._publish_cmd(t, body)
                self._seen(mid, self.outbox.cmd_done(seq, mid))
        self.cmd_wait = []
        self._sync_published()

    def _sync_published(self):
        # The local publish only queued the deliveries (the shell writes
        # them after feed() returns: uplink_cpython.py), and the store's
        # records of them for persistent sessions: the outbox's K_SEEN and
        # the store's records are synced here, before any delivery or the
        # upstream ack goes out. A crash before this sync: nothing went
        # out, the command is published once at the next start; after it:
        # it is not published again, and a persistent session has it
        # from the store. (A sync on the loop: commands are few.)
        try:
            self.outbox.log.flush()
            st = self.broker.store
            if st is not None:
                st.log.flush()
        except OSError as e:
            # the group commit syncs them later; a crash before that may
            # publish a command again at the next start
            self.log(40, "uplink: published command not synced (%s)" % e)

    def _publish_cmd(self, t, body):
        try:
            self.broker.publish(t, body, 1)
        except Exception as e:
            self.log(30, "uplink: command on %s dropped: %s" % (t, e))

    def _seen(self, mid, seq):
        if not mid:
            return
        self.seen[mid] = seq
        q = self.seen_q
        q.append(mid)
        if len(q) > _SEEN_MAX:
            old = q.pop(0)
            s = self.seen.pop(old, 0)
            if s > 0:
                self.outbox.forget(s)
