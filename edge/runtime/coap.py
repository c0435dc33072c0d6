# Start the CoAP endpoint (edge/coap/, docs/coap.md) on this runtime's UDP
# shell: imported by main.py only when [coap] is enabled, so a board without
# it pays no heap for this code.
import asyncio
import errno
import random

from edge.coap.endpoint import Endpoint
from edge.errors import ConfigError

if hasattr(asyncio, "core"):  # MicroPython: its poller (udp.py)
    from edge.runtime.udp import UdpServer
else:
    from edge.runtime.udp_cpython import UdpServer  # type: ignore[assignment]


async def start(c, broker, tcp, log):
    """The running UdpServer for config section c; ConfigError naming the
    key if it cannot listen."""
    # The limits as attributes: a class made by type() from a copy of the
    # section (main.py empties the config once the broker runs), garbage once
    # Endpoint has copied the values: no class of ours on a board's heap
    # random.random as the rng: a builtin, where a lambda of ours costs a
    # function on the heap (MicroPython has it on the unix port and ESP32)
    ep = Endpoint(broker, type("Limits", (), dict(c)), random.random)
    udp = UdpServer(ep, tcp, log)
    try:
        await udp.start(c["bind"], c["port"])
    except OSError as e:
        ep.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError("coap.port", "cannot listen on %s port %d: port %d/udp is in use"
                              % (c["bind"], c["port"], c["port"]))
        raise ConfigError("coap.bind", "cannot listen on %s port %d: %s" % (c["bind"], c["port"], e))
    log(20, "edgebroker listening on %s:%d/udp (CoAP)" % (c["bind"], udp.port))
    broker.coap = ep  # its counters in $SYS/broker/coap/
    return udp
