# tools/boardload.py in CI: the board profile's 6 clients doing QoS 1/2 on the
# 64 KiB board (store off, the profile's default), and with the store at
# 88 KiB, the smallest heap it holds them in (docs/heap.md "Persistence at
# 64 KiB: the floor"). Every message acknowledged and delivered, the broker
# still running.
import pytest

from tools import boardload

pytestmark = pytest.mark.micropython


@pytest.mark.timeout(120)
def test_six_qos_clients_at_64k(micropython_exe):
    assert boardload.run("64k", persistence=False, messages=20, observers=0)


@pytest.mark.timeout(120)
def test_six_qos_clients_with_the_store_at_88k(micropython_exe):
    assert boardload.run("88k", persistence=True, messages=20, observers=0)
