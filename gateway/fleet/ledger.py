# What each simulated sensor was promised, and what each of its links saw
# (docs/fleet.md "What counts as lost"). Filled by the sensors (sim.py,
# mpy.py) and the chaos proxy (chaos.py); read by report.py.
import time


def wall_ms():
    # payloads carry the sender's wall clock in ms: the checker runs on the
    # same host, so receive time - send time is the delivery latency
    return time.time_ns() // 1000000


class Ledger:
    """One sensor: its readings by seq and what became of them."""

    __slots__ = ("sid", "qos", "v5", "kind", "generated", "acked", "dropped",
                 "unconfirmed", "connects", "killed", "ended_clean", "exit_note", "conns",
                 "commands", "refused", "t_observing")

    def __init__(self, sid, qos, v5, kind):
        self.sid = sid
        self.qos = qos
        self.v5 = v5
        # "sim" (CPython asyncio), "mpy" (firmware/sensor/ on the unix port)
        # or "coap" / "coap-mpy" (a CoAP device: coap.py, or firmware/coap_sensor/
        # on the unix port; no connections, no will)
        self.kind = kind
        self.generated = set()  # seqs
        self.acked = set()  # QoS 1 PUBACK, QoS 2 PUBCOMP, QoS 0 written to the socket
        self.dropped = set()  # offline buffer full: never sent, not the broker's
        self.unconfirmed = set()  # still unacknowledged when the sensor stopped
        self.connects = 0
        self.killed = False  # killed mid-publish by the chaos plan
        self.ended_clean = False  # stopped with DISCONNECT
        self.exit_note = ""
        self.conns = []  # ConnRecord, in order of the proxy's accept
        self.commands = set()  # CoAP: payloads notified on cmd/<id>/#
        self.refused = 0  # CoAP: readings answered 4.xx/5.xx
        self.t_observing = None  # CoAP: run time its observation of cmd/<id>/# began

    def line(self, text):
        """One line of the firmware's ledger protocol (firmware/sensor/sensor.py)."""
        parts = text.split()
        if not parts:
            return
        op = parts[0]
        try:
            n = int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            return
        if op == "G":
            self.generated.add(n)
        elif op == "A":
            self.acked.add(n)
            self.unconfirmed.discard(n)
        elif op == "D":
            self.dropped.add(n)
        elif op == "U":
            self.unconfirmed.add(n)
        elif op == "C":
            self.connects += 1
        elif op == "E":
            self.ended_clean = True


class ConnRecord:
    """One connection through the proxy, as the broker saw it."""

    __slots__ = ("will_no", "t_connect", "accepted", "clean_end", "t_closed")

    def __init__(self):
        self.will_no = None  # the sensor's connection number, from its will payload "sid|n"
        self.t_connect = None  # run time the CONNECT was written to the broker
        self.accepted = False  # CONNACK with return code 0 came back
        self.clean_end = False  # a DISCONNECT went to the broker
        self.t_closed = None  # run time the broker-side socket closed (either end)
