# Real, independent peers for the integration tests: a thin synchronous wrapper
# around paho-mqtt (MQTT 3.1.1, or 5.0 with v5=True) and helpers for
# mosquitto_pub / mosquitto_sub.
# Every wait has a deadline; nothing sleeps blindly.
import itertools
import re
import shutil
import subprocess
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEFAULT_TIMEOUT = 10.0
_ids = itertools.count(1)


def unique_id(prefix="t"):
    return "%s-%d-%d" % (prefix, int(time.time() * 1000) % 100000, next(_ids))


def props(packet_type, **values):
    """paho Properties for a 5.0 packet: props("CONNECT", SessionExpiryInterval=60)."""
    p = Properties(getattr(PacketTypes, packet_type))
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Message:
    __slots__ = ("topic", "payload", "qos", "retain", "t", "props")

    def __init__(self, topic, payload, qos, retain, t, props=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.t = t
        self.props = props  # paho Properties of a 5.0 PUBLISH

    def __repr__(self):
        return "Message(%r, %r, qos=%d, retain=%d)" % (self.topic, self.payload[:40],
                                                        self.qos, self.retain)


class Client:
    """paho client driven from its own network thread; the test waits on events."""

    def __init__(self, host, port, client_id=None, clean_session=True, keepalive=30,
                 will=None, max_inflight=20, v5=False, connect_props=None, will_props=None,
                 ws_path=None):
        """ws_path: MQTT over WebSockets to ws://host:port<ws_path> (paho's
        websockets transport) instead of TCP."""
        self.host, self.port, self.keepalive = host, port, keepalive
        self.client_id = client_id if client_id is not None else unique_id("paho")
        self.v5 = v5
        self.clean_start = clean_session
        self.connect_props = connect_props  # 5.0: paho Properties for CONNECT
        transport = "tcp" if ws_path is None else "websockets"
        if v5:
            self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=paho.MQTTv5, transport=transport)
        else:
            self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=paho.MQTTv311, clean_session=clean_session,
                                 transport=transport)
        if ws_path is not None:
            self.c.ws_set_options(path=ws_path)
        self.c.max_inflight_messages_set(max_inflight)
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain, properties=will_props)
        self.cond = threading.Condition()
        self.messages = []
        self.connacks = []          # (session_present, reason_code)
        self.connack_props = []     # 5.0: paho Properties of each CONNACK
        self.subacks = {}           # mid -> [granted qos or 0x80]
        self.suback_props = {}      # 5.0: mid -> paho Properties of the SUBACK
        self.unsubacks = set()
        self.disconnects = []       # reason codes
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self._loop = False
        # The broker under test (conftest's mqtt_client sets it): disconnect()
        # then waits until the broker has closed the session, not only until
        # paho has closed its socket. MQTT orders nothing across connections,
        # so without it a PUBLISH sent next on another connection can reach
        # the broker first and find the session still online.
        self.broker = None

    # -- callbacks (paho thread) --
    def _on_connect(self, c, ud, flags, rc, props):
        with self.cond:
            self.connacks.append((int(flags.session_present), rc.value))
            self.connack_props.append(props)
            self.cond.notify_all()

    def _on_message(self, c, ud, msg):
        m = Message(msg.topic, bytes(msg.payload), msg.qos, int(msg.retain), time.monotonic(),
                    getattr(msg, "properties", None) if self.v5 else None)
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def _on_subscribe(self, c, ud, mid, rcs, props):
        with self.cond:
            self.subacks[mid] = [r.value for r in rcs]
            self.suback_props[mid] = props
            self.cond.notify_all()

    def _on_unsubscribe(self, c, ud, mid, rcs, props):
        with self.cond:
            self.unsubacks.add(mid)
            self.cond.notify_all()

    def _on_disconnect(self, c, ud, flags, rc, props):
        with self.cond:
            self.disconnects.append(rc.value)
            self.cond.notify_all()

    # -- waiting --
    def wait_for(self, pred, timeout=DEFAULT_TIMEOUT, what="condition"):
        with self.cond:
            ok = self.cond.wait_for(pred, timeout)
        if not ok:
            raise AssertionError("%s: timed out after %.1fs waiting for %s; messages=%r"
                                 % (self.client_id, timeout, what, self.messages[-20:]))

    # -- operations --
    def connect(self, timeout=DEFAULT_TIMEOUT, expect=0):
        """Connect and wait for CONNACK; returns session_present."""
        n = len(self.connacks)
        if self.v5:
            self.c.connect(self.host, self.port, self.keepalive, clean_start=self.clean_start,
                           properties=self.connect_props)
        else:
            self.c.connect(self.host, self.port, self.keepalive)
        if not self._loop:
            self.c.loop_start()
            self._loop = True
        self.wait_for(lambda: len(self.connacks) > n, timeout, "CONNACK")
        sp, rc = self.connacks[n]
        assert rc == expect, "CONNACK with %d, expected %d" % (rc, expect)
        return sp

    def subscribe(self, topic, qos=0, timeout=DEFAULT_TIMEOUT, options=None, properties=None):
        """topic: a filter, or a list of (filter, qos). Returns granted list.
        5.0: options (paho SubscribeOptions), properties (paho Properties)."""
        if isinstance(topic, list):
            rc, mid = self.c.subscribe(topic, properties=properties)
        elif options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == paho.MQTT_ERR_SUCCESS, "subscribe failed locally: %s" % rc
        self.wait_for(lambda: mid in self.subacks, timeout, "SUBACK")
        return self.subacks[mid]

    def unsubscribe(self, topic, timeout=DEFAULT_TIMEOUT):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS
        self.wait_for(lambda: mid in self.unsubacks, timeout, "UNSUBACK")

    def publish(self, topic, payload, qos=0, retain=False, timeout=DEFAULT_TIMEOUT, wait=True,
                properties=None):
        info = self.c.publish(topic, payload, qos, retain, properties)
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), "publish to %r not completed in %.1fs" % (topic, timeout)
        return info

    def wait_messages(self, n, timeout=DEFAULT_TIMEOUT, topic=None):
        """Wait until at least n messages (on topic, if given) arrived; return them."""
        def sel():
            return [m for m in self.messages if topic is None or m.topic == topic]
        self.wait_for(lambda: len(sel()) >= n, timeout,
                      "%d message(s)%s" % (n, " on %r" % topic if topic else ""))
        return sel()

    def wait_message(self, pred, timeout=DEFAULT_TIMEOUT, what="message"):
        found = []

        def check():
            for m in self.messages:
                if pred(m):
                    found.append(m)
                    return True
            return False
        self.wait_for(check, timeout, what)
        return found[0]

    def disconnect(self, timeout=DEFAULT_TIMEOUT, reason=None, properties=None):
        n = len(self.disconnects)
        b = self.broker
        seen = b.closes(self.client_id) if b is not None else 0
        if reason is not None or properties is not None:
            from paho.mqtt.reasoncodes import ReasonCode
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason or 0)
            self.c.disconnect(rc, properties)
        else:
            self.c.disconnect()
        self.wait_for(lambda: len(self.disconnects) > n, timeout, "disconnect")
        self.stop()
        if b is not None:
            deadline = time.monotonic() + timeout
            while b.closes(self.client_id) <= seen:
                assert time.monotonic() < deadline, \
                    "%s: the broker logged no close after %.1fs" % (self.client_id, timeout)
                time.sleep(0.005)  # polling the broker's log, not waiting blindly

    def stop(self):
        if self._loop:
            self.c.loop_stop()
            self._loop = False
        try:
            self.c.socket() and self.c.socket().close()
        except Exception:
            pass


