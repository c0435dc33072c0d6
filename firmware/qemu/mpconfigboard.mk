# edgebroker's QEMU board: MicroPython's MPS2_AN385 (Cortex-M3, 4 MB RAM) as a
# stand-in for an ESP32 without PSRAM: the same 96 KiB heap (set by
# firmware/qemu/build.sh), littlefs on a RAM disk as its flash.
QEMU_ARCH = arm
QEMU_MACHINE = mps2-an385

CFLAGS += -mthumb -mcpu=cortex-m3 -mfloat-abi=soft
CFLAGS += -DQEMU_SOC_MPS2
CFLAGS += -DMICROPY_HW_MCU_NAME='"Cortex-M3"'
# time.time()/time_ns(): seconds since boot (no RTC), as an ESP32 before NTP
CFLAGS += -DMICROPY_PY_TIME_TIME_TIME_NS=1 -DMICROPY_PY_TIME_INCLUDEFILE='"edge_time.h"'

LDSCRIPT = mcu/arm/mps2.ld

SRC_BOARD_O = shared/runtime/gchelper_native.o shared/runtime/gchelper_thumb2.o
# the flash's RAM disk and the shims the port lacks (mp_hal_time_ns)
SRC_C += edge_board.c

MPY_CROSS_FLAGS += -march=armv7m
MICROPY_VFS_LFS2 = 1
