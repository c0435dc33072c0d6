# CPU time and memory of a process, from /proc (Linux only, as the benchmark).
import os

_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid="self"):
    """utime + stime of one process, in seconds (None if it is gone)."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TCK  # fields 14, 15 of stat(5)


def rss_bytes(pid="self"):
    """Resident set size (VmRSS), in bytes (None if the process is gone)."""
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class CpuMeter:
    """CPU use of several processes over a window, as % of one core."""

    def __init__(self, pids):
        self.pids = dict(pids)  # label -> pid
        self.start()

    def start(self):
        import time
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self):
        import time
        wall = max(time.monotonic() - self.t0, 1e-9)
        out = {}
        for k, p in self.pids.items():
            c1 = cpu_seconds(p)
            c0 = self.c0.get(k)
            out[k] = None if c1 is None or c0 is None else round(100.0 * (c1 - c0) / wall, 1)
        return out
