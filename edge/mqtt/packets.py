# MQTT control packets as small plain classes (docs/design.md H3):
# positional __init__, __slots__ through @slots (CPython only: MicroPython
# ignores them but would pay heap for them, see compat.py), no properties.
# `kind` is the fixed-header packet type; the codec and the broker's dispatch
# tables key on it. Packets of one shape share a class with `kind` per
# instance, built by functions named for the packets (Puback(pid), ...): on
# a board a class costs about 260 bytes of heap, a function about 40. `props` is None for 3.1.1, else a dict {property id: value}
# filled in by the 5.0 codec (user properties as a list of (name, value)).
from edge.compat import const, slots

# Packet types as private consts (folded into the bytecode, no heap on a
# board); the public names are in consts.py, tests/core/test_consts.py checks
# that the two agree.
_CONNECT = const(1)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBSCRIBE = const(8)
_SUBACK = const(9)
_UNSUBSCRIBE = const(10)
_UNSUBACK = const(11)
_PINGREQ = const(12)
_PINGRESP = const(13)
_DISCONNECT = const(14)
_AUTH = const(15)


@slots(
    "proto", "level", "client_id", "clean", "keepalive", "username",
    "password", "will_topic", "will_payload", "will_qos", "will_retain",
    "will_props", "props",
)
class Connect:
    kind = _CONNECT

    def __init__(self, client_id, clean=True, keepalive=60, username=None,
                 password=None, will_topic=None, will_payload=b"", will_qos=0,
                 will_retain=False, level=4, proto="MQTT", will_props=None,
                 props=None):
        self.proto = proto
        self.level = level
        self.client_id = client_id
        self.clean = clean
        self.keepalive = keepalive
        self.username = username
        self.password = password
        self.will_topic = will_topic  # None: no will
        self.will_payload = will_payload
        self.will_qos = will_qos
        self.will_retain = will_retain
        self.will_props = will_props
        self.props = props


@slots("session_present", "reason", "props")
class Connack:
    kind = _CONNACK

    def __init__(self, session_present=False, reason=0, props=None):
        self.session_present = session_present
        self.reason = reason
        self.props = props


@slots("topic", "payload", "qos", "retain", "dup", "pid", "props")
class Publish:
    kind = _PUBLISH

    def __init__(self, topic, payload=b"", qos=0, retain=False, dup=False,
                 pid=0, props=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.pid = pid
        self.props = props


@slots("kind", "pid", "reason", "props")
class Ack:
    # PUBACK, PUBREC, PUBREL, PUBCOMP (3.1.1 §3.4-3.7, 5.0 §3.4-3.7)
    def __init__(self, kind, pid, reason=0, props=None):
        self.kind = kind
        self.pid = pid
        self.reason = reason
        self.props = props


def Puback(pid, reason=0, props=None):
    return Ack(_PUBACK, pid, reason, props)


def Pubrec(pid, reason=0, props=None):
    return Ack(_PUBREC, pid, reason, props)


def Pubrel(pid, reason=0, props=None):
    return Ack(_PUBREL, pid, reason, props)


def Pubcomp(pid, reason=0, props=None):
    return Ack(_PUBCOMP, pid, reason, props)


@slots("kind", "pid", "topics", "props")
class Sub:
    # SUBSCRIBE and UNSUBSCRIBE
    def __init__(self, kind, pid, topics, props=None):
        self.kind = kind
        self.pid = pid
        # SUBSCRIBE: [(filter str, options int)]: bits 0-1 QoS; 5.0 adds bit 2
        # No Local, bit 3 Retain As Published, bits 4-5 Retain Handling
        # (§3.8.3.1). UNSUBSCRIBE: [filter str]
        self.topics = topics
        self.props = props


def Subscribe(pid, topics, props=None):
    return Sub(_SUBSCRIBE, pid, topics, props)


def Unsubscribe(pid, topics, props=None):
    return Sub(_UNSUBSCRIBE, pid, topics, props)


@slots("kind", "pid", "codes", "props")
class SubAck:
    # SUBACK and UNSUBACK
    def __init__(self, kind, pid, codes, props=None):
        self.kind = kind
        self.pid = pid
        self.codes = codes  # UNSUBACK: 5.0 only, one reason code per filter
        self.props = props


def Suback(pid, codes, props=None):
    return SubAck(_SUBACK, pid, codes, props)


def Unsuback(pid, codes=None, props=None):
    return SubAck(_UNSUBACK, pid, codes, props)


@slots("kind", "reason", "props")
class Reason:
    # DISCONNECT and AUTH (5.0 §3.14, §3.15); PINGREQ and PINGRESP, which
    # carry nothing, too (reason 0, no props)
    def __init__(self, kind, reason=0, props=None):
        self.kind = kind
        self.reason = reason
        self.props = props


def Pingreq():
    return Reason(_PINGREQ)


def Pingresp():
    return Reason(_PINGRESP)


def Disconnect(reason=0, props=None):
    return Reason(_DISCONNECT, reason, props)


def Auth(reason=0, props=None):
    return Reason(_AUTH, reason, props)
