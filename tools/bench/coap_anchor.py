"""The CoAP benchmark's Python anchor: an aiocoap server bridged to an MQTT broker.

    python -m tools.bench.coap_anchor --coap-port C --mqtt-port M [--bind 127.0.0.1]

The URIs of EMQX 5's CoAP gateway, as edgebroker's endpoint serves them:
  POST/PUT /ps/{topic}?qos=&retain=   publish into the broker, 2.04
  GET /ps/{filter} + Observe 0        subscribe: every message is a notification
                                      (NON for QoS 0, CON otherwise); + and # allowed
  GET /ps/{topic}, GET /r/{topic}     the retained message, 2.05, or 4.04 when none

A straightforward implementation, not a tuned one nor a deliberately slow one:
aiocoap 0.4 (asyncio) serves CoAP; paho-mqtt 2 (its own network thread,
loop_start) talks MQTT 5.0 to the broker (mosquitto in the benchmark). One MQTT
connection subscribes to `#` with No Local (what the bridge publishes is
dispatched to its own observers directly, not echoed back) and Retain As
Published, so the bridge keeps a mirror of the retained messages that GET
reads. Notifications go through aiocoap's Pipe interface (render_to_pipe,
add_response per message): unlike ObservableResource.updated_state, which
keeps only the latest state, every message becomes a notification, as an
MQTT subscriber gets every message.
"""
import argparse
import asyncio
import itertools
import logging
import sys
import threading

import aiocoap
import aiocoap.resource as resource
import paho.mqtt.client as mqtt
from aiocoap.numbers.codes import Code
from paho.mqtt.subscribeoptions import SubscribeOptions


def _query(request):
    """qos (0..2) and retain (0/1) from the Uri-Query options; ValueError."""
    qos, retain = 0, False
    for q in request.opt.uri_query:
        k, _, v = q.partition("=")
        if k == "qos":
            qos = int(v)
            if qos not in (0, 1, 2):
                raise ValueError(q)
        elif k == "retain":
            retain = v in ("1", "true")
    return qos, retain


def _topic(request):
    return "/".join(request.opt.uri_path)


class Bridge:
    """The MQTT side: one paho client, the retained mirror, the observers."""

    def __init__(self, loop, host, port):
        self.loop = loop
        self.retained = {}   # topic -> payload
        self.observers = {}  # filter -> {id: [pipe, qos, observe number]}
        self.ids = itertools.count()
        self.acks = {}       # mid -> Future (QoS 1/2 publishes waiting for the broker)
        self.acked = set()   # mids acked before their Future was registered
        self.lock = threading.Lock()
        self.ready = loop.create_future()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="coap-anchor",
                                      protocol=mqtt.MQTTv5)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.connect(host, port, keepalive=60)
        c.loop_start()

    # paho's thread -------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, props):
        client.subscribe("#", options=SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True))
        self.loop.call_soon_threadsafe(lambda: self.ready.done() or self.ready.set_result(reason))

    def _on_message(self, client, userdata, msg):
        self.loop.call_soon_threadsafe(self.dispatch, msg.topic, msg.payload, msg.qos, msg.retain)

    def _on_publish(self, client, userdata, mid, reason, props):
        with self.lock:
            fut = self.acks.pop(mid, None)
            if fut is None:
                self.acked.add(mid)
        if fut is not None:
            self.loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(reason))

    # the event loop ------------------------------------------------------------
    async def publish(self, topic, payload, qos, retain):
        info = self.client.publish(topic, payload, qos, retain)
        if qos:
            fut = self.loop.create_future()
            with self.lock:
                if info.mid in self.acked:
                    self.acked.discard(info.mid)
                    fut.set_result(0)
                else:
                    self.acks[info.mid] = fut
            await fut
        # No Local: the broker does not send it back to us
        self.dispatch(topic, payload, qos, retain)

    def dispatch(self, topic, payload, qos, retain):
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for f, obs in self.observers.items():
            if obs and mqtt.topic_matches_sub(f, topic):
                for entry in list(obs.values()):
                    pipe, oq, n = entry
                    entry[2] = n = (n + 1) & 0xFFFFFF
                    m = aiocoap.Message(code=Code.CONTENT, payload=payload, observe=n,
                                        transport_tuning=aiocoap.Unreliable if min(qos, oq) == 0
                                        else aiocoap.Reliable)
                    pipe.add_response(m, is_last=False)


class Retained(resource.Resource, resource.PathCapable):
    """/r/{topic}: GET the retained message."""

    def __init__(self, bridge):
        super().__init__()
        self.bridge = bridge

    async def render_get(self, request):
        topic = _topic(request)
        if not topic:
            return aiocoap.Message(code=Code.BAD_REQUEST)
        p = self.bridge.retained.get(topic)
        if p is None:
            return aiocoap.Message(code=Code.NOT_FOUND)
        return aiocoap.Message(code=Code.CONTENT, payload=p)


class PubSub(Retained):
    """/ps/{topic}: POST/PUT publish, GET + Observe subscribe, GET reads."""

    async def render_to_pipe(self, pipe):
        req = pipe.request
        if req.code == Code.GET and req.opt.observe == 0:
            return await self._observe(pipe)
        return await super().render_to_pipe(pipe)

    async def _observe(self, pipe):
        req = pipe.request
        f = _topic(req)
        try:
            qos, _ = _query(req)
        except ValueError:
            pipe.add_response(aiocoap.Message(code=Code.BAD_REQUEST), is_last=True)
            return
        if not f:
            pipe.add_response(aiocoap.Message(code=Code.BAD_REQUEST), is_last=True)
            return
        obs = self.bridge.observers.get(f)
        if obs is None:
            obs = self.bridge.observers[f] = {}
        key = next(self.bridge.ids)
        obs[key] = [pipe, qos, 0]
        try:
            pipe.add_response(aiocoap.Message(code=Code.CONTENT, observe=0), is_last=False)
            await asyncio.get_running_loop().create_future()  # until the peer loses interest
        finally:
            obs.pop(key, None)

    async def _publish(self, request):
        topic = _topic(request)
        try:
            qos, retain = _query(request)
        except ValueError:
            return aiocoap.Message(code=Code.BAD_REQUEST)
        if not topic or "+" in topic or "#" in topic:
            return aiocoap.Message(code=Code.BAD_REQUEST)
        await self.bridge.publish(topic, request.payload, qos, retain)
        return aiocoap.Message(code=Code.CHANGED)

    render_post = _publish
    render_put = _publish


async def serve(bind, coap_port, mqtt_port):
    loop = asyncio.get_running_loop()
    bridge = Bridge(loop, bind, mqtt_port)
    await asyncio.wait_for(bridge.ready, 30)
    site = resource.Site()
    site.add_resource(["ps"], PubSub(bridge))
    site.add_resource(["r"], Retained(bridge))
    ctx = await aiocoap.Context.create_server_context(site, bind=(bind, coap_port))
    print("coap anchor: coap %s:%d, mqtt %s:%d" % (bind, coap_port, bind, mqtt_port), flush=True)
    try:
        await loop.create_future()
    finally:
        await ctx.shutdown()
        bridge.client.loop_stop()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench.coap_anchor",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--coap-port", type=int, required=True)
    ap.add_argument("--mqtt-port", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(serve(args.bind, args.coap_port, args.mqtt_port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
