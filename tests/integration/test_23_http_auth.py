# Passwords and ACLs on the gateway's HTTP listener (docs/gateway.md
# "Authentication", issue #22 point 4 "auth and ACLs as MQTT"): POST
# /publish with HTTP Basic credentials checked against the same password
# file, with the same back-off per address and the same $SYS counters, and
# the ACL's write permission; with http.auth on, every route (status page,
# its live WebSocket, /status.json, /metrics) needs a valid user. Real
# peers: urllib and http.client for HTTP, paho-mqtt and mosquitto_sub for
# MQTT, headless Chromium for the status page.
import base64
import signal
from http.client import HTTPConnection
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .clients import Client, unique_id
from .conftest import ROOT
from .test_21_auth import PAHO_311_REFUSED, USERS, passwd, raw_login, sys_value, write_files
from .web import close_clients, handshake, headless_chromium, http, wait_log, web_broker

pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("the gateway's web listeners (docs/gateway.md)")]

CHALLENGE = 'Basic realm="edgebroker", charset="UTF-8"'
ALICE = ("alice", USERS["alice"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("http-auth-files"))


def _broker(tmp_path, files, name="web", **extra):
    pw, acl = files
    cfg = {"auth.password_file": str(pw), "auth.acl_file": str(acl), "auth.allow_anonymous": False}
    cfg.update(extra)
    return web_broker(tmp_path, name, **cfg)


@pytest.fixture(scope="module")
def ab(tmp_path_factory, files):
    """[auth] with both files, no anonymous clients; http.auth unset (the
    listener is on loopback: off)."""
    b = _broker(tmp_path_factory.mktemp("http-auth"), files)
    yield b
    b.stop()


def _metric(port, name, auth=None):
    status, _, body = http(port, "GET", "/metrics", auth=auth)
    assert status == 200, body
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name:
                return s.value
    raise AssertionError("no %s in /metrics" % name)


def test_publish_with_the_right_user_is_delivered(ab):
    sub = Client(ab.host, ab.port)
    sub.c.username_pw_set(*ALICE)
    try:
        sub.connect()
        topic = "alice/" + unique_id()
        sub.subscribe(topic, 1)
        status, _, body = http(ab.web_port, "POST", "/publish/%s?qos=1" % topic, b"21.5", auth=ALICE)
        assert status == 200, body
        m = sub.wait_messages(1)[0]
        assert (m.topic, m.payload, m.qos) == (topic, b"21.5", 1)
        # PUT too; a %u pattern (pattern read inbox/%u/#) does not grant a write
        assert http(ab.web_port, "PUT", "/publish/%s" % topic, b"2", auth=ALICE)[0] == 200
        assert http(ab.web_port, "POST", "/publish/inbox/alice/x", b"no", auth=ALICE)[0] == 403
    finally:
        close_clients(sub)


def test_wrong_password_missing_and_malformed_credentials_401(ab):
    failed0 = sys_value(ab, "auth/failed")
    anon0 = sys_value(ab, "auth/anonymous_refused")
    unauth0 = _metric(ab.web_port, "edgebroker_http_unauthorized_total")
    secret = "wrong-" + unique_id()
    for auth, headers in ((("alice", secret), None), (None, None), (("nobody", secret), None),
                          (None, {"Authorization": "Basic !!!notbase64"}),
                          (None, {"Authorization": "Bearer " + secret}),
                          (None, {"Authorization": "Basic " + base64.b64encode(b"x\nFAKE LOG LINE:pw").decode()})):
        status, hdrs, body = http(ab.web_port, "POST", "/publish/alice/x", b"no", auth=auth, headers=headers)
        assert status == 401, (auth, headers, status, body)
        assert hdrs["www-authenticate"] == CHALLENGE
    # a success after two failures: no back-off yet (two are free)
    assert http(ab.web_port, "POST", "/publish/alice/x", b"ok", auth=ALICE)[0] == 200
    # counted as MQTT's refusals: two bad passwords, one anonymous client
    assert sys_value(ab, "auth/failed") == failed0 + 2
    assert sys_value(ab, "auth/anonymous_refused") == anon0 + 1
    assert _metric(ab.web_port, "edgebroker_auth_failed_total") == failed0 + 2
    assert _metric(ab.web_port, "edgebroker_http_unauthorized_total") == unauth0 + 6
    # never a password, nor the header, in the log
    log = ab.log_text()
    assert "refused (401)" in log and "bad user name or password for user alice" in log
    for s in ("FAKE LOG LINE", secret, USERS["alice"], base64.b64encode(("alice:" + secret).encode()).decode()):
        assert s not in log


def test_acl_denial_403_not_delivered(ab):
    sub = Client(ab.host, ab.port)
    sub.c.username_pw_set(*ALICE)
    try:
        sub.connect()
        sub.subscribe("sensors/#", 0)
        denied0 = sys_value(ab, "acl/denied/publish")
        # alice may only read sensors/#
        status, _, body = http(ab.web_port, "POST", "/publish/sensors/t", b"from alice", auth=ALICE)
        assert status == 403 and b"not authorized to publish to sensors/t" in body, (status, body)
        assert sys_value(ab, "acl/denied/publish") == denied0 + 1
        assert _metric(ab.web_port, "edgebroker_acl_denied_publish_total") == denied0 + 1
        # bob may write there: his arrives, and only his
        assert http(ab.web_port, "POST", "/publish/sensors/t", b"from bob", auth=("bob", USERS["bob"]))[0] == 200
        (m,) = sub.wait_messages(1)
        assert m.payload == b"from bob"
        time.sleep(0.3)
        assert [x.payload for x in sub.messages] == [b"from bob"]
    finally:
        close_clients(sub)


def test_anonymous_allowed_gets_the_anonymous_lines(tmp_path, files):
    # allow_anonymous true: no credentials is the ACL's anonymous lines
    # (topic read public/#: no write); bob's credentials still checked
    b = _broker(tmp_path, files, **{"auth.allow_anonymous": True})
    try:
        assert http(b.web_port, "POST", "/publish/public/x", b"a")[0] == 403
        assert http(b.web_port, "POST", "/publish/public/x", b"a", auth=("bob", "bad"))[0] == 401
        assert http(b.web_port, "POST", "/publish/public/x", b"a", auth=("bob", USERS["bob"]))[0] == 200
        # http.auth off on loopback: the status page and /metrics are open
        assert http(b.web_port, "GET", "/")[0] == 200
        assert http(b.web_port, "GET", "/metrics")[0] == 200
    finally:
        b.stop()


def test_back_off_is_per_address_and_shared_with_mqtt(tmp_path, files):
    b = _broker(tmp_path, files)
    try:
        for _ in range(3):
            assert http(b.web_port, "POST", "/publish/alice/x", b"", auth=("alice", "bad"))[0] == 401
        # the third failure started a 1 s back-off for 127.0.0.1: the right
        # password is refused too, unchecked, over HTTP and over MQTT
        status, hdrs, body = http(b.web_port, "POST", "/publish/alice/x", b"", auth=ALICE)
        assert status == 401 and hdrs["www-authenticate"] == CHALLENGE
        assert raw_login(b, "alice", USERS["alice"]) == 5
        assert "failed logins from this address" in b.log_text()
        time.sleep(1.2)
        assert http(b.web_port, "POST", "/publish/alice/x", b"", auth=ALICE)[0] == 200
        assert sys_value(b, "auth/throttled") == 2
        # and the other way: failed MQTT logins slow HTTP's
        for _ in range(3):
            assert raw_login(b, "bob", "bad") == 5
        assert http(b.web_port, "POST", "/publish/alice/x", b"", auth=ALICE)[0] == 401
    finally:
        b.stop()


def test_keep_alive_connection_each_request_checked(ab):
    c = HTTPConnection("127.0.0.1", ab.web_port, timeout=10)
    try:
        good = {"Authorization": "Basic " + base64.b64encode(b"alice:" + USERS["alice"].encode()).decode()}
        for hdrs, want in ((good, 200), ({}, 401), (good, 200), ({"Authorization": "Basic YWxpY2U6eA=="}, 401)):
            c.request("POST", "/publish/alice/k", body=b"v", headers=hdrs)
            r = c.getresponse()
            r.read()
            assert r.status == want, (hdrs, r.status)
    finally:
        c.close()


# ---- http.auth: every route ------------------------------------------------------
@pytest.fixture(scope="module")
def rb(tmp_path_factory, files):
    b = _broker(tmp_path_factory.mktemp("http-auth-all"), files, **{"http.auth": True})
    yield b
    b.stop()


@pytest.mark.parametrize("path", ["/", "/status.json", "/metrics", "/nowhere"])
def test_http_auth_every_route(rb, path):
    status, hdrs, _ = http(rb.web_port, "GET", path)
    assert status == 401 and hdrs["www-authenticate"] == CHALLENGE
    assert http(rb.web_port, "GET", path, auth=("alice", "bad"))[0] == 401
    assert http(rb.web_port, "GET", path, auth=ALICE)[0] == (404 if path == "/nowhere" else 200)
    # any user of the password file: carol has no ACL line at all
    assert http(rb.web_port, "GET", path, auth=("carol", USERS["carol"]))[0] == (404 if path == "/nowhere" else 200)


def test_http_auth_metrics_scrape_with_basic_auth(rb):
    # Prometheus' scrape_config basic_auth sends exactly this header
    assert _metric(rb.web_port, "edgebroker_clients_connected", auth=ALICE) >= 0


def test_http_auth_live_feed_and_mqtt_upgrade(rb):
    s, status, head = handshake(rb.web_port, "/live", protocol=None)
    s.close()
    assert status == 401 and CHALLENGE.lower() in head.lower(), head
    token = base64.b64encode(b"alice:" + USERS["alice"].encode()).decode()
    s, status, head = handshake(rb.web_port, "/live", protocol=None, extra=["Authorization: Basic " + token])
    s.close()
    assert status == 101, head
    # MQTT over WebSockets is not under http.auth: its CONNECT logs in
    ws = Client(rb.host, rb.web_port, ws_path="/mqtt")
    ws.c.username_pw_set(*ALICE)
    ws.connect()
    close_clients(ws)
    bad = Client(rb.host, rb.web_port, ws_path="/mqtt")
    try:
        bad.connect(expect=PAHO_311_REFUSED)  # no user name: allow_anonymous false
    finally:
        bad.stop()


@pytest.mark.timeout(120)
def test_http_auth_status_page_in_headless_chromium(rb):
    # the browser asks once (here: the credentials in the URL) and sends
    # them again for the page's live WebSocket
    drv = headless_chromium()
    try:
        drv.get("http://alice:%s@127.0.0.1:%d/" % (USERS["alice"], rb.web_port))
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(drv, 20).until(lambda d: d.find_element("id", "state").text == "live")
    finally:
        drv.quit()


def test_http_auth_needs_a_password_file(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[http]\nenabled = true\nport = 0\nauth = true\n")
    p = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(cfg)], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "http.auth: needs auth.password_file" in p.stderr


def test_http_auth_default_on_off_loopback():
    from gateway.httpauth import required

    def cfg(bind, pw, auth=None):
        return {"http": {"bind": bind, "auth": auth}, "auth": {"password_file": pw}}

    assert required(cfg("0.0.0.0", "/etc/edgebroker/passwd"))
    assert not required(cfg("127.0.0.1", "/etc/edgebroker/passwd"))
    assert not required(cfg("0.0.0.0", None))  # nothing to check against: a warning at start
    assert required(cfg("127.0.0.1", "/etc/edgebroker/passwd", True))
    assert not required(cfg("0.0.0.0", "/etc/edgebroker/passwd", False))


def test_sighup_reload_applies_to_http(tmp_path, files):
    # a copy of the files: the module's are shared
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    pw.write_bytes(files[0].read_bytes())
    acl.write_text("user alice\ntopic write a/#\n")
    b = _broker(tmp_path, (pw, acl))
    try:
        assert http(b.web_port, "POST", "/publish/a/1", b"", auth=ALICE)[0] == 200
        assert http(b.web_port, "POST", "/publish/b/1", b"", auth=ALICE)[0] == 403
        assert http(b.web_port, "POST", "/publish/b/1", b"", auth=("dave", "dave-pw"))[0] == 401
        passwd(pw, "dave", "dave-pw")
        acl.write_text("user alice\ntopic write b/#\nuser dave\ntopic write b/#\n")
        b.proc.send_signal(signal.SIGHUP)
        wait_log(b, "auth: reloaded")
        assert http(b.web_port, "POST", "/publish/a/1", b"", auth=ALICE)[0] == 403
        assert http(b.web_port, "POST", "/publish/b/1", b"", auth=ALICE)[0] == 200
        assert http(b.web_port, "POST", "/publish/b/1", b"", auth=("dave", "dave-pw"))[0] == 200
    finally:
        b.stop()