def round_trip(host, port, qos=1, timeout=DEFAULT_TIMEOUT):
    """Prove the broker still serves: a fresh subscriber gets a fresh publish."""
    topic = "alive/" + unique_id("rt")
    sub = Client(host, port, client_id=unique_id("rt-sub"))
    pub = Client(host, port, client_id=unique_id("rt-pub"))
    try:
        sub.connect(timeout)
        sub.subscribe(topic, qos, timeout)
        pub.connect(timeout)
        pub.publish(topic, b"ping", qos, timeout=timeout)
        msgs = sub.wait_messages(1, timeout, topic)
        assert msgs[0].payload == b"ping"
    finally:
        for c in (pub, sub):
            try:
                c.disconnect(3)
            except Exception:
                c.stop()


# -- mosquitto command-line clients ------------------------------------------------

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"

_STDBUF = [shutil.which("stdbuf"), "-oL"] if shutil.which("stdbuf") else []
_RX_PUBLISH = re.compile(r"received PUBLISH \(d(\d), q(\d), r(\d), m(\d+), '(.*)', \.\.\. \((\d+) bytes\)\)")


def mosquitto_pub(host, port, topic, message=None, qos=0, retain=False, extra=(),
                  timeout=DEFAULT_TIMEOUT):
    cmd = [MOSQUITTO_PUB, "-h", host, "-p", str(port), "-V", "mqttv311", "-t", topic,
           "-q", str(qos)]
    if message is None:
        cmd.append("-n")            # zero-length payload
    else:
        cmd += ["-m", message]
    if retain:
        cmd.append("-r")
    cmd += list(extra)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True)
    assert r.returncode == 0, "mosquitto_pub failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr)
    return r


