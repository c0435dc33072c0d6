# Block-wise transfers (RFC 7959), loaded on first use: Block1 reassembles a
# large POST/PUT, bounded by max_payload; Block2 cuts a large response or
# notification into blocks of our block_size, or the client's if smaller.
#
# ep.xfers: peer -> a Block1 transfer in progress, a list
#   [topic, bytearray received so far, deadline]
# one per peer (RFC 7959 §2.3: identified by the endpoint and the URI; a
# new block 0 replaces it), at most max_transfers (5.03 beyond, counted),
# dropped when no block came for exchange_lifetime.
from binascii import crc32

from edge.compat import const
from edge.coap.codec import option, put, uint

_ETAG = const(4)
_BLOCK2 = const(23)
_BLOCK1 = const(27)
_SIZE2 = const(28)
_SIZE1 = const(60)
_MORE = const(8)
_CONTINUE = const(0x5F)            # 2.31
_BAD_REQUEST = const(0x80)         # 4.00
_BAD_OPTION = const(0x82)          # 4.02
_INCOMPLETE = const(0x88)          # 4.08
_TOO_LARGE = const(0x8D)           # 4.13
_SERVICE_UNAVAILABLE = const(0xA3)  # 5.03
_BERT = const(7)                   # SZX 7: reserved (RFC 7959 §2.2)


def etag(body):
    # Three bytes that change with the representation, so a client can tell
    # that blocks belong together (RFC 7959 §2.4, RFC 7252 §5.10.6)
    return crc32(body) & 0xFFFFFF


def first(opts, body, szx):
    """Block 0 of a notification's body; opts (holding Observe) gets ETag
    and Block2."""
    put(opts, _ETAG, uint(etag(body)))
    put(opts, _BLOCK2, _MORE | szx)
    return body[:16 << szx]


def response(ep, opts, code, ropts, body):
    """The block of body the request asks for (block 0 by default), at the
    smaller of our block size and the client's (RFC 7959 §2.4)."""
    szx = ep.szx
    num = 0
    b2 = option(opts, _BLOCK2)
    if b2 is not None:
        v = uint(b2)
        if v & 7 == _BERT:
            return _BAD_REQUEST, [], b""
        num = v >> 4
        if v & 7 < szx:
            szx = v & 7
    size = 16 << szx
    n = len(body)
    start = num * size
    if num and start >= n:
        return _BAD_OPTION, [], b""  # no such block
    end = start + size
    if n > size:
        put(ropts, _ETAG, uint(etag(body)))
    put(ropts, _BLOCK2, num << 4 | (_MORE if end < n else 0) | szx)
    if option(opts, _SIZE2) is not None:
        put(ropts, _SIZE2, n)  # RFC 7959 §4: the size, as asked
    return code, ropts, body[start:end] if start or end < n else body


def receive(ep, peer, topic, v, opts, payload, now):
    """A POST/PUT block with Block1 value v: the whole payload (bytes) once
    the last block came, else the response to send (code, opts, payload)."""
    num = v >> 4
    szx = v & 7
    if szx == _BERT:
        return _BAD_REQUEST, [], b""
    size = 16 << szx
    more = v & _MORE
    limit = ep.max_payload
    xfers = ep.xfers
    if xfers is None:
        xfers = ep.xfers = {}
    x = xfers.get(peer)
    if num == 0:
        s1 = option(opts, _SIZE1)
        if s1 is not None and uint(s1) > limit:
            return _too_large(ep, peer)  # RFC 7959 §4: told in advance
        if x is None and len(xfers) >= ep.max_transfers:
            ep.stats.refusals += 1
            return _SERVICE_UNAVAILABLE, [], b""
        x = xfers[peer] = [topic, bytearray(), 0]
    elif x is not None and x[0] == topic and more and len(x[1]) == (num + 1) * size:
        # the block we have already: a retransmission whose 2.31 was lost.
        # Answered again, nothing appended, so a non-final block is
        # idempotent and needs no reply cache entry (endpoint.py)
        return _CONTINUE, [_BLOCK1, num << 4 | _MORE | (szx if szx < ep.szx else ep.szx)], b""
    elif x is None or x[0] != topic or len(x[1]) != num * size:
        # RFC 7959 §2.9.2: a block missing or out of order
        if x is not None:
            del xfers[peer]
        ep.stats.errors += 1
        return _INCOMPLETE, [], b""
    buf = x[1]
    if more and len(payload) != size:
        del xfers[peer]  # RFC 7959 §2.2: only the last block may be short
        ep.stats.errors += 1
        return _BAD_REQUEST, [], b""
    if len(buf) + len(payload) > limit:
        return _too_large(ep, peer)
    buf += payload
    if more:
        x[2] = now + ep.lifetime
        # RFC 7959 §2.3: the block acknowledged, at our size if smaller
        return _CONTINUE, [_BLOCK1, num << 4 | _MORE | (szx if szx < ep.szx else ep.szx)], b""
    del xfers[peer]
    return bytes(buf)


def _too_large(ep, peer):
    # RFC 7959 §2.9.3: 4.13 with Size1, how much we take
    if ep.xfers:
        ep.xfers.pop(peer, None)
    ep.stats.refusals += 1
    return _TOO_LARGE, [_SIZE1, ep.max_payload], b""


def expire(ep, now):
    xfers = ep.xfers
    for peer in [p for p in xfers if xfers[p][2] <= now]:
        del xfers[peer]
