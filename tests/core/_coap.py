# A CoAP Endpoint wired to a real in-memory Broker (no sockets), and a
# client's side of it: requests encoded with edge/coap/codec.py, replies
# decoded from ep.out. Plain functions and classes for tests/mpy_runner.py.
from edge.coap import codec
from edge.coap.endpoint import Endpoint
from tests.core._pair import make_broker

PEER = ("192.0.2.1", 5683)
OTHER = ("192.0.2.2", 5683)

GET = 1
POST = 2
PUT = 3
DELETE = 4
CON = 0
NON = 1
ACK = 2
RST = 3


class Limits:
    def __init__(self, **kw):
        self.max_observers = 4
        self.max_payload = 256
        self.block_size = 64
        self.exchange_lifetime = 247
        for k in kw:
            setattr(self, k, kw[k])


def make(broker=None, rng=0.5, **limits):
    """(broker, endpoint); rng: the value the injected rng returns."""
    b = broker if broker is not None else make_broker()
    return b, Endpoint(b, Limits(**limits), lambda: rng)


def request(code, path, mtype=CON, mid=1, token=b"tk", query=(), observe=None, payload=b"", opts=()):
    """A request datagram; path "ps/a/b" (split on "/"), extra opts as
    (number, value) pairs."""
    pairs = []
    if observe is not None:
        pairs.append((6, observe))
    for seg in path.split("/") if path else ():
        pairs.append((11, seg))
    for q in query:
        pairs.append((15, q))
    pairs.extend(opts)
    # stable sort by number (MicroPython's sort has no key= stability issue
    # for equal numbers kept in insertion order by an index)
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i][0], i))
    flat = []
    for i in order:
        flat.append(pairs[i][0])
        flat.append(pairs[i][1])
    return bytes(codec.encode(mtype, code, mid, token, flat, payload))


def feed(ep, data, peer=PEER, now=0):
    """Feed one datagram; return the decoded messages ep queued (and clear)."""
    ep.datagram(data, peer, now)
    return take(ep)


def take(ep, peers=False):
    out = []
    for data, peer in ep.out:
        m = codec.decode(bytes(data))
        out.append((m, peer) if peers else m)
    del ep.out[:]
    return out


def opt(m, num):
    return codec.option(m[4], num)


def uopt(m, num):
    v = codec.option(m[4], num)
    return None if v is None else codec.uint(v)
