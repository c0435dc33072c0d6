# The QEMU board (tests/firmware/qemu.py): the image is built once per run
# (incremental: `make test` has built it already) and booted once per module.
import pytest

from tests.firmware import qemu


@pytest.fixture(scope="session")
def firmware():
    gone = qemu.missing_toolchain()
    if gone:
        pytest.skip("cannot build the QEMU firmware image: %s not installed (`make test` and "
                    "`make firmware` install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)" % gone)
    elf = qemu.build()
    return elf, qemu.build_romfs()


@pytest.fixture(scope="module")
def board(firmware):
    elf, romfs = firmware
    b = qemu.Board(elf, romfs)
    yield b
    b.stop()
