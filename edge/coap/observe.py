# Observers (RFC 7641) and the CONs we send, which are only notifications.
# Loaded on the first Observe registration.
#
# Every observer shares one LocalClient (edge/mqtt/local.py), subscribed
# once per distinct filter at QoS 2; deliver() finds the observers a message
# is for and sends each at min(message QoS, observer's QoS): NON for QoS 0,
# CON for QoS 1/2, and a CON at least every 24 hours (RFC 7641 §4.5). One
# LocalClient instead of one per observer keeps an observer to a list and
# its key (docs/coap.md "Memory"), at the price of a scan of the observers
# per message the client gets. The client's subscriptions count against the
# broker's max_subscriptions like any client's.
#
# ep.obs: (peer, token) -> observer, a list (RFC 7641 §3.1: the token
# identifies the observation, with the peer)
#   [filter, flags, last CON sent (ms), Message-ID of the last notification,
#    message held for a Block2 follow-up or None, NONs since the last CON
#    (, its ACL Rules with an ACL file: each notification is checked, as an
#    MQTT delivery)]
# flags: QoS (bits 0-1) | _RETAINED | _WILD | client's block SZX << 4
#
# ep.pend: peer -> our outstanding CON to that peer (NSTART 1, RFC 7252
# §4.7), a list
#   [mid, bytes, deadline, timeout, retransmissions, observer key, queue]
# queue: None or [(observer key, message)] waiting for the CON before them,
# at most max_queued (the overflow is counted in stats.dropped).
from edge.compat import const
from edge.coap.codec import encode, option, uint
from edge.errors import RemoteProtocolError

_CON = const(0)
_NON = const(1)
_FILTER = const(0)
_FLAGS = const(1)
_LAST_CON = const(2)
_LAST_MID = const(3)
_HELD = const(4)
_NONS = const(5)
_RULES = const(6)
_MAY_READ = const(1)  # edge/auth/guard.py may()'s access
_RETAINED = const(4)  # flags, as in resources.py
_WILD = const(8)
_OBSERVE = const(6)
_BLOCK2 = const(23)
_CONTENT = const(0x45)             # 2.05
_BAD_REQUEST = const(0x80)         # 4.00
_NOT_FOUND = const(0x84)           # 4.04
_SERVICE_UNAVAILABLE = const(0xA3)  # 5.03
_SUBACK_FAILURE = const(0x80)
_DAY = const(86400000)             # RFC 7641 §4.5: a CON at least every 24 h
_SEQ_MASK = const(0xFFFFFF)        # RFC 7641 §4.4: 24-bit sequence numbers
# RFC 7252 §4.8: ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4
_ACK_TIMEOUT = const(2000)
_ACK_RANDOM_SPAN = const(1000)     # ACK_TIMEOUT * (ACK_RANDOM_FACTOR - 1)
_MAX_RETRANSMIT = const(4)
# RFC 7252 §4.7 (PROBING_RATE) and RFC 7641 §4.5.1: a peer that does not
# answer must not be sent NONs at an unbounded rate. NONs get no answer, so
# after _NON_PER_CON NONs in a row the next notification is a CON, the probe
# (as Californium's NotificationCheckIntervalCount, libcoap's COAP_OBS_MAX_NON).
# While a CON to the peer goes unanswered past its first timeout, its NON
# notifications are skipped (RFC 7641 §4.5.2: a client wants the latest
# state, not every one) and counted in stats.dropped; after MAX_RETRANSMIT
# the observer is dropped. A silent peer so gets at most _NON_PER_CON NONs
# and then those of one ACK_TIMEOUT (docs/coap.md "Observe").
_NON_PER_CON = const(100)


