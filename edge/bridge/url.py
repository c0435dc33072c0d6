# The [upstream] url (docs/uplink.md): scheme://user:pass@host:port/vhost,
# scheme amqp (port 5672 by default) or stomp (61613), or the same over TLS:
# amqps (5671, RabbitMQ's URI spec) or stomp+ssl (61614, RabbitMQ's STOMP
# TLS listener; docs/uplink.md "TLS"). parse() names the protocol (amqp or
# stomp) whichever the transport; tls() tells the transport. Percent-escapes in
# the user, password and vhost are decoded (RFC 3986 §2.1; RabbitMQ's URI
# spec does the same: "%2f" is the vhost "/"). An empty path is the vhost
# "/". Portable (no urllib on MicroPython).
#
# A list of URLs (separated by commas or spaces: a comma inside a password
# is written %2C) names the nodes of a RabbitMQ cluster, tried in turn
# (docs/uplink.md "Reconnecting").

_PORTS = {"amqp": 5672, "stomp": 61613, "amqps": 5671, "stomp+ssl": 61614}
_PROTO = {"amqps": "amqp", "stomp+ssl": "stomp"}  # over TLS: the protocol spoken


def tls(url):
    """True for a URL whose connection is TLS (amqps://, stomp+ssl://)."""
    i = url.find("://")
    return i > 0 and url[:i].lower() in _PROTO


def _unquote(s):
    if "%" not in s:
        return s
    out = bytearray()
    b = s.encode()
    i = 0
    while i < len(b):
        if b[i] == 37 and i + 2 < len(b):
            out.append(int(b[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return out.decode()


def parse(url):
    """(protocol, user, password, host, port, vhost), protocol "amqp" or
    "stomp" (tls() says whether over TLS); ValueError with a reason
    that never quotes the password. Of a list, every URL is checked (the
    error names which) and the first one's returned: edge/config.py
    validates upstream.url with it (the board's heap: no other name)."""
    if "," in url or " " in url:
        return parse_list(url)[0]
    return _parse(url)


def _parse(url):
    i = url.find("://")
    if i < 0:
        raise ValueError("must look like amqp://user:pass@host:5672/vhost or stomp://...")
    scheme = url[:i].lower()
    if scheme not in _PORTS:
        raise ValueError("scheme must be amqp, amqps, stomp or stomp+ssl, got %r" % scheme[:16])
    rest = url[i + 3:]
    j = rest.find("/")
    auth, path = (rest, "") if j < 0 else (rest[:j], rest[j + 1:])
    user = password = "guest"
    k = auth.rfind("@")
    if k >= 0:
        cred, auth = auth[:k], auth[k + 1:]
        user, _, password = cred.partition(":")
    host, port = auth, _PORTS[scheme]
    if host.startswith("["):  # [v6 address]:port
        e = host.find("]")
        if e < 0:
            raise ValueError("unclosed [ in the host")
        if host[e + 1:e + 2] == ":":
            port = host[e + 2:]
        host = host[1:e]
    elif ":" in host:
        host, _, port = host.rpartition(":")
    try:
        port = int(port)
    except ValueError:
        raise ValueError("port must be a number")
    if not host:
        raise ValueError("no host")
    if not 0 < port < 65536:
        raise ValueError("port must be 1..65535, got %d" % port)
    try:
        user, password, vhost = _unquote(user), _unquote(password), _unquote(path) or "/"
    except ValueError:
        raise ValueError("bad percent-escape")
    return _PROTO.get(scheme, scheme), user, password, host, port, vhost


def redact(url):
    """url with the password replaced by ***, for logs."""
    i = url.find("://")
    k = url.rfind("@")
    if i < 0 or k < i:
        return url
    cred = url[i + 3:k]
    c = cred.find(":")
    return url if c < 0 else url[:i + 3] + cred[:c] + ":***" + url[k:]


def split(urls):
    """The URLs of a list (commas or spaces between them), in order."""
    return [u for u in urls.replace(",", " ").split() if u]


def parse_list(urls):
    """[parse(u)] for every URL of the list; ValueError (naming which one
    when there are several, never the password) for a bad one or none."""
    us = split(urls)
    if not us:
        raise ValueError("no URL")
    out = []
    for i, u in enumerate(us):
        try:
            out.append(_parse(u))
        except ValueError as e:
            if len(us) == 1:
                raise
            raise ValueError("URL %d of %d: %s" % (i + 1, len(us), e))
    return out
