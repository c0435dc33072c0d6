# firmware/boot.py and firmware/main.py on the QEMU board (tests/firmware/
# qemu.py): copied to its flash with a config.json from a profile, then a
# power-on (the friendly REPL's soft reset runs them). The board has no
# network: boot.py says Wi-Fi was not joined, main.py that the broker cannot
# start, and each such start counts towards safe mode.
import json
import os

import pytest

from tests.firmware import qemu

FW = os.path.join(qemu.REPO_ROOT, "firmware")


def _read(name):
    with open(os.path.join(FW, name), "rb") as f:
        return f.read()


def _config(**board):
    with open(os.path.join(FW, "profiles", "esp32.json")) as f:
        cfg = json.load(f)
    cfg["board"].update(board)
    return json.dumps(cfg).encode()


@pytest.mark.timeout(120)
def test_boot_and_main_log_and_safe_mode(board):
    board.fresh()
    board.put("boot.py", _read("boot.py"))
    board.put("main.py", _read("main.py"))
    board.put("config.json", _config(wifi_ssid="lab", safe_mode_boots=2))
    board.run("import os\ntry:\n os.remove('boot.count')\nexcept OSError:\n pass\n")
    out = board.power_on()
    assert "boot: no network module on this board: Wi-Fi 'lab' not joined" in out, out
    assert "main: no socket module on this board (no network): broker NOT started" in out, out
    assert "SAFE MODE" not in out
    out = board.power_on()  # the 2nd start that never ran the broker
    assert "broker NOT started" in out and "SAFE MODE" not in out, out
    out = board.power_on()
    assert "boot: SAFE MODE: 2 starts in a row did not run the broker" in out, out
    assert "main: safe mode (see boot.py's log): broker NOT started" in out, out
    # the REPL is free: the fix, then a normal start again
    board.run("import os\nos.remove('boot.count')\n")
    out = board.power_on()
    assert "SAFE MODE" not in out and "no socket module" in out, out


@pytest.mark.timeout(120)
def test_a_bad_config_is_named_and_the_board_stays_at_the_repl(board):
    board.fresh()
    board.put("boot.py", _read("boot.py"))
    board.put("main.py", _read("main.py"))
    board.put("config.json", b'{"board": {"wifi_sid": "lab"}}')
    out = board.power_on()
    assert "boot: config.json: board.wifi_sid: unknown key" in out, out
    assert "main: config.json: board.wifi_sid: unknown key" in out and "broker NOT started" in out, out
    board.put("config.json", b'{"broker": {"max_connections": 0}}')
    board.run("import os\ntry:\n os.remove('boot.count')\nexcept OSError:\n pass\n")
    out = board.power_on()
    assert "main: config.json: broker.max_connections: must be an integer >= 1, got 0: broker NOT started" in out, out
