"""edgebroker benchmark harness: `python -m tools.bench --help`.

Brokers (brokers.py), each started fresh on a free 127.0.0.1 port for every
(run, scenario) and stopped by PID:
  edgebroker      python -m gateway run ... --log-level warning (CPython)
  edgebroker-mpy  python -m tools.board --heap 256k -- ... (MicroPython unix
                  port as a board runs it); fan-in and heap per client only
  mosquitto       /usr/sbin/mosquitto, persistence off, max_queued_messages raised
  amqtt           amqtt 0.12's Broker via tools/bench/amqtt_main.py
  direct          no broker: publishers wired to subscribers over loopback
                  TCP, i.e. the load generator's own ceiling
A broker that is not installed is skipped with the reason.

Load generator (wire.py, link.py, flow.py): one asyncio process of raw
Protocols, no MQTT client library. Publishers write batches of PUBLISH built
from a template; subscribers parse inline and acknowledge once per read.
Every payload carries (publisher, sequence number, send time): lost,
duplicated, reordered and corrupt messages are counted and never count as
throughput. Closed loop: at most `e2e_window` messages per publisher between
publisher and subscribers (and 20 unacknowledged QoS 1/2 PUBLISHes), so a
figure is what the broker sustains without dropping. CPU of the broker and of
the generator come from /proc; a figure where the generator used >= 90% of a
core is flagged as a lower bound.

Results (runner.py, report.py): medians of N runs, ratios edgebroker/other
taken within each run then the median of those; JSON and a PNG chart in
--out (default build/bench).

CoAP (`python -m tools.bench.coap --help`, coap.py): edgebroker's CoAP endpoint
against an aiocoap bridge to mosquitto (coap_anchor.py) and libcoap's server,
driven by a raw-UDP CoAP load generator (coapwire.py, coapgen.py).
"""
