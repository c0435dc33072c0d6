# `edgebroker fleet`'s options (docs/fleet.md "The fleet"), apart from the
# run: building the command line loads nothing of the fleet itself.
from gateway.fleet.profiles import PROFILES


def add_arguments(p):
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="the broker under test")
    p.add_argument("--sensors", type=int, default=20, metavar="N", help="sensors in all (default 20)")
    p.add_argument("--seconds", type=int, default=30, metavar="S", help="publishing time (default 30)")
    p.add_argument("--chaos", default="none", choices=sorted(PROFILES), help="link faults (default none)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault plan and jitter (default: random, printed)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE", help="latency plot, .png (matplotlib) or .svg "
                   "(default: next to --json)")
    p.add_argument("--mpy", type=int, default=0, metavar="K",
                   help="K of the sensors are firmware/sensor/ on the MicroPython unix port")
    p.add_argument("--coap", type=int, default=0, metavar="K",
                   help="K of the sensors are CoAP devices (the broker's CoAP endpoint, --coap-port)")
    p.add_argument("--coap-mpy", type=int, default=0, metavar="J",
                   help="J of the CoAP devices are firmware/coap_sensor/ on the MicroPython unix port")
    p.add_argument("--coap-port", type=int, default=5683, metavar="PORT",
                   help="the broker's CoAP endpoint, UDP on the --broker host (default 5683)")
    p.add_argument("--mqtt", default="mix", choices=("mix", "3.1.1", "5.0"),
                   help="protocol of the sensors (default mix: half each; a 64 KiB board "
                   "pays 6.5 KB of heap for 5.0, docs/mqtt5.md)")
    p.add_argument("--broker-pid", type=int, metavar="PID", help="sample this process's RSS (/proc)")
    p.add_argument("--interval-ms", type=int, default=1000, help="each sensor's reading interval")
    p.add_argument("--keepalive", type=int, default=4, help="sensors' MQTT keepalive, s (default 4)")
    p.add_argument("--buffer", type=int, default=8, help="sensors' offline buffer, readings (default 8)")
    p.add_argument("--inflight", type=int, default=2, help="sensors' QoS 1/2 window (default 2)")
    p.add_argument("--drain", type=int, default=15, help="s after --seconds for buffers to empty (default 15)")
    p.add_argument("--settle", type=int, default=10,
                   help="s to wait after the sensors for late deliveries and wills (default 10)")
    p.add_argument("--quiet", action="store_true", help="no report on stdout")