def register(ep, peer, token, f, flags, opts, now, rules=None):
    """GET with Observe 0 (RFC 7641 §3.1): the response, the observer added
    (or updated: same peer and token, RFC 7641 §4.1) when it is a 2.05."""
    key = (peer, token)
    b2 = option(opts, _BLOCK2)
    szx = ep.szx
    if b2 is not None and uint(b2) & 7 < szx:
        szx = uint(b2) & 7  # the client's smaller block size (RFC 7959 §2.4)
    flags |= szx << 4
    obs = ep.obs
    e = obs.get(key)
    if e is not None and e[_FILTER] != f:
        deregister(ep, key)  # the token now observes something else
        e = None
    held = None
    if flags & _RETAINED:
        from edge.coap.resources import retained

        held = retained(ep, f)
        if held is None:
            # RFC 7641 §4.1: a non-2.xx response adds no observer
            if e is not None:
                deregister(ep, key)
            return _NOT_FOUND, [], b""
    if e is None:
        if len(obs) >= ep.max_observers:
            ep.stats.refusals += 1
            return _SERVICE_UNAVAILABLE, [], b""
        client = ep.client
        if client is None:
            client = ep.client = ep.broker.local_client("coap", lambda m, q, r: deliver(ep, m, r))
        if f in client.subs:
            for k in client.subs:  # share the filter's string: one copy
                if k == f:
                    f = k
                    break
        else:
            try:
                code = ep.broker.subscribe(client, f, 2)
            except RemoteProtocolError:
                return _BAD_REQUEST, [], b""  # a malformed filter
            if code == _SUBACK_FAILURE:
                ep.stats.refusals += 1  # the broker's limits (max_subscriptions...)
                return _SERVICE_UNAVAILABLE, [], b""
        e = obs[key] = [f, flags, now, -1, None, 0]
    else:
        e[_FLAGS] = flags
        del e[_RULES:]
    if rules is not None:  # [auth] on
        e.append(rules)
    ep.seq = seq = (ep.seq + 1) & _SEQ_MASK
    if flags & _WILD:
        # The retained messages matching the filter follow the response
        # (endpoint.py puts the response first), as a new MQTT subscription
        # gets them [MQTT-3.3.1-6]
        from edge.coap.resources import live

        for topic, msg in ep.broker.retained.match(f):
            if live(msg) and (len(e) <= _RULES or ep.broker.auth.may(e[_RULES], topic, _MAY_READ)):
                notify(ep, key, e, msg, msg.qos, now)
        return _CONTENT, [_OBSERVE, seq], b""
    if held is None:
        from edge.coap.resources import retained

        held = retained(ep, f)
    return _CONTENT, [_OBSERVE, seq], held.payload if held is not None else b""


def deregister(ep, key):
    """Drop an observer; its filter is unsubscribed when no other observer
    has it. False if there was none."""
    e = ep.obs.pop(key, None)
    if e is None:
        return False
    f = e[_FILTER]
    for o in ep.obs.values():
        if o[_FILTER] == f:
            return True
    ep.broker.unsubscribe(ep.client, f)
    return True


def held(ep, peer, f):
    """The message the peer's observer of f was last notified of block-wise,
    or None (RFC 7959 §3.4: the client GETs its later blocks)."""
    for key in ep.obs:
        e = ep.obs[key]
        if key[0] == peer and e[_FILTER] == f and e[_HELD] is not None:
            return e[_HELD]
    return None


def deliver(ep, msg, retain):
    # The shared LocalClient's callback. retain: a retained message a new
    # subscription gets; register() sends those to the new observer alone.
    if retain:
        return
    topic = msg.topic
    hits = None
    for key in ep.obs:
        e = ep.obs[key]
        flags = e[_FLAGS]
        f = e[_FILTER]
        if f == topic or (flags & _WILD and matches(f, topic)):
            if flags & _RETAINED and not msg.retain:
                continue  # /r: only a new retained value is a change
            if len(e) > _RULES and not ep.broker.auth.may(e[_RULES], topic, _MAY_READ):
                continue  # the ACL file: not readable by this observer
            if hits is None:
                hits = []
            hits.append(key)
    if hits is None:
        return
    now = ep.now  # as of the last datagram or tick
    for key in hits:
        e = ep.obs.get(key)
        if e is None:
            continue  # dropped meanwhile
        m = msg
        if e[_FLAGS] & _RETAINED:
            from edge.coap.resources import retained

            m = retained(ep, topic)  # None: deleted, 4.04 ends the observation
        notify(ep, key, e, m, msg.qos, now)


def notify(ep, key, e, msg, qos, now):
    if qos > e[_FLAGS] & 3:
        qos = e[_FLAGS] & 3
    peer = key[0]
    pend = ep.pend
    if pend is None:
        pend = ep.pend = {}
    p = pend.get(peer)
    # A NON goes out while the observer's run of NONs is short, and also past
    # it while a CON to the peer (the probe) is out and not yet retransmitted:
    # "then those of one ACK_TIMEOUT" (above), not queued behind the probe
    # (the queue's bound dropped them under load: tests/test_bench_coap_smoke.py)
    if not qos and now - e[_LAST_CON] < _DAY and (e[_NONS] < _NON_PER_CON or p is not None):
        if p is not None and p[4]:
            ep.stats.dropped += 1  # the peer is silent: PROBING_RATE (above)
            return
        e[_NONS] += 1
        _send(ep, key, e, msg, _NON, now)
        return
    if p is None:
        mid, data = _send(ep, key, e, msg, _CON, now)
        t = _ACK_TIMEOUT + int(ep.rng() * _ACK_RANDOM_SPAN)  # RFC 7252 §4.8: [2, 3] s
        pend[peer] = [mid, data, now + t, t, 0, key, None]
        return
    # NSTART 1 (RFC 7252 §4.7): wait for the outstanding CON, bounded
    q = p[6]
    if q is None:
        q = p[6] = []
    if len(q) >= ep.max_queued:
        ep.stats.dropped += 1
        return
    q.append((key, msg))


