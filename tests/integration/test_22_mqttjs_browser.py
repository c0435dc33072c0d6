# MQTT over WebSockets from a browser (docs/gateway.md, issue #22 point 1):
# MQTT.js, the JavaScript client dashboards use, in Debian's headless
# Chromium (selenium with chromium-driver), against the gateway's
# ws://127.0.0.1:PORT/mqtt. MQTT.js is the bundle vendored in
# tests/integration/mqttjs/ (its README: version, licence, how it was
# fetched): the page is a file:// page beside it, nothing is fetched at run
# time. Both ways, 3.1.1 and 5.0, with paho-mqtt and mosquitto_pub as the
# other end.
import json
import pathlib
import time

import pytest

from .clients import Client, mosquitto_pub, unique_id
from .web import close_clients, headless_chromium, web_broker

pytestmark = [pytest.mark.timeout(120), pytest.mark.edge_only("the gateway's web listeners (docs/gateway.md)")]

PAGE = pathlib.Path(__file__).parent / "mqttjs" / "page.html"


@pytest.fixture(scope="module")
def jb(tmp_path_factory):
    b = web_broker(tmp_path_factory.mktemp("mqttjs"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser():
    drv = headless_chromium()
    yield drv
    drv.quit()


def _wait(drv, script, what, timeout=20, errors_ok=False):
    deadline = time.monotonic() + timeout
    while True:
        v = drv.execute_script(script)
        if v:
            return v
        state = drv.execute_script("return window.state")
        assert errors_ok or not str(state).startswith("error"), state
        assert time.monotonic() < deadline, "%s: not after %ss (page state %r, log %r)" % (
            what, timeout, state, drv.execute_script("return document.getElementById('log').textContent"))
        time.sleep(0.05)


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
def test_mqttjs_in_headless_chromium(jb, browser, version):
    drv = browser
    drv.get(PAGE.as_uri())
    assert drv.execute_script("return typeof mqtt.connect") == "function"  # the vendored bundle loaded
    base = "js/%s" % unique_id()
    cid = unique_id("mqttjs")
    drv.execute_script("start(arguments[0], arguments[1], arguments[2], arguments[3])",
                       "ws://127.0.0.1:%d/mqtt" % jb.web_port, version, cid, base + "/in/#")
    _wait(drv, "return window.state == 'subscribed'", "MQTT.js connected and subscribed")
    assert drv.execute_script("return window.granted") == [1]
    # the broker sees it as one of its clients, with the protocol it chose
    status = json.loads(_http_json(jb))
    me = [c for c in status["clients"] if c["id"] == cid]
    assert me and me[0]["transport"] == "ws" and me[0]["protocol"] == ("5.0" if version == 5 else "3.1.1"), me

    sub = Client(jb.host, jb.port, v5=version == 5)
    try:
        # in: mosquitto_pub over TCP (QoS 1), and paho with a 5.0 user property
        mosquitto_pub(jb.host, jb.port, base + "/in/a", "from mosquitto_pub", qos=1)
        props = None
        if version == 5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("k", "v")]
        pub = Client(jb.host, jb.port, v5=version == 5)
        pub.connect()
        pub.publish(base + "/in/b", b"from paho", qos=1, properties=props)
        close_clients(pub)
        got = _wait(drv, "return window.got.length >= 2 && window.got", "two messages in the browser")
        assert [(m["topic"], m["payload"], m["qos"]) for m in got] == [
            (base + "/in/a", "from mosquitto_pub", 1), (base + "/in/b", "from paho", 1)]
        if version == 5:  # MQTT.js decoded the 5.0 property the broker passed on
            assert got[1]["props"]["userProperties"] == {"k": "v"}, got[1]

        # out: MQTT.js publishes (QoS 1, acknowledged), paho over TCP gets it
        sub.connect()
        sub.subscribe(base + "/out", 1)
        drv.execute_script("pub(arguments[0], arguments[1], 1, arguments[2])", base + "/out", "from the browser",
                           {"userProperties": {"page": "1"}} if version == 5 else None)
        _wait(drv, "return window.acks.length == 1", "the browser's PUBACK")
        (m,) = sub.wait_messages(1)
        assert (m.topic, m.payload, m.qos) == (base + "/out", b"from the browser", 1)
        if version == 5:
            assert m.props.UserProperty == [("page", "1")]
    finally:
        close_clients(sub)
        drv.execute_script("stop()")


def _http_json(b):
    from .web import http

    status, _, body = http(b.web_port, "GET", "/status.json")
    assert status == 200
    return body.decode()


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
def test_mqttjs_logs_in_and_is_held_to_the_acl(tmp_path, browser, version):
    # [auth] as over TCP (docs/security.md): a wrong password refused at
    # CONNECT, the right one let in, a denied topic not delivered
    from .test_21_auth import USERS, write_files

    pw, acl = write_files(tmp_path)
    b = web_broker(tmp_path, **{"auth.password_file": str(pw), "auth.acl_file": str(acl),
                                "auth.allow_anonymous": False})
    drv = browser
    url = "ws://127.0.0.1:%d/mqtt" % b.web_port
    bob = Client(b.host, b.port, v5=version == 5)
    bob.c.username_pw_set("bob", USERS["bob"])
    try:
        drv.get(PAGE.as_uri())
        drv.execute_script("start(arguments[0], arguments[1], arguments[2], arguments[3], arguments[4])",
                           url, version, unique_id("mqttjs"), "sensors/#", {"username": "alice", "password": "nope"})
        state = _wait(drv, "return window.state.startsWith('error') && window.state", "a refused CONNECT",
                      errors_ok=True)
        # 3.1.1: return code 5; 5.0: reason code 0x86 (MQTT.js's messages)
        assert ("Not authorized" if version == 4 else "Bad User Name or Password") in state, state
        drv.get(PAGE.as_uri())
        drv.execute_script("start(arguments[0], arguments[1], arguments[2], arguments[3], arguments[4])",
                           url, version, unique_id("mqttjs"), "sensors/#",
                           {"username": "alice", "password": USERS["alice"]})
        _wait(drv, "return window.state == 'subscribed'", "MQTT.js logged in and subscribed")
        bob.connect()
        bob.publish("sensors/secret/x", b"no", qos=1)  # alice: deny sensors/secret/#
        bob.publish("sensors/t", b"yes", qos=1)
        got = _wait(drv, "return window.got.length >= 1 && window.got", "the message alice may read")
        time.sleep(0.3)
        got = drv.execute_script("return window.got")
        assert [(m["topic"], m["payload"]) for m in got] == [("sensors/t", "yes")]
    finally:
        close_clients(bob)
        drv.execute_script("stop()")
        b.stop()


def test_the_vendored_bundle_is_the_one_its_readme_names():
    # mqttjs/README.md records the bundle's sha256 as fetched from the npm
    # registry (`make vendor-mqttjs`): a bundle edited or refetched without
    # its README (version, hash, licences) updated fails here
    import hashlib
    import re

    readme = (PAGE.parent / "README.md").read_text()
    want = re.search(r"the bundle's\s+sha256\s+`([0-9a-f]{64})`", readme)
    assert want, "mqttjs/README.md names no sha256 for the bundle"
    got = hashlib.sha256((PAGE.parent / "mqtt.min.js").read_bytes()).hexdigest()
    assert got == want.group(1)
    version = re.search(r"\*\*(\d+\.\d+\.\d+)\*\*", readme).group(1)
    assert 'version:"%s"' % version in (PAGE.parent / "mqtt.min.js").read_text(), version
    for lic in ("LICENSE.md", "LICENSE-jspm-core", "LICENSE-ieee754"):
        assert (PAGE.parent / lic).stat().st_size > 0, lic
