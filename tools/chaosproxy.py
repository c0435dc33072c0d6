# A TCP proxy a test or benchmark controls (tests/integration/test_17_uplink_chaos.py,
# tools/bench/uplink.py): it forwards a loopback port to a target and, on the test's word, turns
# the link into a silent black hole (the bytes of the connections open at
# that moment are swallowed both ways, the sockets stay open: no FIN, no
# RST, as a dead NAT entry or a pulled cable far away looks) or refuses
# (every connection, open or new, is closed as soon as it is seen).
# One thread and a selector; stop() ends it and closes every socket.
import selectors
import socket
import threading

PASS = "pass"
REFUSE = "refuse"


class TcpProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.mode = PASS
        self.holes = set()    # sockets whose bytes are swallowed
        self.peer = {}        # socket -> the other end of its pair
        self.accepted = 0     # connections accepted, ever
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ)
        self.running = True
        self.thread = threading.Thread(target=self._run, name="tcpproxy", daemon=True)
        self.thread.start()

    # ---- the test's controls
    def black_hole(self):
        """Swallow, from now on, every byte of the connections open now."""
        with self.lock:
            self.holes.update(self.peer)

    def refuse(self):
        """Close every connection, and each new one at once."""
        with self.lock:
            self.mode = REFUSE

    def restore(self):
        """Forward new connections again (black-holed ones stay so)."""
        with self.lock:
            self.mode = PASS

    def stop(self):
        self.running = False
        self.thread.join(5)
        for s in list(self.peer):
            self._close(s)
        self.sel.close()
        self.lsock.close()

    # ---- the thread
    def _run(self):
        while self.running:
            for key, _ in self.sel.select(0.05):
                s = key.fileobj
                if s is self.lsock:
                    self._accept()
                else:
                    self._pump(s)
            with self.lock:
                if self.mode == REFUSE:
                    for s in list(self.peer):
                        self._close(s)

    def _accept(self):
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        self.accepted += 1
        with self.lock:
            refuse = self.mode == REFUSE
        if refuse:
            c.close()
            return
        try:
            u = socket.create_connection(self.target, timeout=5)
        except OSError:
            c.close()  # the target is down: as a refused connection
            return
        for s in (c, u):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(s, selectors.EVENT_READ)
        self.peer[c] = u
        self.peer[u] = c

    def _pump(self, s):
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        with self.lock:
            hole = s in self.holes
        if hole:
            if not data:  # an EOF swallowed too: the other side hears nothing
                self.sel.unregister(s)
            return
        if not data:
            self._close(s)
            return
        o = self.peer.get(s)
        if o is None:
            return
        try:
            o.setblocking(True)  # (small test traffic: a blocking send is fine)
            o.settimeout(5)
            o.sendall(data)
            o.setblocking(False)
        except OSError:
            self._close(s)

    def _close(self, s):
        o = self.peer.pop(s, None)
        for x in (s, o):
            if x is None:
                continue
            self.peer.pop(x, None)
            self.holes.discard(x)
            try:
                self.sel.unregister(x)
            except (KeyError, ValueError):
                pass
            x.close()
