# What a start says: the port bound (--port 0 too), a bad bind address or
# config.json named with exit 2 and no traceback, EDGEBROKER_LOOP checked.
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT
from tests.runtime._proc import Proc, command, mqtt_connect

RUNTIMES = ["cpython", "micropython"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    if request.param == "micropython":
        request.getfixturevalue("micropython_exe")  # skips where there is none
        request.applymarker(pytest.mark.micropython)
    return request.param


def _exits(cmd, cwd=REPO_ROOT, env=None):
    p = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert "Traceback" not in p.stdout, p.stdout
    return p.returncode, p.stdout


@pytest.mark.timeout(120)
def test_port_0_logs_the_port_bound(runtime, tmp_path):
    b = Proc(command(runtime, "--bind", "127.0.0.1", "--port", "0", "--data", str(tmp_path / "d")),
             tmp_path / "broker.log")
    try:
        port = b.wait_port()
        assert port != 0 and mqtt_connect(port)
    finally:
        b.stop()


@pytest.mark.parametrize("addr", ["999.1.1.1", "nosuchhost.invalid"])
@pytest.mark.timeout(120)
def test_a_bad_bind_address_is_named(runtime, addr, tmp_path):
    rc, out = _exits(command(runtime, "--bind", addr, "--port", "0", "--data", str(tmp_path / "d")))
    assert rc == 2 and "broker.bind: cannot listen on %s port 0" % addr in out, out
    # the failed start closed its store and released the directory: the next
    # broker there starts with no lock to take over
    b = Proc(command(runtime, "--bind", "127.0.0.1", "--port", "0", "--data", str(tmp_path / "d")),
             tmp_path / "broker.log")
    try:
        assert mqtt_connect(b.wait_port())
        assert "taken over" not in b.log(), b.log()
    finally:
        b.stop()


# ---- the board runtime's config.json (`micropython -m edge`) -----------------
def _board(micropython_exe, cwd, *args):
    # as on a board: the working directory holds config.json
    env = dict(os.environ, MICROPYPATH=".frozen:" + REPO_ROOT)
    return [micropython_exe, "-m", "edge"] + list(args), env


@pytest.mark.micropython
@pytest.mark.timeout(120)
def test_board_reads_config_json_by_default(micropython_exe, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"broker": {"bind": "127.0.0.1", "port": 0}, "store": {"dir": "from-config-json"}}))
    cmd, env = _board(micropython_exe, tmp_path)
    b = Proc(cmd, tmp_path / "broker.log", cwd=str(tmp_path), env=env)
    try:
        assert mqtt_connect(b.wait_port())
        assert "data in from-config-json" in b.log()
    finally:
        b.stop()


@pytest.mark.micropython
@pytest.mark.parametrize("text,error", [
    ('{"broker": {"port": 1884,}}', "config.json (line 1): trailing comma, not JSON"),
    ('{"store": {"dir": "d"},\n "broker": {"port": [1,\n 2,\n]}}', "config.json (line 3): trailing comma"),
    ('{"broker": {"port": 70000}}', "config.json: broker.port: must be an integer"),
])
@pytest.mark.timeout(60)
def test_board_config_json_errors_name_the_file(micropython_exe, tmp_path, text, error):
    (tmp_path / "config.json").write_text(text)
    cmd, env = _board(micropython_exe, tmp_path)
    rc, out = _exits(cmd, cwd=str(tmp_path), env=env)
    assert rc == 2 and error in out, out


def test_trailing_comma_outside_strings_only():
    from edge.config import trailing_comma as _trailing_comma

    assert _trailing_comma(b'{"a": "x,}", "b": [1, 2], "c": "\\",]"}') == 0
    assert _trailing_comma(b'{"a": [1, 2 ,\n\t]}') == 1
    assert _trailing_comma(b'{"a": {},\n}') == 1


# ---- EDGEBROKER_LOOP (CPython) --------------------------------------------------
@pytest.mark.timeout(60)
def test_unknown_event_loop_is_an_error(tmp_path):
    env = dict(os.environ, EDGEBROKER_LOOP="foo")
    rc, out = _exits([sys.executable, "-m", "gateway", "run", "--port", "0", "--data", str(tmp_path)], env=env)
    assert rc == 2, out
    assert "EDGEBROKER_LOOP: unknown event loop 'foo' (accepted: auto, asyncio, uvloop)" in out


def test_uvloop_asked_for_but_missing_warns(monkeypatch):
    from edge.runtime.speedups_cpython import runner

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop: ImportError
    logged = []
    monkeypatch.setenv("EDGEBROKER_LOOP", "uvloop")
    run, name = runner(lambda level, msg: logged.append((level, msg)))
    assert name == "asyncio" and logged == [
        (30, "EDGEBROKER_LOOP=uvloop but uvloop is not installed (pip install uvloop): asyncio's loop instead")]
    monkeypatch.setenv("EDGEBROKER_LOOP", "auto")  # not asked for by name: quiet
    del logged[:]
    assert runner(logged.append)[1] == "asyncio" and logged == []


# ---- CoAP beside MQTT (docs/coap.md) ----------------------------------------------
def _coap_ping(port):
    # An Empty CON is a CoAP ping: the endpoint answers it with an RST
    # (RFC 7252 §4.3), whatever its resources
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(b"\x40\x00\x12\x34", ("127.0.0.1", port))
        return s.recvfrom(64)[0]


# CoAP on a board. Its start is checked at 64 KiB: since a module's
# source name and path are one interned name (tools/mpy_build.py, docs/heap.md
# "Interned names") CoAP starts there again and answers small requests (it
# failed with MemoryError, 240 bytes, while its modules loaded, once the TLS
# and uplink hooks were in). Serving takes more: the CoAP integration suite
# failed 10 of 29 at 64 KiB (block-wise transfers, the $SYS counts), so the
# ping keeps 96 KiB, an ESP32's heap without PSRAM.
COAP_HEAP = "96k"
COAP_START_HEAP = "64k"


def _coap_config(tmp_path):
    # a board's profile has CoAP off (its heap): on here, as a user turns it on
    path = tmp_path / "coap.json"
    path.write_text(json.dumps({"coap": {"enabled": True}}))
    return ["--config", str(path)]


@pytest.mark.timeout(120)
def test_coap_port_0_logs_the_port_bound(runtime, tmp_path):
    cfg = _coap_config(tmp_path) if runtime == "micropython" else []
    b = Proc(command(runtime, *cfg, "--bind", "127.0.0.1", "--port", "0", "--coap-port", "0",
                     "--data", str(tmp_path / "d"), heap=COAP_HEAP), tmp_path / "broker.log")
    try:
        b.wait_port()
        deadline = time.monotonic() + 30
        while "/udp (CoAP)" not in b.log():
            assert time.monotonic() < deadline and b.p.poll() is None, b.log()
            time.sleep(0.05)  # polling the log, not waiting for an event
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)/udp \(CoAP\)", b.log()).group(1))
        assert port != 0 and _coap_ping(port) == b"\x70\x00\x12\x34"  # RST, the ping's MID
    finally:
        b.stop()


@pytest.mark.timeout(120)
def test_a_coap_port_in_use_is_named(runtime, tmp_path):
    import socket

    cfg = _coap_config(tmp_path) if runtime == "micropython" else []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        rc, out = _exits(command(runtime, *cfg, "--bind", "127.0.0.1", "--port", "0",
                                 "--coap-port", str(port), "--data", str(tmp_path / "d"), heap=COAP_START_HEAP))
    want = "coap.port: cannot listen on 127.0.0.1 port %d: port %d/udp is in use" % (port, port)
    assert rc == 2 and want in out, out
