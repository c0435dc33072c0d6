# The core modules keep private `_NAME = const(n)` copies of the wire numbers
# in edge/mqtt/consts.py (a board pays heap for public names, none for
# private consts). They must agree with the public table.
from edge.mqtt import broker, codec, connect, connection, consts, packets, props, publish, session, subscribe
from edge.mqtt import systree, topics, v5, v5subs

_MODULES = (broker, codec, connect, connection, packets, props, publish, session, subscribe, systree,
            topics, v5, v5subs)


def _public():
    return [(k, getattr(consts, k)) for k in dir(consts) if k[:1].isupper()]


def test_private_copies_equal_public_consts():
    # On CPython const() is the identity, so the private names exist as
    # module globals; MicroPython folds them away (nothing left to compare).
    checked = 0
    for mod in _MODULES:
        for name, value in _public():
            got = getattr(mod, "_" + name, None)
            if got is not None:
                assert got == value, (mod.__name__, name, got, value)
                checked += 1
    assert checked >= 30 or not hasattr(codec, "_MAX_VARINT"), checked


def test_private_connection_states_equal_connection_py():
    # the handler modules keep private copies of the connection states they
    # set (MicroPython folds them away: nothing left to compare there)
    for mod, name in ((connect, "CONNECTED"), (publish, "ERROR")):
        got = getattr(mod, "_" + name, None)
        assert got is None or got == getattr(connection, name), (mod.__name__, name)


def test_private_copies_of_the_trie_depth_equal_topics_py():
    # names deeper than topics._DEEP levels are kept whole by both trees
    from edge.mqtt import retain

    got = getattr(retain, "_DEEP", None)
    assert got is None or got == topics._DEEP, got


def test_packet_kinds_equal_public_consts():
    # Packets that share a shape are one class with kind per instance, built
    # by functions of the packets' names: check the kind of what each builds
    args = {"CONNECT": ("c",), "PUBLISH": ("t",), "SUBSCRIBE": (1, []), "SUBACK": (1, []),
            "UNSUBSCRIBE": (1, []), "PUBACK": (1,), "PUBREC": (1,), "PUBREL": (1,),
            "PUBCOMP": (1,), "UNSUBACK": (1,)}
    names = ("CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
             "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP",
             "DISCONNECT", "AUTH")
    for name in names:
        make = getattr(packets, name[0] + name[1:].lower())
        kind = make(*args.get(name, ())).kind
        assert kind == getattr(consts, name), (name, kind)


def test_core_does_not_import_public_consts():
    # consts.py is for tests and tools: importing it (or names from it) on a
    # board costs heap
    public = [name for name, _ in _public()]
    for mod in _MODULES:
        g = mod.__dict__
        assert "consts" not in g, mod.__name__
        for name in public:
            assert name not in g, (mod.__name__, name)


def test_packets_have_slots_on_cpython():
    # @slots gives CPython real __slots__ (no per-instance dict); MicroPython
    # ignores __slots__, so there the classes are left without them.
    import sys

    cpython = sys.implementation.name == "cpython"
    for name in ("Connect", "Connack", "Publish", "Ack", "Sub", "SubAck", "Reason"):
        cls = getattr(packets, name)
        assert ("__slots__" in cls.__dict__) == cpython, name
    if cpython:
        assert not hasattr(packets.Publish("t"), "__dict__")
        assert not hasattr(packets.Puback(1), "__dict__")
        for make in (packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp):
            assert type(make(1)) is packets.Ack
        assert type(packets.Unsubscribe(1, [])) is packets.Sub
        assert type(packets.Unsuback(1)) is packets.SubAck
        assert type(packets.Pingresp()) is packets.Reason


def test_private_copy_of_the_node_cost_equals_session_py():
    # the memory budget's tree-node cost (session.py), used by publish.py's
    # room check for a new retained topic
    for mod, name in ((publish, "_NODE_COST"), (subscribe, "_NODE_COST"), (subscribe, "_SUB_COST")):
        got = getattr(mod, name, None)
        assert got is None or got == getattr(session, name), (mod.__name__, name)
