# edgebroker's boot.py (copied to the board's flash by `edgebroker deploy`;
# docs/firmware.md). Runs at every reset before main.py:
# 1. safe mode: main.py counts on flash (edge/board.py) its starts that
#    never ran the broker for 30 s; at board.safe_mode_boots of them it
#    leaves the broker off and this says so, so a config or code that
#    crashes the board can be fixed over the REPL instead of resetting
#    forever (a raw-REPL soft reset, as mpremote makes, runs no main.py and
#    counts nothing);
# 2. Wi-Fi from config.json's "board" section, with back-off between
#    attempts and a clear log when it fails (the broker starts anyway);
#    a no-op on a board without the network module (QEMU, a wired port).
# The watchdog is started by main.py with the broker, not here: a WDT runs
# until the next hard reset, and one started at boot would reset a board
# left at the REPL for a deploy.
import time

from edge import board


def _log(msg):
    print("boot:", msg)


def _safe_mode(cfg):
    n = board.boots()
    if n >= cfg["safe_mode_boots"]:
        _log("SAFE MODE: %d starts in a row did not run the broker for %d s; main.py will not start it. "
             "Fix config.json (or main.py) over the REPL, then remove %s and reset."
             % (n, board.STABLE_MS // 1000, board.COUNTER))


_WIFI_STATUS = ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL", "STAT_IDLE", "STAT_CONNECTING")


def _status_name(network, st):
    for name in _WIFI_STATUS:
        if getattr(network, name, None) == st:
            return name[5:].lower().replace("_", " ")
    return "status %s" % (st,)


def _wifi(cfg):
    ssid = cfg["wifi_ssid"]
    try:
        import network
    except ImportError:
        if ssid:
            _log("no network module on this board: Wi-Fi %r not joined" % ssid)
        return
    if not ssid:
        _log("no board.wifi_ssid in config.json: Wi-Fi not joined")
        return
    if cfg["hostname"]:
        try:
            network.hostname(cfg["hostname"])
        except (AttributeError, ValueError, OSError):
            pass  # an older port without network.hostname()
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    delay = 1
    st = None
    for attempt in range(1, cfg["wifi_attempts"] + 1):
        wlan.connect(ssid, cfg["wifi_password"])
        t0 = time.ticks_ms()
        while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < cfg["wifi_timeout_ms"]:
            time.sleep_ms(100)
        if wlan.isconnected():
            _log("Wi-Fi %r joined: %s" % (ssid, wlan.ifconfig()[0]))
            return
        st = wlan.status()
        wlan.disconnect()
        if attempt < cfg["wifi_attempts"]:
            _log("Wi-Fi %r attempt %d/%d failed (%s), next in %d s"
                 % (ssid, attempt, cfg["wifi_attempts"], _status_name(network, st), delay))
            time.sleep(delay)
            delay = min(delay * 2, 30)
    _log("Wi-Fi %r NOT joined after %d attempts (%s): check board.wifi_ssid and board.wifi_password "
         "in config.json; the broker starts without a network" % (ssid, cfg["wifi_attempts"], _status_name(network, st)))


def _boot():
    try:
        cfg, _ = board.read()
    except Exception as e:  # noqa: BLE001  a bad file must not stop the REPL
        _log("config.json: %s (Wi-Fi and safe mode use their defaults)" % e)
        cfg, _ = board.split({})
    _safe_mode(cfg)
    _wifi(cfg)  # in safe mode too: a network REPL may be how it gets fixed


_boot()
del _boot
