# A plain install (`pip install .`, pipx) with no extras gives a working
# `edgebroker`: no third-party package, no top-level `tools` in
# site-packages (tools/ runs from a checkout only).
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.runtime._proc import Proc, mqtt_connect

# What a source tree needs to build (tools/ too: it must not be installed).
_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "edge", "gateway", "tools")


def _run(cmd, **kw):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=240, **kw)
    assert p.returncode == 0, "%s:\n%s" % (" ".join(cmd), p.stdout)
    return p.stdout


@pytest.mark.timeout(400)
def test_plain_install_runs_without_extras(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in _SOURCES:
        path = os.path.join(REPO_ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
        else:
            shutil.copy(path, src / name)
    # The wheel `pip install <src>` builds, built offline with this venv's
    # setuptools; the fresh venv installs it with no index at all.
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(wheels), str(src)])
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])  # no --system-site-packages
    py = str(venv / "bin" / "python")
    (wheel,) = wheels.iterdir()
    _run([py, "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check", str(wheel)])

    # -I: no cwd, no PYTHONPATH; only what the venv holds
    out = _run([py, "-I", "-c", "import importlib.util as u, sys; "
                "print([u.find_spec(m) is not None for m in ('edge', 'gateway', 'tools')])"],
               cwd=str(tmp_path))
    assert out.strip() == "[True, True, False]"

    data = tmp_path / "data"
    b = Proc([str(venv / "bin" / "edgebroker"), "run", "--bind", "127.0.0.1", "--port", "0",
              "--coap-port", "0", "--data", str(data)], tmp_path / "broker.log", cwd=str(tmp_path))
    try:
        port = b.wait_port()
        assert port != 0 and mqtt_connect(port)
    finally:
        rc = b.stop()
    assert rc == 0, b.log()
