# A non-MQTT endpoint (CoAP, the uplink bridge) plugged into the topic space
# through Broker.local_client()/subscribe()/unsubscribe()/publish(). Its own
# module, imported on first use: a board without one pays no heap for it.


class LocalClient:
    """`callback(msg, qos, retain)` is called for each matching message."""

    clean = True  # holds nothing while away (the memory budget's view)
    store = None  # nothing of it persists (as Session.store of a clean session)
    rules = True  # in-process: the ACL checks let it through (edge/auth/guard.py)

    def __init__(self, name, callback):
        self.client_id = name
        self.callback = callback
        self.subs = {}

    def deliver(self, msg, qos, retain=False):
        if type(msg.payload) is memoryview:
            # A QoS 0 payload still in the receive buffer (codec.decode
            # view=True): the callback may keep it, so it gets its own copy.
            from edge.mqtt.session import Message

            msg = Message(msg.topic, bytes(msg.payload), msg.qos, msg.retain, msg.props)
        self.callback(msg, qos, retain)
