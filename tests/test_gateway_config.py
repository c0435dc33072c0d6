# gateway/config.py + gateway/cli.py: TOML errors with file and line, flags
# over file over defaults, exit codes, the hand-off to edge.runtime.main.run.
import importlib
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from edge.errors import ConfigError
from gateway import cli
from gateway.config import key_lines, load_file, loads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text, name="edge.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture
def fake_run(monkeypatch):
    """Record run(cfg, log) calls; patch the real module if it imports."""
    calls = []

    def run(cfg, log):
        calls.append((cfg, log))
        log(20, "fake runtime up")

    try:
        mod = importlib.import_module("edge.runtime.main")
        monkeypatch.setattr(mod, "run", run)
    except ImportError:
        mod = types.ModuleType("edge.runtime.main")
        mod.run = run
        monkeypatch.setitem(sys.modules, "edge.runtime.main", mod)
    return calls


def test_key_lines():
    text = '# c\n[broker]\nport = 1883\n  bind="0.0.0.0"  # x\n\n[ store ]\n"dir" = "/d"\n'
    assert key_lines(text) == {"broker": 2, "broker.port": 3, "broker.bind": 4,
                               "store": 6, "store.dir": 7}


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path, "[broker]\nport = 1883\nbind = \n")
    e = pytest.raises(ConfigError, load_file, path).value
    assert e.line == 3
    assert str(e).startswith("%s (line 3): invalid TOML: " % path), str(e)
    assert "column" not in str(e)


def test_toml_duplicate_key(tmp_path):
    e = pytest.raises(ConfigError, loads, "[broker]\nport = 1\nport = 2\n", "x.toml").value
    assert str(e).startswith("x.toml (line 3): invalid TOML"), str(e)


def test_bad_value_names_file_key_and_line(tmp_path):
    path = _write(tmp_path, '[broker]\nbind = "0.0.0.0"\nport = "abc"\n')
    e = pytest.raises(ConfigError, load_file, path).value
    assert str(e) == '%s: broker.port (line 3): must be an integer 0..65535, got "abc"' % path
    assert e.line == 3


def test_unknown_key_with_line():
    e = pytest.raises(ConfigError, loads, "[store]\nsync = \"batch\"\nsnyc_max_delay_ms = 5\n",
                      "e.toml").value
    assert str(e).startswith("e.toml: store.snyc_max_delay_ms (line 3): unknown key"), str(e)
    assert '"sync_max_delay_ms"' in str(e)


def test_unknown_section_with_line():
    e = pytest.raises(ConfigError, loads, "[broker]\nport = 1\n\n[coapp]\nport = 5683\n",
                      "e.toml").value
    assert str(e).startswith("e.toml: coapp (line 4): unknown section"), str(e)


def test_top_level_key_is_not_a_section():
    e = pytest.raises(ConfigError, loads, "port = 1883\n", "e.toml").value
    assert str(e).startswith("e.toml: port (line 1): unknown section"), str(e)


def test_missing_and_non_utf8_file(tmp_path):
    e = pytest.raises(ConfigError, load_file, str(tmp_path / "nope.toml")).value
    assert "nope.toml" in str(e) and "cannot read" in str(e)
    p = tmp_path / "bin.toml"
    p.write_bytes(b"[broker]\n# \xff\n")
    e = pytest.raises(ConfigError, load_file, str(p)).value
    assert str(e) == "%s (line 2): not UTF-8 text" % p


def test_defaults_file_flags_order(tmp_path):
    path = _write(tmp_path, '[broker]\nport = 1884\nbind = "0.0.0.0"\n[log]\nlevel = "debug"\n')
    args = cli._parser().parse_args(["run", "--config", path, "--port", "1999",
                                     "--data", "/tmp/x", "--log-level", "warning"])
    cfg = cli.build_config(args)
    assert cfg["broker"]["port"] == 1999  # flag beats file
    assert cfg["broker"]["bind"] == "0.0.0.0"  # file beats default
    assert cfg["store"]["dir"] == "/tmp/x"
    assert cfg["log"]["level"] == "warning"
    assert cfg["broker"]["max_connections"] == 1000  # default


