# The HTTP listener's routes (docs/gateway.md): a table of path -> handler,
# each answering through peer.respond(status, body, type).
from gateway import httpauth, metrics


class Routes:
    def __init__(self, web):
        self.web = web
        # exact path -> (methods, handler(peer, path, query, body))
        self.table = {
            "/metrics": (("GET",), self._metrics),
        }
        # path prefix -> the same
        self.prefixes = (("/publish/", ("POST", "PUT"), self._publish),)
        if web.status is not None:
            self.table["/"] = (("GET",), web.status.page)
            self.table["/status.json"] = (("GET",), web.status.json)

    def handle(self, peer, method, target, body, headers):
        path, _, query = target.partition("?")
        self.web.stats.requests += 1
        # Basic credentials (gateway/httpauth.py): POST /publish is checked
        # as an MQTT CONNECT; with http.auth on every route is, before any
        # other answer (a 404 or 405 tells nothing to a stranger either)
        auth = self.web.auth
        publish = path.startswith("/publish/")
        rules = auth.login(peer, headers, publish)
        if rules is None:
            auth.refused(peer, "%s %s" % (method, path))
            return peer.respond(401, "a valid user name and password are needed (HTTP Basic)\n",
                                headers=[httpauth.CHALLENGE])
        peer.rules = rules  # the ACL's, for POST /publish's write check
        entry = self.table.get(path)
        if entry is None:
            for prefix, methods, fn in self.prefixes:
                if path.startswith(prefix):
                    entry = (methods, fn)
                    break
        if entry is None:
            self.web.stats.not_found += 1
            return peer.respond(404, "not found: %s\n" % path)
        methods, fn = entry
        if method not in methods:  # RFC 9110 §15.5.6
            return peer.respond(405, "%s takes %s\n" % (path, ", ".join(methods)),
                                headers=[("allow", ", ".join(methods))])
        try:
            fn(peer, path, query, body)
        except UnicodeDecodeError:  # a %-escape that is not UTF-8
            peer.respond(400, "the path is not UTF-8 after %-decoding\n")

    def _metrics(self, peer, path, query, body):
        w = self.web
        st = w.stats
        extra = [
            ("edgebroker_websocket_connections_total", "counter", "MQTT over WebSocket connections accepted",
             st.ws_accepted),
            ("edgebroker_http_requests_total", "counter", "HTTP requests answered by a route", st.requests),
            ("edgebroker_http_publishes_total", "counter", "Messages published by POST /publish", st.publishes),
            ("edgebroker_http_publish_refused_total", "counter", "POST /publish refused (400, 403: not 401)",
             st.publish_refused),
            ("edgebroker_http_too_large_total", "counter", "Requests refused with 413", st.too_large),
            ("edgebroker_http_bad_requests_total", "counter", "Requests that were not HTTP/1.1", st.bad_requests),
            ("edgebroker_http_refused_total", "counter", "HTTP connections refused over http.max_connections",
             st.refused),
            ("edgebroker_http_idle_closed_total", "counter", "HTTP connections closed after http.idle_timeout",
             st.idle_closed),
            ("edgebroker_http_unauthorized_total", "counter", "HTTP requests refused with 401", st.unauthorized),
            ("edgebroker_http_connections", "gauge", "HTTP connections and status pages open", w.http_open),
        ]
        rss = _rss()
        if rss >= 0:
            extra.append(("edgebroker_process_resident_memory_bytes", "gauge", "Resident memory", rss))
        peer.respond(200, metrics.render(w.broker, extra), metrics.CONTENT_TYPE)

    def _publish(self, peer, path, query, body):
        self.web.publisher.handle(peer, path, query, body)


def _rss():
    # Linux: /proc/self/statm's second field, in pages
    try:
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return -1
