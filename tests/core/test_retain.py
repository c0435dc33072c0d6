# Retained message store ([MQTT-3.3.1-5..11], §4.7 matching rules).
# Plain functions: runs under pytest and tests/mpy_runner.py.
from edge.mqtt.retain import RetainStore


class Msg:
    # Stand-in for the broker's message: the store only reads .payload
    def __init__(self, payload):
        self.payload = payload


def store_of(*topics):
    s = RetainStore(100, 10000)
    for t in topics:
        assert s.set(t, Msg(t.encode()))
    return s


def topics(s, f):
    return sorted(t for t, m in s.match(f))


def test_set_get_replace():
    s = RetainStore(10, 1000)
    m1 = Msg(b"on")
    assert s.set("home/lamp", m1) is True
    assert s.get("home/lamp") is m1
    assert len(s) == 1 and s.bytes == 9 + 2 and s.nodes == 2
    m2 = Msg(b"off!")
    assert s.set("home/lamp", m2) is True  # [MQTT-3.3.1-5] replaces
    assert s.get("home/lamp") is m2
    assert len(s) == 1 and s.bytes == 9 + 4 and s.nodes == 2
    assert s.get("home") is None
    assert s.get("home/lamp/x") is None
    assert s.get("other") is None


def test_empty_payload_deletes_and_prunes():
    s = RetainStore(10, 1000)
    s.set("a/b/c", Msg(b"1"))
    s.set("a/b", Msg(b"2"))
    assert s.nodes == 3 and len(s) == 2
    # [MQTT-3.3.1-10/11] zero-byte payload removes, and is itself not stored
    assert s.set("a/b/c", Msg(b"")) is True
    assert s.get("a/b/c") is None
    assert len(s) == 1 and s.nodes == 2 and s.bytes == 3 + 1
    assert s.set("nothing/here", Msg(b"")) is True
    assert s.set("a/b/c/d", Msg(b"")) is True
    assert len(s) == 1 and s.nodes == 2
    assert s.set("a/b", Msg(b"")) is True
    assert len(s) == 0 and s.nodes == 0 and s.bytes == 0
    assert s._root == [None, None]
    assert s.dropped == 0


def test_message_limit():
    s = RetainStore(2, 1000)
    assert s.set("a", Msg(b"1"))
    assert s.set("b", Msg(b"1"))
    assert s.set("c", Msg(b"1")) is False  # a new topic over max_messages
    assert s.dropped == 1 and len(s) == 2 and s.get("c") is None
    assert s.nodes == 2
    assert s.set("a", Msg(b"22")) is True  # replacing is allowed
    assert s.get("a").payload == b"22" and s.dropped == 1
    s.set("b", Msg(b""))
    assert s.set("c", Msg(b"1")) is True  # room again after a delete
    assert len(s) == 2


def test_byte_limit():
    s = RetainStore(100, 10)
    assert s.set("ab", Msg(b"123456")) is True  # 8 bytes
    assert s.bytes == 8
    assert s.set("c", Msg(b"12")) is False  # 11 > 10
    assert s.dropped == 1 and s.bytes == 8 and len(s) == 1
    assert s.set("c", Msg(b"1")) is True  # exactly 10
    assert s.bytes == 10
    assert s.set("ab", Msg(b"12345")) is True  # replace, shrinks
    assert s.bytes == 9
    assert s.set("ab", Msg(b"123456")) is True  # replace, fits exactly
    assert s.bytes == 10
    # A replacement that doesn't fit is dropped, and the now stale value
    # for that topic goes too
    assert s.set("ab", Msg(b"1234567")) is False
    assert s.dropped == 2
    assert s.get("ab") is None
    assert len(s) == 1 and s.bytes == 2 and s.nodes == 1


def test_zero_limits_store_nothing():
    s = RetainStore(0, 1000)
    assert s.set("a", Msg(b"x")) is False
    assert len(s) == 0 and s.nodes == 0 and s.dropped == 1
    s = RetainStore(10, 0)
    assert s.set("a", Msg(b"x")) is False
    assert s.set("a", Msg(b"")) is True  # deleting never fails
    assert s.dropped == 1


