# POST /publish/{topic}?qos=&retain= (docs/gateway.md): the body published
# through the broker's local-client API (Broker.publish), as a CoAP POST to
# /ps/{topic} is (edge/coap/resources.py), for devices and scripts that only
# speak HTTP.
#
# Durability (docs/design.md "Delivery guarantees"): the 200 of a QoS 1/2
# publish promises what the store recorded for it, as a PUBACK does. It
# waits, tagged with the log's next_seq - 1, until Log.settled() reaches
# that: the TCP shell's group commit (edge/runtime/commit_cpython.py, which
# calls release() after every settle, as for the CoAP shell's held replies)
# writes and syncs the batch. A QoS 0 publish is answered at once.
import json
from urllib.parse import parse_qs, unquote

from edge.errors import RemoteProtocolError

_WRITE = 2  # edge/auth/acl.py WRITE
_QOS = {"0": 0, "1": 1, "2": 2}
_BOOL = {"0": False, "1": True, "false": False, "true": True, "": False}


class Publisher:
    def __init__(self, broker, srv, stats):
        self.broker = broker
        self.srv = srv          # the TCP shell: its flush() and commits
        self.stats = stats
        self.held = []          # [(need, peer, body)]: answers waiting for the store
        srv.others.append(self)

    def handle(self, peer, path, query, body):
        """peer.respond() now, or once the store holds the message."""
        topic = unquote(path[len("/publish/"):], errors="strict") if path.startswith("/publish/") else ""
        args = parse_qs(query, keep_blank_values=True)
        qos = _QOS.get(args.get("qos", ["0"])[-1])
        retain = _BOOL.get(args.get("retain", [""])[-1].lower())
        if qos is None:
            return self._refuse(peer, 400, "qos must be 0, 1 or 2")
        if retain is None:
            return self._refuse(peer, 400, "retain must be 0, 1, true or false")
        if topic.startswith("$SYS") or topic.startswith("$share/"):
            # the broker's own tree, and a filter's form (MQTT 5.0 §4.8.2):
            # not written by clients, as over MQTT and CoAP
            return self._refuse(peer, 403, "topic %s is not writable" % topic)
        rules = peer.rules
        if rules is not True and not self.broker.auth.may(rules, topic, _WRITE):
            # the ACL's write permission, as for an MQTT PUBLISH (counted
            # in $SYS/broker/acl/denied/publish by may()); refused, not
            # dropped: HTTP has an answer for it
            return self._refuse(peer, 403, "not authorized to publish to %s (auth.acl_file)" % topic)
        try:
            self.broker.publish(topic, body, qos, retain)
        except RemoteProtocolError as e:  # [MQTT-4.7.3-1] empty, a wildcard, U+0000, too deep
            return self._refuse(peer, 400, "bad topic name: %s" % (e.msg or e))
        self.stats.publishes += 1
        self.srv.flush()  # the deliveries it queued go out now, not at the next tick
        answer = json.dumps({"topic": topic, "qos": qos, "retain": retain, "bytes": len(body)}) + "\n"
        st = self.broker.store
        if qos == 0 or st is None:
            return peer.respond(200, answer, "application/json")
        need = st.log.next_seq - 1
        # the TCP shell's settled(): the store's, held back by the uplink's
        # outbox (a message the uplink takes is on flash before the 200)
        if not self.held and self.srv.settled() >= need:
            return peer.respond(200, answer, "application/json")  # nothing recorded waits
        self.held.append((need, peer, answer))
        self.srv.commit_soon()  # a commit syncs it; release() answers

    def release(self, settled):
        """The store is durable up to `settled` (Log.settled): the answers
        that waited for it go out, in order."""
        held = self.held
        k = 0
        while k < len(held) and held[k][0] <= settled:
            k += 1
        if k:
            done = held[:k]
            del held[:k]
            for _, peer, answer in done:
                peer.respond(200, answer, "application/json")

    def _refuse(self, peer, status, text):
        self.stats.publish_refused += 1
        peer.respond(status, text + "\n")