def _send(ep, key, e, msg, mtype, now):
    peer, token = key
    ep.mid = mid = (ep.mid + 1) & 0xFFFF  # our next Message-ID (endpoint.py)
    if msg is None:
        # the /r resource is gone: a 4.04 without Observe ends the
        # observation (RFC 7641 §3.2)
        data = encode(mtype, _NOT_FOUND, mid, token, [], b"")
        deregister(ep, key)
    else:
        ep.seq = seq = (ep.seq + 1) & _SEQ_MASK
        opts = [_OBSERVE, seq]
        body = msg.payload
        szx = e[_FLAGS] >> 4
        if len(body) > 16 << szx:
            # RFC 7959 §3.4: the first block, the client GETs the rest
            from edge.coap.block import first

            body = first(opts, body, szx)
            e[_HELD] = msg
        elif e[_HELD] is not None:
            e[_HELD] = None
        data = encode(mtype, _CONTENT, mid, token, opts, body)
        e[_LAST_MID] = mid
        if mtype == _CON:
            e[_LAST_CON] = now
            e[_NONS] = 0
    ep.out.append((data, peer))
    ep.stats.notifications += 1
    return mid, data


def answered(ep, peer, mid, reset, now):
    """An Empty ACK or RST from peer."""
    p = ep.pend.get(peer) if ep.pend else None
    if p is not None and p[0] == mid:
        if reset:
            deregister(ep, p[5])  # RFC 7641 §3.6: rejected, not interested
        _next(ep, peer, p, now)
        return
    if reset:  # an RST to a NON notification (RFC 7641 §3.6)
        for key in ep.obs:
            if key[0] == peer and ep.obs[key][_LAST_MID] == mid:
                deregister(ep, key)
                return


def _next(ep, peer, p, now):
    # The outstanding CON is done: send the next queued one still wanted
    q = p[6]
    while q:
        key, msg = q.pop(0)
        e = ep.obs.get(key)
        if e is None:
            continue
        mid, data = _send(ep, key, e, msg, _CON, now)
        t = _ACK_TIMEOUT + int(ep.rng() * _ACK_RANDOM_SPAN)
        p[0] = mid
        p[1] = data
        p[2] = now + t
        p[3] = t
        p[4] = 0
        p[5] = key
        return
    del ep.pend[peer]


def tick(ep, now):
    # RFC 7252 §4.2: retransmit with exponential back-off; after
    # MAX_RETRANSMIT the peer is taken as gone and the observer dropped
    # (RFC 7641 §4.5)
    pend = ep.pend
    due = [peer for peer in pend if pend[peer][2] <= now]
    for peer in due:
        p = pend[peer]
        if p[4] < _MAX_RETRANSMIT:
            p[4] += 1
            p[3] *= 2
            p[2] = now + p[3]
            ep.out.append((p[1], peer))
            ep.stats.retransmissions += 1
        else:
            if deregister(ep, p[5]):
                ep.stats.timeouts += 1
            _next(ep, peer, p, now)


def close(ep):
    client = ep.client
    for f in list(client.subs):
        ep.broker.unsubscribe(client, f)
    ep.obs = {}


def matches(f, topic):
    """Whether the filter f (validated) matches the topic name (MQTT
    §4.7.1, [MQTT-4.7.2-1]: no wildcard first level matches a $ topic)."""
    if topic[:1] == "$" and (f[:1] == "+" or f[:1] == "#"):
        return False
    i = j = 0
    nf = len(f)
    nt = len(topic)
    while True:
        if f.startswith("#", i):
            return True  # '#' is the last level, and matches its parent too
        fe = f.find("/", i)
        if fe < 0:
            fe = nf
        te = topic.find("/", j)
        if te < 0:
            te = nt
        if not (fe == i + 1 and f[i] == "+"):
            if fe - i != te - j or f[i:fe] != topic[j:te]:
                return False
        if fe == nf:
            return te == nt
        if te == nt:
            return f[fe + 1:] == "#"  # "a/#" matches "a"
        i = fe + 1
        j = te + 1