def test_match_exact_and_plus():
    s = store_of("sport/tennis/player1", "sport/tennis/player2",
                 "sport/tennis/player1/ranking", "sport", "sport/", "/finance")
    assert topics(s, "sport/tennis/player1") == ["sport/tennis/player1"]
    assert topics(s, "sport/tennis/+") == ["sport/tennis/player1", "sport/tennis/player2"]
    assert topics(s, "sport/+") == ["sport/"]  # '+' matches the empty level
    assert topics(s, "+/+") == ["/finance", "sport/"]
    assert topics(s, "/+") == ["/finance"]
    assert topics(s, "+") == ["sport"]
    assert topics(s, "sport/+/player1") == ["sport/tennis/player1"]
    assert topics(s, "nope") == []
    assert topics(s, "sport/tennis/player3") == []


def test_match_hash():
    s = store_of("sport/tennis/player1", "sport/tennis/player2",
                 "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon",
                 "sport", "/finance")
    assert topics(s, "sport/tennis/player1/#") == [
        "sport/tennis/player1", "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    ]
    assert topics(s, "sport/#") == [
        "sport", "sport/tennis/player1", "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon", "sport/tennis/player2",
    ]
    assert len(s.match("#")) == 6
    assert topics(s, "+/tennis/#") == [
        "sport/tennis/player1", "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon", "sport/tennis/player2",
    ]
    assert topics(s, "+/#") == sorted(t for t, m in s.items())
    assert topics(s, "nope/#") == []


def test_match_returns_stored_messages():
    s = RetainStore(10, 1000)
    m = Msg(b"21.5")
    s.set("t/room1", m)
    assert s.match("t/+") == [("t/room1", m)]
    assert s.match("#") == [("t/room1", m)]


def test_match_dollar_topics():
    s = store_of("$SYS/broker/uptime", "$SYS", "a/$b", "a")
    # [MQTT-4.7.2-1]
    assert topics(s, "#") == ["a", "a/$b"]
    assert topics(s, "+") == ["a"]
    assert topics(s, "+/broker/uptime") == []
    assert topics(s, "+/#") == ["a", "a/$b"]
    assert topics(s, "$SYS/#") == ["$SYS", "$SYS/broker/uptime"]
    assert topics(s, "$SYS/+/uptime") == ["$SYS/broker/uptime"]
    assert topics(s, "a/+") == ["a/$b"]


def test_items():
    names = ["a", "a/b", "a/b/c", "/", "x//y", "$SYS/q"]
    s = store_of(*names)
    got = sorted(s.items())
    assert [t for t, m in got] == sorted(names)
    for t, m in got:
        assert m.payload == t.encode()
    assert list(RetainStore(1, 1).items()) == []


def test_deep_topics_are_kept_whole_and_matched():
    # names over topics._DEEP levels get no tree nodes (a 65,535-level name
    # would be 16 MiB of them); get/set/delete/match/items see them the same
    deep = "/".join(["d"] * 40)
    s = RetainStore(10, 100000)
    m = Msg(b"x")
    assert s.set(deep, m) and s.get(deep) is m
    assert s.nodes == 0 and len(s) == 1 and s.bytes == len(deep) + 1
    s.set("a/b", Msg(b"y"))
    assert topics(s, "#") == ["a/b", deep]
    assert topics(s, "d/+/#") == [deep]
    assert topics(s, deep) == [deep]
    assert topics(s, "a/+") == ["a/b"]
    assert sorted(t for t, _ in s.items()) == ["a/b", deep]
    assert s.set(deep, Msg(b"")) and s.get(deep) is None  # [MQTT-3.3.1-10]
    assert len(s) == 1 and s.bytes == 4 and s._deep is None
    empty = "/" * 65534  # 65,535 empty levels
    assert s.set(empty, Msg(b"z")) and topics(s, "#") == [empty, "a/b"]


def test_a_deep_filter_finds_a_topic_in_the_tree():
    # 32 levels: in the tree; its 33-level 'x/#' filter matches the parent
    # level ([MQTT-4.7.1-2]) and a 34-level filter matches nothing there
    t32 = "/".join(["p"] * 32)
    s = store_of(t32, t32 + "/q")
    assert s.nodes == 32 and s._deep == {t32 + "/q": s.get(t32 + "/q")}
    assert topics(s, t32 + "/#") == [t32, t32 + "/q"]
    assert topics(s, t32 + "/+") == [t32 + "/q"]
    assert topics(s, t32 + "/+/#") == [t32 + "/q"]
    assert topics(s, t32 + "/q/r") == []
