# tools/fuzz.py against a live broker on both runtimes (issue #21 point 5,
# docs/fuzzing.md): mutated MQTT sessions (and CoAP datagrams on
# CPython) for a few seconds while a canary client publishes to itself. The
# broker stays up, the canary is served throughout, a new client is served
# after, and on MicroPython the live heap comes back to its level once the
# retained messages the fuzzing left are deleted.
# The board runs at 72 KiB (it ran at 96 KiB before the memory budget
# counted what things cost a board's heap, docs/heap.md); docs/fuzzing.md
# says why not 64 KiB yet: the 5.0 modules and the connections' fixed cost.
# Tried again at 64 KiB after the unfragmented boot (3 runs of 3): the live
# heap before the fuzzing is 59,872 bytes of ~64.6 KB, and the canary and
# the new client after it are closed out of memory (120-272 byte blocks).
# Before edge/runtime/tcp.py's draining became a dict the board died of
# SIGSEGV there instead (a set that MemoryError hit while growing).
import asyncio
import pytest

from tests.integration.clients import unique_id
from tools import fuzz

BROKER_CONFIG = {"sys_interval": 1, "board_heap": "72k"}
SECONDS = 6
# what may stay: a topic's interned name, the allocator's rounding
HEAP_SLACK = 2048


def _sys_value(mqtt_client, broker, topic):
    """The value of the next sys_interval round (the first message is the
    one computed at the SUBSCRIBE)."""
    c = mqtt_client(broker, client_id=unique_id("sys"))
    c.subscribe(topic)
    m = c.wait_messages(2, topic=topic)[-1]
    c.disconnect()
    return int(m.payload)


def _clear_retained(mqtt_client, broker):
    """Delete every retained message (an empty retained publish,
    [MQTT-3.3.1-10]); how many there were."""
    c = mqtt_client(broker, client_id=unique_id("clear"))
    c.subscribe("#")
    # the retained messages come with the SUBACK; a message published after
    # it comes after them
    marker = unique_id("fuzz/marker")
    c.publish(marker, b"end", qos=1)
    c.wait_messages(1, topic=marker)
    topics = {m.topic for m in c.messages if m.retain}
    for t in topics:
        c.publish(t, b"", qos=1, retain=True)
    c.disconnect()
    return len(topics)


@pytest.mark.timeout(120)
def test_a_fuzzed_broker_keeps_serving(runtime, broker, mqtt_client, report):
    coap_port = broker.wait_coap() if runtime == "cpython" else None
    # the baseline with the 5.0 modules loaded, as the fuzzing loads them
    # (a 5.0 CONNECT, a 5.0 SUBSCRIBE: docs/design.md H11)
    warm = mqtt_client(broker, client_id=unique_id("warm"), v5=True)
    warm.subscribe("warm/up")
    warm.disconnect()
    stats = asyncio.run(fuzz.run(broker.host, broker.port, SECONDS, coap_port, workers=2, seed=7))
    report("fuzz %s: %s" % (runtime, fuzz.report(stats)))
    broker.assert_alive()
    assert stats.cases > 50, fuzz.report(stats)
    assert stats.canary_failed == 0 and stats.canary_ok > 0, (fuzz.report(stats), stats.errors)
    assert stats.final_ok, (fuzz.report(stats), stats.errors, broker.log_tail())
    if runtime == "micropython":
        assert stats.heap_at_start is not None, "no $SYS heap figure"
        _clear_retained(mqtt_client, broker)
        settled = _sys_value(mqtt_client, broker, "$SYS/broker/heap/current")
        report("fuzz micropython: live heap %d before, %d after with retained cleared"
               % (stats.heap_at_start, settled))
        assert settled <= stats.heap_at_start + HEAP_SLACK, broker.log_tail()
