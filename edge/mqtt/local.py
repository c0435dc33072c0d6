# A non-MQTT endpoint (CoAP, the uplink bridge) plugged into the topic space
# through Broker.local_client()/subscribe()/unsubscribe()/publish(). Its own
# module, imported on first use: a board without one pays no heap for it.


class LocalClient:
    """`callback(msg, qos, retain)` is called for each matching message."""

    store = None  # nothing of it persists (as Session.store of a clean session)

    def __init__(self, name, callback):
        self.client_id = name
        self.callback = callback
        self.subs = {}

    def deliver(self, msg, qos, retain=False):
        self.callback(msg, qos, retain)
