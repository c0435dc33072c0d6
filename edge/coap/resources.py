# The resources, with the URIs of EMQX 5's CoAP gateway (docs/coap.md):
#   /ps/{topic}        POST/PUT publish; GET with Observe subscribes (a
#                      filter: + and # allowed), without reads the retained
#                      message as /r does
#   /r/{topic}         GET the retained message; observable
#   /.well-known/core  the links (RFC 6690)
# handle() returns the response as (code, options, payload); endpoint.py
# makes it a message. The broker is reached through its local-client API
# (Broker.publish/subscribe/unsubscribe) and its retained store, read only.
# With [auth] on (edge/auth/guard.py, docs/security.md) a request says who
# it is with EMQX's query names u, p, c: a bad login gets 4.01, what the
# ACL file does not allow 4.03.
from edge.compat import const
from edge.coap.codec import option, uint, values
from edge.errors import RemoteProtocolError

_GET = const(1)
_POST = const(2)
_PUT = const(3)
_OBSERVE = const(6)
_URI_PATH = const(11)
_URI_QUERY = const(15)
_ACCEPT = const(17)
_BLOCK1 = const(27)
_BLOCK2 = const(23)
_SIZE1 = const(60)
_LINK_FORMAT = const(40)  # application/link-format (RFC 6690 §7.2)
_CONTENT_FORMAT = const(12)
# Response codes, class << 5 | detail (RFC 7252 §12.1.2)
_CHANGED = const(0x44)             # 2.04
_CONTENT = const(0x45)             # 2.05
_BAD_REQUEST = const(0x80)         # 4.00
_UNAUTHORIZED = const(0x81)        # 4.01
_FORBIDDEN = const(0x83)           # 4.03
_NOT_FOUND = const(0x84)           # 4.04
_METHOD_NOT_ALLOWED = const(0x85)  # 4.05
_NOT_ACCEPTABLE = const(0x86)      # 4.06
_TOO_LARGE = const(0x8D)           # 4.13
# observe.py's flags (kept equal there): QoS in bits 0-1
_RETAINED = const(4)  # a /r observer
_WILD = const(8)      # its filter has a wildcard
_MAY_WRITE = const(2)      # edge/auth/guard.py may()'s access
_MAY_SUBSCRIBE = const(5)  # read, a filter


def handle(ep, peer, code, token, opts, payload, now):
    try:
        path = [str(v, "utf-8") for v in values(opts, _URI_PATH)]
        # as str, compared with str constants: a bytes constant is an object
        # on a board's heap, a short str one an interned name
        query = [str(v, "utf-8") for v in values(opts, _URI_QUERY)]
    except ValueError:  # UnicodeError: not UTF-8 (RFC 7252 §5.10.1)
        return _BAD_REQUEST, [], b""
    if not path:
        return _NOT_FOUND, [], b""
    head = path[0]
    if head == "ps" or head == "r":
        topic = "/".join(path[1:])
        if not topic:
            return _BAD_REQUEST, [], b""
        # EMQX's query names: q/qos 0-2 and r/retain (0/1/true/false);
        # c (client id), u, p with [auth] on (the Guard reads them); t
        # (token) is accepted and not used. Unknown names are ignored.
        # q: qos | 4 if retain
        q = 0
        for v in query:
            i = v.find("=")
            name = v[:i] if i >= 0 else v
            val = v[i + 1:] if i >= 0 else ""
            if name == "q" or name == "qos":
                if len(val) != 1 or val < "0" or val > "2":
                    return _BAD_REQUEST, [], b""
                q = q & 4 | ord(val) - 0x30
            elif name == "r" or name == "retain":
                if val == "1" or val == "true":
                    q |= 4
                elif val == "0" or val == "false":
                    q &= 3
                else:
                    return _BAD_REQUEST, [], b""
        rules = None
        auth = ep.broker.auth
        if auth is not None:
            rules = auth.coap(query, peer, now)
            if type(rules) is int:
                ep.stats.refusals += 1
                return rules, [], b""  # 4.01 Unauthorized
        if head == "r":
            if code != _GET:
                return _METHOD_NOT_ALLOWED, [], b""
            return get(ep, peer, token, topic, q | _RETAINED, opts, now, rules)
        if code == _GET:
            return get(ep, peer, token, topic, q, opts, now, rules)
        if code == _POST or code == _PUT:
            if rules is not None and not auth.may(rules, topic, _MAY_WRITE):
                return _FORBIDDEN, [], b""
            return publish(ep, peer, topic, q, opts, payload, now)
        return _METHOD_NOT_ALLOWED, [], b""  # RFC 7252 §5.8
    if head == ".well-known" and len(path) == 2 and path[1] == "core":
        if code != _GET:
            return _METHOD_NOT_ALLOWED, [], b""
        accept = option(opts, _ACCEPT)
        if accept is not None and uint(accept) != _LINK_FORMAT:
            return _NOT_ACCEPTABLE, [], b""  # RFC 7252 §5.10.4
        return _CONTENT, [_CONTENT_FORMAT, _LINK_FORMAT], links(query)
    return _NOT_FOUND, [], b""


