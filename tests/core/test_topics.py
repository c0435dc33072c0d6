# Topic validation and the subscription trie (MQTT 3.1.1 / 5.0 §4.7, §4.8.2).
# Plain functions: runs under pytest and tests/mpy_runner.py.
from edge.errors import RemoteProtocolError
from edge.mqtt.consts import RC_TOPIC_FILTER_INVALID, RC_TOPIC_NAME_INVALID
from edge.mqtt.topics import Trie, split_shared, validate_filter, validate_topic
from tests.core._util import raises

LEVELS = 8


def matches(f, topic):
    t = Trie()
    t.add(f, "k", 1)
    return t.match(topic) == [("k", 1)]


def keys(trie, topic):
    return sorted(k for k, v in trie.match(topic))


def bad_topic(name, levels=LEVELS):
    e = raises(RemoteProtocolError, validate_topic, name, levels)
    assert e.reason == RC_TOPIC_NAME_INVALID, name


def bad_filter(f, levels=LEVELS):
    e = raises(RemoteProtocolError, validate_filter, f, levels)
    assert e.reason == RC_TOPIC_FILTER_INVALID, f


# ---- validation -------------------------------------------------------------


def test_valid_topic_names():
    for name in ("a", "/", "a/b/c", "/finance", "sport/tennis/", "$SYS/x", " ", "é/ü"):
        validate_topic(name, LEVELS)
    validate_topic("a/" * 7 + "a", LEVELS)  # exactly 8 levels
    validate_topic("a/" * 100, 0)  # 0: no level limit


def test_invalid_topic_names():
    bad_topic("")  # [MQTT-4.7.3-1]
    bad_topic("a/+")  # [MQTT-3.3.2-2]
    bad_topic("+")
    bad_topic("a/#")
    bad_topic("#")
    bad_topic("a+b")
    bad_topic("a\x00b")  # [MQTT-4.7.3-2]
    bad_topic("a/" * 8 + "a")  # 9 levels
    bad_topic("/" * 8)  # 9 empty levels


def test_topic_length_limit():
    validate_topic("a" * 65535, 0)
    bad_topic("a" * 65536, 0)
    # 2-byte UTF-8 chars: 32768 chars are 65536 bytes
    validate_topic("\u00e9" * 32767, 0)
    bad_topic("\u00e9" * 32768, 0)


def test_valid_filters():
    for f in (
        "sport/tennis/player1/#", "sport/#", "#", "+", "+/+", "/+", "+/tennis/#",
        "sport/+/player1", "sport/+", "a//b", "/", "$SYS/#", "+/", "a/+/+/#",
        "$share/g/a/#",
    ):
        validate_filter(f, LEVELS)


def test_invalid_filters():
    bad_filter("")  # [MQTT-4.7.3-1]
    bad_filter("sport/tennis#")  # [MQTT-4.7.1-2]
    bad_filter("sport/tennis/#/ranking")
    bad_filter("#/a")
    bad_filter("##")
    bad_filter("a/#/#")
    bad_filter("sport+")  # [MQTT-4.7.1-3]
    bad_filter("+a")
    bad_filter("a/b+/c")
    bad_filter("a/+b/c")
    bad_filter("++")
    bad_filter("a\x00")  # [MQTT-4.7.3-2]
    bad_filter("+/" * 8 + "#")  # 9 levels
    bad_filter("a" * 65536, 0)


def test_split_shared():
    assert split_shared("a/b") == (None, "a/b")
    assert split_shared("$share") == (None, "$share")
    assert split_shared("$SYS/#") == (None, "$SYS/#")
    assert split_shared("$share/g/a/b") == ("g", "a/b")
    assert split_shared("$share/grp/#") == ("grp", "#")
    assert split_shared("$share/g//") == ("g", "/")
    for f in ("$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a"):
        e = raises(RemoteProtocolError, split_shared, f)
        assert e.reason == RC_TOPIC_FILTER_INVALID, f


# ---- matching: the spec's examples (§4.7.1.2, §4.7.1.3, §4.7.2) -----------------


def test_multi_level_wildcard_spec_examples():
    f = "sport/tennis/player1/#"
    assert matches(f, "sport/tennis/player1")
    assert matches(f, "sport/tennis/player1/ranking")
    assert matches(f, "sport/tennis/player1/score/wimbledon")
    assert not matches(f, "sport/tennis/player2")
    assert not matches(f, "sport/tennis")
    assert matches("sport/#", "sport")  # '#' includes the parent level
    assert matches("#", "a")
    assert matches("#", "a/b/c")
    assert matches("#", "/")


