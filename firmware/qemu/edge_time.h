// time.time() for the QEMU board (included by MicroPython's extmod/modtime.c
// through MICROPY_PY_TIME_INCLUDEFILE): seconds since boot, from
// mp_hal_time_ns() (edge_board.c); there is no RTC.
static mp_obj_t mp_time_time_get(void) {
    return mp_obj_new_int_from_ull(mp_hal_time_ns() / 1000000000ULL);
}
