"""The fleet soak (`make fleet`): longer `edgebroker fleet` runs than CI's.

    python -m tools.fleetsoak [--seconds 300] [--sensors 300] [--chaos harsh]
                              [--seed N] [--out build/fleet]

1. the CPython broker (`python -m gateway run`) with --sensors sensors, six of
   them firmware/sensor/ processes on the MicroPython unix port, 3.1.1 and 5.0,
   and a tenth of them CoAP devices on its CoAP endpoint (three of them
   firmware/coap_sensor/ processes);
2. the broker under the board runtime (`python -m tools.board --heap 64k`)
   with six firmware sensors on 3.1.1 (docs/fleet.md "On the 64 KiB board").
Each broker runs on a free loopback port with its own data directory and is
stopped by its pid. Reports, JSON and plots go to --out; exit status 1 if
either run broke a guarantee (docs/fleet.md).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from tools.ports import free_port, free_udp_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(kind, workdir, log, coap_port=0):
    port = free_port()
    data = os.path.join(workdir, "data")
    common = ["--bind", "127.0.0.1", "--port", str(port), "--data", data, "--coap-port", str(coap_port)]
    if kind == "cpython":
        cfg = os.path.join(workdir, "broker.toml")
        with open(cfg, "w") as f:
            f.write("[broker]\nsys_interval = 1\n[coap]\nenabled = true\n")
        cmd = [sys.executable, "-m", "gateway", "run", "--config", cfg] + common
    else:
        cfg = os.path.join(workdir, "broker.json")
        with open(cfg, "w") as f:
            # the store does not fit 64 KiB: with persistence on (the
            # default) the board would refuse to start (docs/persistence.md
            # "When the store cannot keep it")
            json.dump({"broker": {"sys_interval": 1}, "store": {"persistence": False}}, f)
        cmd = [sys.executable, "-m", "tools.board", "--heap", "64k", "--", "--config", cfg] + common
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60  # the board builds its ROMFS image first
    while True:
        if proc.poll() is not None:
            raise SystemExit("%s broker exited with %s (log: %s)" % (kind, proc.returncode, log.name))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("%s broker not listening after 60 s (log: %s)" % (kind, log.name))
            time.sleep(0.1)


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_one(kind, fleet_args, out):
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleetsoak-") as workdir, \
            open(os.path.join(out, kind + "-broker.log"), "wb") as log:
        coap_port = free_udp_port() if kind == "cpython" else 0
        proc, port = _start(kind, workdir, log, coap_port)
        try:
            cmd = [sys.executable, "-m", "gateway", "fleet", "--broker", "127.0.0.1:%d" % port,
                   "--json", os.path.join(out, kind + ".json"),
                   "--plot", os.path.join(out, kind + ".png")] + fleet_args
            if kind == "cpython":
                cmd += ["--broker-pid", str(proc.pid), "--coap-port", str(coap_port)]
            print(">> " + " ".join(cmd), flush=True)
            rc = subprocess.call(cmd, cwd=REPO_ROOT)
        finally:
            _stop(proc)
    return rc


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.fleetsoak", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--sensors", type=int, default=300)
    ap.add_argument("--chaos", default="harsh")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "build", "fleet"))
    a = ap.parse_args(argv)
    common = ["--seconds", str(a.seconds), "--chaos", a.chaos, "--seed", str(a.seed)]
    coap = max(3, a.sensors // 10)
    rc = run_one("cpython", common + ["--sensors", str(a.sensors + coap), "--mpy", "6", "--coap", str(coap),
                                      "--coap-mpy", "3"], a.out)
    rc |= run_one("board", common + ["--sensors", "6", "--mpy", "6", "--mqtt", "3.1.1"], a.out)
    print("fleet soak: %s (reports in %s)" % ("OK" if rc == 0 else "FAILED", a.out))
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
