# `edgebroker bundle` (gateway/bundle.py): edge/ as .mpy at the board's
# bytecode version with boot.py, main.py and config.json; its .mpy loaded by
# the MicroPython unix port (1.28.0), and the bundle deployed with
# `edgebroker deploy --bundle` to that port behind socat (a board's serial
# port, a MicroPython without edge/ frozen in), where main.py then starts
# the broker from the .mpy files and paho clients talk to it.
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.firmware.qemu import REPO_ROOT
from tests.firmware.test_deploy import _socat_micropython, _stop
from tests.integration.clients import round_trip
from tests.integration.conftest import free_port


def _edgebroker(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "gateway"] + [str(a) for a in args], cwd=REPO_ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.timeout(120)
@pytest.mark.micropython
def test_bundle_mpy_loads_on_the_unix_port(micropython_exe, tmp_path):
    out = tmp_path / "b"
    rc, text = _edgebroker("bundle", "--profile", "esp32", "--out", out)
    assert rc == 0 and re.search(r"\d+ \.mpy v6\.3", text), text
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["bytecode"] == "6.3" and manifest["profile"] == "esp32"
    names = sorted(manifest["files"])
    assert {"boot.py", "main.py", "config.json", "edge/__main__.py", "edge/mqtt/broker.mpy"} <= set(names)
    # edge/ only as .mpy (its __main__ aside), no CPython-only module
    sources = [n for n in names if n.startswith("edge/") and not n.endswith(".mpy")]
    assert sources == ["edge/__main__.py"] and not any("cpython" in n for n in names), names
    assert json.loads((out / "config.json").read_text())["board"]["profile"] == "esp32"
    assert (out / "edge" / "mqtt" / "broker.mpy").read_bytes()[:2] == b"M\x06"
    # every module of the bundle imports on MicroPython 1.28.0, from its .mpy
    mods = [n[:-4].replace("/", ".") for n in names if n.endswith(".mpy")]
    mods = [m[:-9] if m.endswith(".__init__") else m for m in mods]
    code = "import sys\nfor m in %r:\n __import__(m)\nprint(sys.modules['edge.mqtt.broker'].__file__)\n" % mods
    p = subprocess.run([micropython_exe, "-c", code], cwd=str(out), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["edge/mqtt/broker.mpy"], p.stdout + p.stderr
    # another bytecode version: a MicroPython 1.12-1.18 one (v5), which 1.28 refuses to load
    rc, text = _edgebroker("bundle", "--bytecode", "5", "--out", tmp_path / "v5.tar.gz")
    assert rc == 0 and "v5.0" in text, text
    # one mpy-cross cannot write: named
    rc, text = _edgebroker("bundle", "--bytecode", "7.0", "--out", tmp_path / "v7")
    assert rc == 1 and "bytecode version mismatch: the board loads .mpy v7.0, mpy-cross writes v6.3" in text, text
    assert "Traceback" not in text and not (tmp_path / "v7").exists()
    # a directory of something else is not replaced; a bundle is (made again)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    rc, text = _edgebroker("bundle", "--out", other)
    assert rc == 1 and "holds no bundle: not overwritten" in text and (other / "notes.txt").exists(), text
    rc, text = _edgebroker("bundle", "--profile", "pico-w", "--out", out)
    assert rc == 0 and json.loads((out / "bundle.json").read_text())["profile"] == "pico-w", text
    # a bad config: refused before anything is compiled
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"broker": {"max_connections": 0}}))
    rc, text = _edgebroker("bundle", "--config", bad, "--out", tmp_path / "bad")
    assert rc == 2 and "broker.max_connections: must be an integer >= 1, got 0" in text, text
    assert not (tmp_path / "bad").exists()


@pytest.mark.timeout(240)
@pytest.mark.micropython
def test_deploy_a_bundle_to_the_unix_port_and_start_the_broker_from_it(micropython_exe, tmp_path):
    if not os.path.exists("/usr/bin/socat"):
        pytest.skip("socat not installed (make deps installs it)")
    port = free_port()
    user = tmp_path / "my-board.json"
    user.write_text(json.dumps({"broker": {"bind": "127.0.0.1", "port": port},
                                "store": {"dir": str(tmp_path / "flash" / "data")}}))
    archive = tmp_path / "esp32.tar.gz"
    rc, text = _edgebroker("bundle", "--profile", "esp32", "--config", user, "--out", archive)
    assert rc == 0, text
    v5 = tmp_path / "v5"
    rc, text = _edgebroker("bundle", "--profile", "esp32", "--bytecode", "5", "--out", v5)
    assert rc == 0, text
    flash = tmp_path / "flash"
    flash.mkdir()

    def deploy(*args):
        proc, link = _socat_micropython(micropython_exe, str(flash))
        try:
            return _edgebroker("deploy", "--port", link, "--follow", "0.5", *args, timeout=150)
        finally:
            _stop(proc)

    rc, text = deploy("--bundle", v5)  # checked against the board before anything is written
    assert rc == 1 and "bytecode version mismatch: the board runs .mpy v6.3, the bundle is v5.0" in text, text
    assert os.listdir(str(flash)) == []
    rc, text = deploy("--bundle", archive, "--profile", "esp32")
    assert rc == 1 and "--bundle has its own config.json" in text, text
    rc, text = deploy("--bundle", archive)
    assert rc == 0, text
    n = int(re.search(r"(\d+) of \1 files changed", text).group(1))
    assert n > 40 and "copy edge/mqtt/broker.mpy" in text and "verified: %d files" % n in text, text
    rc, text = deploy("--bundle", archive)
    assert rc == 0 and "0 of %d files changed" % n in text, text
    edge_src = [os.path.join(d, f) for d, _, fs in os.walk(str(flash / "edge")) for f in fs if f.endswith(".py")]
    assert edge_src == [str(flash / "edge" / "__main__.py")], edge_src
    # the board's start: boot.py, then main.py, which runs the broker from
    # the .mpy files on its flash
    log = open(str(tmp_path / "log"), "w+")
    proc = subprocess.Popen([micropython_exe, "-c", "exec(open('boot.py').read())\nexec(open('main.py').read())\n"],
                            cwd=str(flash), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        out = ""
        while time.monotonic() < deadline and "listening on" not in out:
            assert proc.poll() is None, "main.py ended:\n" + out
            time.sleep(0.1)
            log.seek(0)
            out = log.read()
        assert "edgebroker listening on 127.0.0.1:%d (MQTT)" % port in out, out
        round_trip("127.0.0.1", port, qos=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.timeout(180)
def test_deploy_a_bundle_to_a_board_with_edge_frozen_in(board, tmp_path):
    """The QEMU board has edge/ in its firmware: of a bundle only boot.py,
    main.py and config.json go onto its flash (a .mpy there would take the
    frozen module's place and load into the heap)."""
    from tests.firmware.test_deploy import _deploy, _on_board, _wipe

    _wipe(board)
    out = tmp_path / "b"
    rc, text = _edgebroker("bundle", "--profile", "esp32", "--out", out)
    assert rc == 0, text
    rc, text = _deploy(board, "--bundle", str(out))
    assert rc == 0 and "3 of 3 files changed" in text and "edge/ frozen in the firmware" in text, text
    assert "edge/" not in text.replace("edge/ frozen", ""), text
    assert _on_board(board) == "['boot.py', 'config.json', 'main.py']"
    assert board.run("import os\nprint('edge' in os.listdir('/'))\n").strip() == "False"
    got = json.loads(board.run("print(open('/config.json').read())"))
    assert got["board"]["profile"] == "esp32"
