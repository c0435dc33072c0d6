# A 5.0 message on flash: record kind 26, MSG5 (edge/store/layout.py), its
# properties kept as the PUBLISH property block they came in. Imported only
# when a 5.0 message is stored or replayed, so a broker that only ever sees
# 3.1.1 clients never loads it, nor edge/mqtt/props.py.
#
# Message Expiry (§3.3.2.3.3) is stored as what was left when the record was
# written, and counts again from the restart: the time the broker was down
# is not known (a board may have no clock that survives a power cut).
from edge.compat import const
from edge.mqtt.props import decode_props, encode_props
from edge.store.layout import encode

_K_MSG5 = const(26)
_PUBLISH = const(3)   # the packet type properties are checked against
_P_EXPIRY = const(0x02)


def body(msg, flags):
    """The MSG5 body of Message5 msg; flags as MSG's (QoS, RETAIN)."""
    props = msg.props
    if msg.expires is not None:
        props = dict(props or {})
        left = (msg.expires - msg.clock.now + 999) // 1000
        props[_P_EXPIRY] = left if left > 0 else 0
    return encode(_K_MSG5, (flags, msg.topic, msg.sender or "", encode_props(props, _PUBLISH), msg.payload))


def extra(msg):
    """Bytes a MSG5 record of Message5 msg takes beyond a MSG record's:
    its property block and sender (state.py _cost). Constant for the
    message's life: its properties are copied, never changed in place, and
    Message Expiry is a four-byte integer whatever is left of it."""
    return len(encode_props(msg.props, _PUBLISH)) + len(msg.sender or "")


def message(vals, clock):
    """The Message5 of a decoded MSG5 body; ValueError if its properties
    do not parse (a good CRC over a body that isn't ours)."""
    from edge.mqtt.v5 import message as message5

    flags, topic, sender, raw, payload = vals
    try:
        props = decode_props(memoryview(raw), 0, len(raw), _PUBLISH)[0]
        return message5(topic, payload, flags & 3, bool(flags & 4), props or None, sender or None, clock)
    except Exception as e:  # noqa: BLE001  RemoteProtocolError: not a ValueError
        raise ValueError("properties: %s" % e)