def test_single_level_wildcard_spec_examples():
    assert matches("sport/tennis/+", "sport/tennis/player1")
    assert matches("sport/tennis/+", "sport/tennis/player2")
    assert not matches("sport/tennis/+", "sport/tennis/player1/ranking")
    assert not matches("sport/+", "sport")
    assert matches("sport/+", "sport/")  # '+' matches an empty level
    assert matches("+/+", "/finance")
    assert matches("/+", "/finance")
    assert not matches("+", "/finance")
    assert matches("+/tennis/#", "sport/tennis/player1")
    assert matches("sport/+/player1", "sport/tennis/player1")
    assert matches("+", "a")
    assert not matches("+", "a/b")
    assert matches("+/#", "a")
    assert matches("a/+/#", "a/b")


def test_literal_levels_and_case():
    assert matches("a/b", "a/b")
    assert not matches("a/b", "a/b/c")
    assert not matches("a/b", "a")
    assert not matches("ACCOUNTS", "Accounts")  # case sensitive (§4.7.3)
    assert not matches("a/b", "a/b/")
    assert matches("a//b", "a//b")
    assert matches("/", "/")
    assert not matches("a", "/a")


def test_dollar_topics():
    # [MQTT-4.7.2-1] first-level wildcards don't match '$' topics
    assert not matches("#", "$SYS/broker/uptime")
    assert not matches("+/monitor/Clients", "$SYS/monitor/Clients")
    assert not matches("+", "$SYS")
    assert not matches("+/#", "$SYS")
    assert matches("$SYS/#", "$SYS/monitor/Clients")
    assert matches("$SYS/#", "$SYS")
    assert matches("$SYS/monitor/+", "$SYS/monitor/Clients")
    assert matches("$SYS/+/Clients", "$SYS/monitor/Clients")
    # only the first level is special
    assert matches("a/+", "a/$b")
    assert matches("a/#", "a/$b")


def test_overlapping_subscriptions():
    t = Trie()
    t.add("a/b", "c1", 0)
    t.add("a/+", "c1", 1)
    t.add("#", "c1", 2)
    t.add("a/#", "c2", 1)
    t.add("+/+", "c3", 0)
    t.add("x", "c4", 0)
    got = sorted(t.match("a/b"))
    assert got == [("c1", 0), ("c1", 1), ("c1", 2), ("c2", 1), ("c3", 0)]
    assert sorted(t.match("a")) == [("c1", 2), ("c2", 1)]
    assert keys(t, "x") == ["c1", "c4"]
    assert keys(t, "q/r/s") == ["c1"]
    assert t.match("$x") == []


# ---- add / get / remove / prune ---------------------------------------------------


def test_add_replace_get():
    t = Trie()
    assert len(t) == 0 and t.nodes == 0
    assert t.add("a/b", "c1", 0) is True
    assert t.nodes == 2 and len(t) == 1
    assert t.add("a/b", "c1", 2) is False  # re-add replaces the value
    assert len(t) == 1
    assert t.get("a/b", "c1") == 2
    assert t.match("a/b") == [("c1", 2)]
    assert t.add("a/b", "c2", 1) is True
    assert t.add("a", "c1", 0) is True
    assert len(t) == 3 and t.nodes == 2
    assert t.get("a/b", "nobody") is None
    assert t.get("a/b/c", "c1") is None
    assert t.get("z", "c1") is None


def test_remove_and_prune():
    t = Trie()
    filters = ["a/b/c", "a/b", "a/+/#", "#", "+", "/x", "a//"]
    for i, f in enumerate(filters):
        t.add(f, "k", i)
        t.add(f, "j", i)
    assert len(t) == 14
    assert t.remove("a/b/c", "nobody") is False
    assert t.remove("a/b/c/d", "k") is False
    assert t.remove("q", "k") is False
    assert t.remove("a/b/c", "k") is True
    assert t.remove("a/b/c", "k") is False
    # a/b/c (j), a/+/# (j, k), # (j, k)
    assert keys(t, "a/b/c") == ["j", "j", "j", "k", "k"]
    for f in filters:
        t.remove(f, "k")
        t.remove(f, "j")
    assert len(t) == 0
    assert t.nodes == 0
    assert t.match("a/b/c") == []
    assert t._root == [None, None]


def test_prune_keeps_shared_branches():
    t = Trie()
    t.add("a/b/c", 1, 0)
    t.add("a/b", 2, 0)
    t.add("a/x", 3, 0)
    assert t.nodes == 4
    t.remove("a/b/c", 1)
    assert t.nodes == 3  # only 'c' goes; 'b' still has a subscriber
    assert t.match("a/b") == [(2, 0)]
    t.remove("a/b", 2)
    assert t.nodes == 2
    assert t.match("a/x") == [(3, 0)]
    t.add("a/b/c/d", 4, 0)
    t.remove("a/x", 3)
    assert t.nodes == 4
    t.remove("a/b/c/d", 4)
    assert t.nodes == 0 and len(t) == 0


