# Free loopback ports for the servers the tests, benchmarks and tools start
# (brokers, RabbitMQ nodes, CoAP endpoints), picked where no client socket
# can take them in the meantime.
#
# The usual trick, bind port 0 and hand on the number the kernel gave, picks
# from the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), the same
# range every outgoing connection takes its source port from. Between the
# pick and the server's own bind, any client connect() on the machine may get
# that port, and the server then fails with EADDRINUSE: seen in the CI
# (a broker in test_22 on 37095, RabbitMQ's distribution port). Below the
# ephemeral range only an explicit bind takes a port, so a random pick there
# that binds now stays free for the child; a process never hands out the same
# port twice.
import random
import socket

_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_LOWEST = 10000  # below: registered services' ports (and privileged ones)
_TRIES = 200
_given = {}  # port -> True: handed out by this process
_rng = random.SystemRandom()


def _ephemeral_low():
    try:
        with open(_RANGE_FILE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts there


def _binds(port, kind, host):
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    """A port on host that binds now (TCP, or UDP with socket.SOCK_DGRAM),
    outside the ephemeral range when the range leaves room below it."""
    high = _ephemeral_low() - 1
    if high - _LOWEST >= 1000:
        for _ in range(_TRIES):
            port = _rng.randint(_LOWEST, high)
            if port not in _given and _binds(port, kind, host):
                _given[port] = True
                return port
    # no room below the ephemeral range (or all taken): the kernel's pick
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given[port] = True
            return port


def free_udp_port(host="127.0.0.1"):
    return free_port(socket.SOCK_DGRAM, host)


def free_ports(n, host="127.0.0.1"):
    """n distinct free TCP ports."""
    return [free_port(host=host) for _ in range(n)]
