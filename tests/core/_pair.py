# A broker and in-memory clients wired together with no sockets (h11's
# ConnectionPair idea): clients encode packets into data_received() and decode
# what the broker queued for them.
from edge.mqtt import codec
from edge.mqtt.broker import Broker
from edge.mqtt.packets import Connect, Subscribe, Publish, Puback, Pubrec, Pubcomp, Pubrel


# The gateway profile's config as JSON text, or None to load it here. At a
# board's 64 KiB heap edge.config's schema (12.8 KB live) does not fit beside
# the broker's and the CoAP code (a board's boot frees it once it has its
# config): tests/test_micropython_core.py computes config.load's result under
# CPython and hands it in here, the settings a test gives merged as load does.
BOARD_CONFIG = None


def make_broker(now=0, **broker_cfg):
    if BOARD_CONFIG is None:
        from edge import config

        cfg = config.load({"broker": broker_cfg} if broker_cfg else {}, "gateway")
    else:
        import json

        cfg = json.loads(BOARD_CONFIG)  # a fresh copy: a Broker may keep and change it
        cfg["broker"].update(broker_cfg)
    return Broker(cfg, now)


class Client:
    _next = [0]

    def __init__(self, broker, now=0, v5=False):
        Client._next[0] += 1
        self.cid = Client._next[0]
        self.broker = broker
        assert broker.open(self.cid, now)
        self.conn = broker.conns[self.cid]
        self.pending = b""
        self.backlog = []  # packets read by connect() after the CONNACK
        self.v5 = v5  # MQTT 5.0: CONNECT level 5, properties on every packet

    def send(self, pkt, now=0):
        self.send_raw(codec.encode(pkt, self.v5), now)

    def send_raw(self, data, now=0):
        self.broker.data_received(self.cid, data, now)

    def recv(self):
        """Every packet the broker has queued for this client."""
        data = self.pending + self.conn.take()
        out = self.backlog
        self.backlog = []
        i = 0
        while True:
            pkt, used = codec.decode(data, i, len(data), self.v5)
            if pkt is None:
                break
            out.append(pkt)
            i += used
        self.pending = data[i:]
        return out

    @property
    def closed(self):
        return self.conn.closing

    def connect(self, client_id, clean=True, keepalive=60, now=0, **kw):
        if self.v5:
            kw.setdefault("level", 5)
        self.send(Connect(client_id, clean, keepalive, **kw), now)
        pkts = self.recv()
        self.backlog = pkts[1:]
        return pkts[0]

    def subscribe(self, *filters_qos, pid=1, props=None):
        self.send(Subscribe(pid, list(filters_qos), props))
        return self.recv()

    def lose(self, now=0):
        """The socket died (no DISCONNECT)."""
        self.broker.connection_lost(self.cid, now)

    def ack_all(self, pkts):
        """Acknowledge received PUBLISHes as a well-behaved client would."""
        for p in pkts:
            if p.kind == 3 and p.qos == 1:
                self.send(Puback(p.pid))
            elif p.kind == 3 and p.qos == 2:
                self.send(Pubrec(p.pid))
            elif p.kind == 6:
                self.send(Pubcomp(p.pid))


def publishes(pkts):
    return [p for p in pkts if p.kind == 3]


def publish(client, topic, payload, qos=0, retain=False, pid=0, props=None):
    client.send(Publish(topic, payload, qos, retain, False, pid, props))
    return client.recv()


def pubrel(client, pid):
    client.send(Pubrel(pid))
    return client.recv()