def test_remove_key():
    t = Trie()
    for f in ("a", "b/+", "#"):
        t.add(f, "c1", 1)
    t.add("a", "c2", 0)
    assert t.remove_key("c1", ["a", "b/+", "#", "nope"]) == 3
    assert len(t) == 1 and t.nodes == 1
    assert t.match("a") == [("c2", 0)]


def test_many_keys_and_levels():
    t = Trie()
    for i in range(50):
        t.add("s/%d/+" % (i % 5), i, i % 3)
    assert len(t) == 50 and t.nodes == 1 + 5 + 5
    assert sorted(k for k, v in t.match("s/3/temp")) == list(range(3, 50, 5))
    for i in range(50):
        assert t.remove("s/%d/+" % (i % 5), i)
    assert t.nodes == 0


def test_match_subs_gives_one_dict_per_matching_filter():
    t = Trie()
    t.add("a/#", "c1", 1)
    t.add("a/+", "c1", 2)
    t.add("a/b", "c2", 0)
    found = t.match_subs("a/b")
    assert sorted(sorted(d.items()) for d in found) == [[("c1", 1)], [("c1", 2)], [("c2", 0)]]
    assert t.match_subs("b") == [] and t.match_subs("$a/b") == []


# ---- deep filters: over topics._DEEP levels, kept whole beside the trie ----------


def deep(n, level="a"):
    return "/".join([level] * n)


def test_deep_filters_match_like_the_trie():
    # the same matching rules ([MQTT-4.7.1-2/3], [MQTT-4.7.2-1]) whether a
    # filter is in the trie or kept whole: every filter at 3 and at 40 levels
    for n in (3, 40):
        base = deep(n)
        cases = (
            (base, base, True),
            (base, base + "/a", False),
            (base, deep(n - 1), False),
            (base + "/#", base, True),            # '#' includes the parent level
            (base + "/#", base + "/x/y", True),
            (base + "/#", deep(n - 1) + "/b", False),
            ("+/" + deep(n - 1), base, True),
            ("+/" + deep(n - 1), "$SYS/" + deep(n - 1), False),  # [MQTT-4.7.2-1]
            ("$SYS/" + deep(n - 1), "$SYS/" + deep(n - 1), True),
            (deep(n - 1) + "/+", deep(n - 1) + "/zz", True),
            (deep(n - 1) + "/+", base + "/zz", False),
            (deep(n - 2) + "/+/a", deep(n - 2) + "/q/a", True),
        )
        for f, topic, want in cases:
            assert matches(f, topic) is want, (n, f[:20], topic[:20], want)


def test_a_65535_level_filter_costs_no_trie_nodes():
    # [MQTT-4.7.3-3] a filter may be 65,535 bytes; of 65,535 empty levels,
    # one node per level would be 16 MiB. Kept whole: no node at all.
    t = Trie()
    f = "/" * 65534
    assert t.add(f, "k", 1) is True
    assert t.nodes == 0 and len(t) == 1
    assert t.get(f, "k") == 1
    assert t.match(f) == [("k", 1)]
    assert t.match("/" * 65533) == []
    t.add("a/b", "k2", 0)
    assert t.match("a/b") == [("k2", 0)]
    hashed = "/" * 40 + "#"
    t.add(hashed, "k3", 2)
    assert keys(t, f) == ["k", "k3"]
    assert t.remove(f, "k") is True and t.remove(f, "k") is False
    assert t.remove(hashed, "k3") is True
    assert t._deep is None and len(t) == 1  # nothing left on the side


def test_deep_filters_in_has_first():
    t = Trie()
    t.add("$SYS/" + deep(40), "k", 0)
    assert t.has_first("$SYS") and not t.has_first("a")


def test_trie_filters_match_deep_topics():
    # a topic deeper than the trie: its levels past _DEEP are one remainder
    # that matches no node, while the trie's '#' and '+' filters still do
    t = Trie()
    t.add(deep(31) + "/#", "hash32", 0)   # 32 levels: in the trie
    t.add(deep(32), "exact32", 0)
    t.add("+/#", "top", 0)
    t.add(deep(31) + "/+", "plus32", 0)
    assert keys(t, deep(40)) == ["hash32", "top"]
    assert keys(t, deep(33)) == ["hash32", "top"]
    assert keys(t, deep(32)) == ["exact32", "hash32", "plus32", "top"]
    assert t._deep is None