def test_main_bad_config_exit_2(tmp_path, capsys, fake_run):
    path = _write(tmp_path, '[broker]\nport = "abc"\n')
    assert cli.main(["run", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err == ('edgebroker: config error: %s: broker.port (line 2): '
                   'must be an integer 0..65535, got "abc"\n' % path)
    assert "Traceback" not in err
    assert fake_run == []


def test_main_bad_flag_exit_2(capsys, fake_run):
    assert cli.main(["run", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgebroker: config error: --port: broker.port: "
                          "must be an integer 0..65535, got 70000"), err
    assert cli.main(["run", "--log-level", "loud"]) == 2
    assert "log.level: must be one of" in capsys.readouterr().err
    assert fake_run == []


def test_main_runs_with_merged_config(tmp_path, capsys, fake_run):
    path = _write(tmp_path, '[broker]\nport = 1884\nmax_connections = 5\n')
    assert cli.main(["run", "--config", path, "--bind", "0.0.0.0", "--data", str(tmp_path)]) == 0
    assert len(fake_run) == 1
    cfg, log = fake_run[0]
    assert cfg["broker"]["port"] == 1884 and cfg["broker"]["max_connections"] == 5
    assert cfg["broker"]["bind"] == "0.0.0.0" and cfg["store"]["dir"] == str(tmp_path)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert " INFO fake runtime up" in err
    assert lines[-1].endswith(" INFO stopped"), err


def test_log_callable_levels_and_filter(capsys, fake_run):
    def run(cfg, log):
        for level in (10, 20, 30, 40):
            log(level, "lvl%d 100%%" % level)

    sys.modules["edge.runtime.main"].run = run  # fake_run restores it
    assert cli.main(["run", "--log-level", "warning"]) == 0
    err = capsys.readouterr().err
    assert "lvl10" not in err and "lvl20" not in err
    assert "WARNING lvl30 100%" in err and "ERROR lvl40 100%" in err


def test_keyboard_interrupt_and_sigterm_exit_0(capsys, fake_run):
    def run_ctrl_c(cfg, log):
        raise KeyboardInterrupt

    def run_sigterm(cfg, log):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            time.sleep(0.001)
        raise AssertionError("SIGTERM did not stop run()")

    before = signal.getsignal(signal.SIGTERM)
    for run in (run_ctrl_c, run_sigterm):
        sys.modules["edge.runtime.main"].run = run
        assert cli.main(["run"]) == 0
        err = capsys.readouterr().err
        assert err.splitlines()[-1].endswith(" INFO stopped"), err
        assert "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_runtime_oserror_exit_1(capsys, fake_run):
    def run(cfg, log):
        raise OSError(98, "Address already in use")

    sys.modules["edge.runtime.main"].run = run
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert "ERROR [Errno 98] Address already in use" in err and "Traceback" not in err


def test_usage_errors_and_version(capsys):
    assert cli.main([]) == 2  # a subcommand is required
    assert cli.main(["run", "--nope"]) == 2
    assert cli.main(["--version"]) == 0
    assert "edgebroker 0." in capsys.readouterr().out


def test_python_m_gateway_config_error(tmp_path):
    path = _write(tmp_path, "[broker]\nprot = 1\n")
    p = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", path],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stderr.startswith("edgebroker: config error: %s: broker.prot (line 2): unknown key"
                               % path), p.stderr


_STUB_RUNTIME = """
import asyncio, sys, types
from gateway.cli import main

def run(cfg, log):
    async def serve():
        log(20, "ready")
        await asyncio.Event().wait()
    asyncio.run(serve())

mod = types.ModuleType("edge.runtime.main")
mod.run = run
sys.modules["edge.runtime.main"] = mod
sys.exit(main(["run", "--port", "0"]))
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_asyncio_runtime_cleanly(sig):
    p = subprocess.Popen([sys.executable, "-c", _STUB_RUNTIME], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr.readline().endswith("starting on 127.0.0.1:0 (config: defaults)\n")
        assert p.stderr.readline().endswith(" INFO ready\n")
        p.send_signal(sig)
        rest = p.stderr.read()
        assert p.wait(10) == 0, rest
    finally:
        p.kill()
        p.wait()
    assert rest.endswith(" INFO stopped\n") and "Traceback" not in rest, rest