class MosquittoSub:
    """mosquitto_sub -d -v: the debug lines tell us when SUBACK arrived and the
    flags (qos, retain, dup) of every PUBLISH received."""

    def __init__(self, host, port, topics, qos=0, count=None, wait_s=None, client_id=None,
                 extra=()):
        # its stdout is block-buffered on a pipe: line-buffer it so we see SUBACK now
        cmd = _STDBUF + [MOSQUITTO_SUB, "-h", host, "-p", str(port), "-V", "mqttv311", "-d", "-v",
               "-q", str(qos), "-i", client_id or unique_id("msub")]
        for t in ([topics] if isinstance(topics, str) else topics):
            cmd += ["-t", t]
        if count is not None:
            cmd += ["-C", str(count)]
        if wait_s is not None:
            cmd += ["-W", str(wait_s)]
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.cond = threading.Condition()
        self.lines = []
        self.publishes = []     # dicts: dup, qos, retain, mid, topic, size, payload
        self.subacks = 0
        self._t = threading.Thread(target=self._reader, daemon=True)
        self._t.start()

    def _reader(self):
        # A PUBLISH debug line comes first; the "-v" line (topic payload) follows when
        # the message is handed to the application: at once for QoS 0/1, on PUBREL for
        # QoS 2, so several may be pending. Match them up first-in first-out by topic.
        pending = []
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self.cond:
                self.lines.append(line)
                m = _RX_PUBLISH.search(line)
                if m:
                    pending.append(dict(dup=int(m.group(1)), qos=int(m.group(2)),
                                        retain=int(m.group(3)), mid=int(m.group(4)),
                                        topic=m.group(5), size=int(m.group(6))))
                elif "received SUBACK" in line:
                    self.subacks += 1
                else:
                    for i, p in enumerate(pending):
                        if line.startswith(p["topic"] + " ") or (p["size"] == 0 and line == p["topic"]):
                            p["payload"] = line[len(p["topic"]) + 1:]
                            self.publishes.append(pending.pop(i))
                            break
                self.cond.notify_all()
        with self.cond:
            self.lines.append("<EOF>")
            self.cond.notify_all()

    def _wait(self, pred, timeout, what):
        with self.cond:
            ok = self.cond.wait_for(pred, timeout)
        if not ok:
            raise AssertionError("mosquitto_sub: timed out waiting for %s; output:\n%s"
                                 % (what, "\n".join(self.lines[-30:])))

    def wait_subscribed(self, timeout=DEFAULT_TIMEOUT):
        self._wait(lambda: self.subacks > 0, timeout, "SUBACK")

    def wait_publishes(self, n, timeout=DEFAULT_TIMEOUT):
        self._wait(lambda: len(self.publishes) >= n, timeout, "%d PUBLISH" % n)
        return list(self.publishes)

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        rc = self.proc.wait(timeout)
        self._t.join(timeout)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def output(self):
        with self.cond:
            return "\n".join(self.lines)
