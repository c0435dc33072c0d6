# The status page's figures (docs/gateway.md "Status page"): a snapshot of the
# broker as JSON (GET /status.json, and pushed every second to the page's live
# WebSocket, /live), and the page itself (gateway/status_page.py).
#
# Per-topic rates come from a local client subscribed to "#" through the
# broker's local-client API, only while a page is open: with nobody looking it
# costs the broker nothing per message. The message rate of the last hour is
# sampled always (one number every 10 s).
import asyncio
import json
import time
from collections import deque

from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping, TextMessage

from edge.mqtt import systree

_TICK_S = 1.0        # snapshot pushed to live pages
_HISTORY_S = 10      # one rate point per 10 s ...
_HISTORY_N = 360     # ... for the last hour
_MAX_TOPICS = 500    # topics counted; more are counted as "other"
_SHOW_TOPICS = 50    # the busiest shown
_SHOW_CLIENTS = 200
_SLOW_VIEWER = 1048576  # bytes unread by a page: it is skipped until it reads


class Status:
    def __init__(self, web):
        self.web = web
        self.live = set()       # web.Peer of open pages
        self.since = {}         # connection id -> (wall time, address, transport)
        self.history = deque((), _HISTORY_N)  # (unix time, msg/s received)
        self.topics = {}        # topic -> [count, count at the last tick, rate]
        self.other = 0          # messages on topics past _MAX_TOPICS
        self.client = None      # the "#" local client while pages are open
        self.task = None
        self._last = None       # (monotonic, msgs_received) at the last history point

    def start(self, broker, srv):
        # Which connection is which, since when: the TCP shell's opened()
        # seen from here (the core keeps no connect time)
        opened = srv.opened

        def watch(p):
            opened(p)
            if p.cid:
                tr = p.tr
                peer = tr.get_extra_info("peername")
                addr = "%s:%d" % peer[:2] if isinstance(peer, tuple) else str(peer)
                self.since[p.cid] = (time.time(), addr, "ws" if hasattr(tr, "ws") else "tcp")

        srv.opened = watch
        self._last = (time.monotonic(), broker.stats.msgs_received)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def close(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        for p in list(self.live):
            p.tr.close()
        self.live.clear()
        self._unwatch()

    # ---- the page's live WebSocket ---------------------------------------------
    def live_opened(self, peer):
        self.live.add(peer)
        self._watch()
        self._send(peer, self.snapshot())

    def live_data(self, peer, data):
        ws = peer.ws
        ws.receive_data(data)
        for ev in ws.events():
            if type(ev) is Ping:
                peer.tr.write(ws.send(ev.response()))
            elif type(ev) is CloseConnection:
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    peer.tr.write(ws.send(ev.response()))
                peer.tr.close()
                self.live_lost(peer)
                return
            # anything the page sends is ignored: it only listens

    def live_lost(self, peer):
        self.live.discard(peer)
        if not self.live:
            self._unwatch()

    def _send(self, peer, text):
        tr = peer.tr
        if peer.ws.state is ConnectionState.OPEN and tr.get_write_buffer_size() < _SLOW_VIEWER:
            tr.write(peer.ws.send(TextMessage(data=text)))

    # ---- topics, while a page is open --------------------------------------------
    def _watch(self):
        if self.client is None and self.web.broker is not None:
            b = self.web.broker
            self.client = b.local_client("$status", self._count)
            b.subscribe(self.client, "#", 0)

    def _unwatch(self):
        if self.client is not None:
            self.web.broker.unsubscribe(self.client, "#")
            self.client = None
            self.topics.clear()
            self.other = 0

    def _count(self, msg, qos, retain):
        if retain:
            return  # a retained message sent at subscribe time: not traffic
        t = self.topics.get(msg.topic)
        if t is None:
            if len(self.topics) >= _MAX_TOPICS:
                self.other += 1
                return
            t = self.topics[msg.topic] = [0, 0, 0.0]
        t[0] += 1

    # ---- the figures ---------------------------------------------------------
    async def _run(self):
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                self.tick(time.monotonic())
            except Exception as e:  # a status page must never stop the broker
                self.web.log(40, "status: %r" % e)

    def tick(self, now):
        b = self.web.broker
        for t in self.topics.values():
            t[2] = (t[0] - t[1]) / _TICK_S
            t[1] = t[0]
        t0, n0 = self._last
        if now - t0 >= _HISTORY_S:
            n = b.stats.msgs_received
            self.history.append((round(time.time()), round((n - n0) / (now - t0), 1)))
            self._last = (now, n)
        for cid in [c for c in self.since if c not in self.web.srv.peers]:
            del self.since[cid]
        if self.live:
            text = self.snapshot()
            for p in list(self.live):
                self._send(p, text)

    def snapshot(self):
        """The figures as JSON text."""
        b = self.web.broker
        now = time.time()
        sysv = {}
        for k, v in systree.values(b):
            sysv[k] = v
        clients = []
        for cid, conn in list(b.conns.items())[:_SHOW_CLIENTS]:
            sess = conn.session
            if sess is None:
                continue  # not past CONNECT yet
            at, addr, kind = self.since.get(cid, (None, "", "tcp"))
            clients.append({"id": sess.client_id, "address": addr, "transport": kind,
                            "protocol": "5.0" if conn.v5 else "3.1.1",
                            "since": round(at) if at else None,
                            "inflight": len(sess.inflight), "queued": len(sess.queue or ())})
        busiest = sorted(self.topics.items(), key=lambda kv: (-kv[1][2], -kv[1][0]))[:_SHOW_TOPICS]
        snap = {
            "time": round(now, 3),
            "sys": sysv,
            "clients": clients,
            "clients_total": sum(1 for c in b.conns.values() if c.session is not None),
            "topics": [{"topic": k, "count": v[0], "rate": v[2]} for k, v in busiest],
            "topics_watched": self.client is not None,
            "topics_total": len(self.topics),
            "topics_other": self.other,
            "retained": len(b.retained),
            "memory": {"rss": _rss(), "budget_used": b.limits.budget.used,
                       "budget": b.limits.memory_budget_bytes},
            "web": dict(vars(self.web.stats)),
            "history": list(self.history),
        }
        return json.dumps(snap)

    # ---- HTTP routes -----------------------------------------------------------
    def page(self, peer, path, query, body):
        from gateway.status_page import PAGE

        peer.respond(200, PAGE, "text/html; charset=utf-8")

    def json(self, peer, path, query, body):
        peer.respond(200, self.snapshot(), "application/json")


def _rss():
    from gateway.routes import _rss as rss

    return rss()
