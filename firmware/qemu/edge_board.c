// edgebroker's QEMU board (firmware/qemu): what MicroPython's qemu port lacks
// for a board that runs the broker.
// - A RAM disk that stands in for the flash chip: `_edgeboard.flash()` is a
//   bytearray over a static buffer outside the GC heap (as a flash chip is),
//   kept across soft resets, lost when QEMU exits. firmware/qemu/_boot.py
//   partitions it and mounts littlefs on it.
// - mp_hal_time_ns(): littlefs stamps files with it and time.time() reads
//   it; there is no RTC, so it counts from boot.
// MIT licence, as the MicroPython code it is built with.
#include "py/runtime.h"
#include "py/mphal.h"

#ifndef EDGE_FLASH_BYTES
#define EDGE_FLASH_BYTES (1024 * 1024)
#endif

static uint8_t edge_flash[EDGE_FLASH_BYTES] __attribute__((aligned(8)));

uint64_t mp_hal_time_ns(void) {
    return (uint64_t)mp_hal_ticks_ms() * 1000000ULL;
}

static mp_obj_t edgeboard_flash(void) {
    return mp_obj_new_bytearray_by_ref(sizeof(edge_flash), edge_flash);
}
static MP_DEFINE_CONST_FUN_OBJ_0(edgeboard_flash_obj, edgeboard_flash);

static const mp_rom_map_elem_t edgeboard_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__edgeboard) },
    { MP_ROM_QSTR(MP_QSTR_flash), MP_ROM_PTR(&edgeboard_flash_obj) },
};
static MP_DEFINE_CONST_DICT(edgeboard_globals, edgeboard_globals_table);

const mp_obj_module_t edgeboard_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&edgeboard_globals,
};

MP_REGISTER_MODULE(MP_QSTR__edgeboard, edgeboard_module);
