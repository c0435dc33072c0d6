# Helpers for the gateway's web listeners (docs/gateway.md): a CPython broker
# with [websocket] and [http] on one free port, and a hand-rolled WebSocket
# client (RFC 6455 framing written here, independent of wsproto, the library
# under test) for exact frame boundaries and broken input.
import base64
import hashlib
import os
import socket
import struct
import time
import urllib.error
import urllib.request

from .conftest import Broker, free_port

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0


def close_clients(*clients):
    """Disconnect paho clients (clients.Client); one that cannot is stopped."""
    for c in clients:
        try:
            c.disconnect(3)
        except Exception:
            c.stop()


def web_broker(tmp_path, name="web", **config):
    """A started CPython broker serving MQTT over WebSockets on /mqtt and
    HTTP on the same free port (b.web_port); config: more keys ("a.b": v)."""
    port = free_port()
    cfg = {"sys_interval": 1, "websocket.enabled": True, "websocket.port": port,
           "http.enabled": True, "http.port": port}
    cfg.update(config)
    b = Broker("cpython", tmp_path / name, cfg)
    b.start()
    b.web_port = port
    wait_log(b, "serving HTTP at")
    return b


def wait_log(b, text, timeout=15):
    deadline = time.monotonic() + timeout
    while text not in b.log_text():
        b.assert_alive()
        assert time.monotonic() < deadline, "no %r in the log after %ss:\n%s" % (text, timeout, b.log_tail())
        time.sleep(0.01)  # polling the log, not waiting blindly


def http(port, method, path, body=None, timeout=10, auth=None, headers=None):
    """(status, headers, body) of one request; auth: (user, password) sent
    as HTTP Basic credentials (RFC 7617)."""
    hdrs = dict(headers or {})
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def handshake(port, path="/mqtt", protocol="mqtt", timeout=10, extra=()):
    """A socket after the opening handshake; (sock, status, head text). The
    socket is returned whatever the status (a refusal's body follows).
    extra: more header lines."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16))
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key.decode(), "Sec-WebSocket-Version: 13"]
    if protocol:
        lines.append("Sec-WebSocket-Protocol: %s" % protocol)
    lines += list(extra)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)  # byte by byte: nothing after the head is consumed
        assert chunk, "closed during the handshake: %r" % head
        head += chunk
    text = head.decode("latin-1")
    status = int(text.split(" ", 2)[1])
    if status == 101:
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        assert "sec-websocket-accept: %s" % accept.lower() in text.lower(), text
    return s, status, text


def frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44"):
    """One client frame (RFC 6455 §5.2), masked as a client must (§5.3)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed after %r" % buf)
        buf += chunk
    return buf


def read_frame(s):
    """(fin, opcode, payload) of one server frame (unmasked, §5.1)."""
    b0, b1 = _read(s, 2)
    assert not b1 & 0x80, "a server frame must not be masked (RFC 6455 §5.1)"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _read(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _read(s, 8))[0]
    return bool(b0 & 0x80), b0 & 0x0F, _read(s, n)


def read_mqtt(s, want):
    """The MQTT byte stream from binary frames until `want` bytes came."""
    got = b""
    while len(got) < want:
        fin, op, data = read_frame(s)
        assert op in (BINARY, CONT), "frame opcode %d, expected binary [MQTT-6.0.0-1]" % op
        got += data
    return got


def headless_chromium(window="1200,900"):
    """A selenium driver of Debian's headless chromium, through its
    chromium-driver given by path (selenium never looks for, or downloads,
    one); the test is skipped where either is missing."""
    import shutil

    import pytest

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed here")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--window-size=" + window):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver, log_output=os.devnull), options=opts)