def links(query):
    """/.well-known/core's document (RFC 6690 §5), only the links that pass
    every name=value filter of the query (RFC 6690 §4.1): a value ending in
    * matches a prefix; href matches the link's URI, rt/if/ct any of their
    space-separated values, another attribute its whole value. No link
    passing is a 2.05 with an empty document, as aiocoap answers."""
    out = []
    for link in ('</ps>;rt="core.ps";obs', "</r>;obs"):
        parts = link.split(";")
        ok = True
        for f in query:
            i = f.find("=")
            if i < 0:
                continue  # not a filter (RFC 6690 §4.1: name=value)
            name = f[:i]
            want = f[i + 1:]
            if name == "href":
                vals = [parts[0][1:-1]]
            else:
                vals = []
                for a in parts[1:]:
                    j = a.find("=")
                    if j >= 0 and a[:j] == name:
                        v = a[j + 1:].strip('"')
                        vals = v.split(" ") if name in ("rt", "if", "ct") else [v]
            for v in vals:
                if v == want or (want[-1:] == "*" and v.startswith(want[:-1])):
                    break
            else:
                ok = False
        if ok:
            out.append(link)
    return ",".join(out).encode()


def publish(ep, peer, topic, q, opts, payload, now):
    if topic.startswith("$SYS") or topic.startswith("$share/"):
        # The broker's own tree, and a filter's form (MQTT 5.0 §4.8.2): not
        # written by clients, as on the MQTT side
        return _FORBIDDEN, [], b""
    ropts = []
    b1 = option(opts, _BLOCK1)
    if b1 is not None:
        from edge.coap import block

        r = block.receive(ep, peer, topic, uint(b1), opts, payload, now)
        if type(r) is tuple:
            return r  # 2.31 Continue, or the transfer's error
        payload = r
        ropts = [_BLOCK1, uint(b1) & ~8]  # RFC 7959 §2.3: the last block's number
    elif len(payload) > ep.max_payload:
        # RFC 7959 §2.9.3: too large, and how much we take
        ep.stats.refusals += 1
        return _TOO_LARGE, [_SIZE1, ep.max_payload], b""
    try:
        ep.broker.publish(topic, payload, q & 3, bool(q & 4))
    except RemoteProtocolError:  # a wildcard, too many levels, U+0000...
        return _BAD_REQUEST, [], b""
    ep.stats.publishes += 1
    return _CHANGED, ropts, b""


def get(ep, peer, token, topic, flags, opts, now, rules=None):
    # rules: the requester's ACL Rules with [auth] on
    if "+" in topic or "#" in topic:
        if flags & _RETAINED:
            return _BAD_REQUEST, [], b""  # /r names one topic
        flags |= _WILD
    if rules is not None and not ep.broker.auth.may(rules, topic, _MAY_SUBSCRIBE):
        return _FORBIDDEN, [], b""  # (a filter: within a read grant, as SUBSCRIBE)
    obs = option(opts, _OBSERVE)
    if obs is not None:
        obs = uint(obs)
        if obs == 0:  # RFC 7641 §2: register
            from edge.coap import observe

            return observe.register(ep, peer, token, topic, flags, opts, now, rules)
        if obs == 1 and ep.obs:  # deregister, then answer as a plain GET (RFC 7641 §3.6)
            from edge.coap import observe

            observe.deregister(ep, (peer, token))
    if flags & _WILD:
        return _BAD_REQUEST, [], b""  # a filter reads nothing
    msg = None
    b2 = option(opts, _BLOCK2)
    if b2 is not None and uint(b2) >> 4 and ep.obs:
        # a later block of a notification's payload (RFC 7959 §3.4)
        from edge.coap import observe

        msg = observe.held(ep, peer, topic)
    if msg is None:
        msg = retained(ep, topic)
    if msg is None:
        return _NOT_FOUND, [], b""
    return _CONTENT, [], msg.payload


def retained(ep, topic):
    """The live retained message of topic, or None."""
    msg = ep.broker.retained.get(topic)
    return msg if msg is not None and live(msg) else None


def live(msg):
    """False for a 5.0 message past its Message Expiry Interval (5.0
    §3.3.2.3.3; the broker deletes it on its next read of it)."""
    expired = getattr(msg, "expired", None)  # a Message5 (edge/mqtt/v5.py)
    return expired is None or msg.props is None or not expired()
