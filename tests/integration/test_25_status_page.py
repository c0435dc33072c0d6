# The status page (docs/gateway.md "Status page"): its figures as JSON, pushed
# live over a WebSocket, and the page itself in Debian's headless Chromium
# (selenium with chromium-driver): loaded once, then mosquitto_pub publishes
# and the numbers change with no reload.
import json
import os
import shutil
import struct
import time

import pytest

from .clients import Client, mosquitto_pub, unique_id
from .web import CLOSE, TEXT, close_clients, frame, handshake, http, read_frame, web_broker

# the gateway (CPython) itself, whatever EDGE_TEST_BROKER says: skipped in
# reference mode, which checks the tests against mosquitto
pytestmark = [pytest.mark.timeout(90), pytest.mark.edge_only("the gateway's web listeners (docs/gateway.md)")]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    b = web_broker(tmp_path_factory.mktemp("status"))
    yield b
    b.stop()


def test_status_json_lists_clients(sb):
    tcp = Client(sb.host, sb.port, client_id=unique_id("st-tcp"))
    ws = Client(sb.host, sb.web_port, client_id=unique_id("st-ws"), ws_path="/mqtt", v5=True)
    try:
        tcp.connect()
        ws.connect()
        tcp.publish("st/" + unique_id(), b"r", qos=1, retain=True)
        status, headers, body = http(sb.web_port, "GET", "/status.json")
        assert status == 200 and headers["content-type"] == "application/json"
        s = json.loads(body)
        by_id = {c["id"]: c for c in s["clients"]}
        assert by_id[tcp.client_id]["transport"] == "tcp" and by_id[tcp.client_id]["protocol"] == "3.1.1"
        assert by_id[ws.client_id]["transport"] == "ws" and by_id[ws.client_id]["protocol"] == "5.0"
        c = by_id[tcp.client_id]
        assert c["address"].startswith("127.0.0.1:") and abs(c["since"] - time.time()) < 60
        assert c["inflight"] == 0 and c["queued"] == 0
        assert s["retained"] >= 1 and s["sys"]["clients/connected"] >= 2
        assert s["memory"]["rss"] > 0
    finally:
        close_clients(tcp, ws)


def _snapshot(s):
    while True:
        fin, op, data = read_frame(s)
        if op == TEXT:
            return json.loads(data)
        assert op != CLOSE, data


def test_live_feed_counts_topics_while_open(sb):
    subs_before = json.loads(http(sb.web_port, "GET", "/status.json")[2])["sys"]["subscriptions/count"]
    s, status, _ = handshake(sb.web_port, path="/live", protocol=None)
    try:
        assert status == 101
        first = _snapshot(s)
        assert first["topics_watched"] is True
        topic = "live/" + unique_id()
        for i in range(5):
            mosquitto_pub(sb.host, sb.port, topic, "v%d" % i)
        deadline = time.monotonic() + 10
        while True:  # a snapshot a second
            snap = _snapshot(s)
            counts = {t["topic"]: t["count"] for t in snap["topics"]}
            if counts.get(topic) == 5:
                break
            assert time.monotonic() < deadline, snap["topics"]
        s.sendall(frame(CLOSE, struct.pack("!H", 1000)))
        while read_frame(s)[1] != CLOSE:
            pass
    finally:
        s.close()
    deadline = time.monotonic() + 10
    while True:  # the page gone, so is its "#" subscription
        after = json.loads(http(sb.web_port, "GET", "/status.json")[2])
        if not after["topics_watched"] and after["sys"]["subscriptions/count"] == subs_before:
            break
        assert time.monotonic() < deadline, after["sys"]
        time.sleep(0.05)  # polling


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack("!II", data[16:24])


@pytest.mark.timeout(120)
def test_page_in_headless_chromium(sb, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed here")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--window-size=1200,1400"):
        opts.add_argument(a)
    # the driver given by path: selenium never looks for (or downloads) one
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=os.devnull), options=opts)
    sub = Client(sb.host, sb.port, client_id=unique_id("page-sub"))
    try:
        drv.get("http://127.0.0.1:%d/" % sb.web_port)
        wait = WebDriverWait(drv, 20)
        text = lambda i: drv.find_element("id", i).text  # noqa: E731
        wait.until(lambda d: text("state") == "live")
        n0 = int(text("messages-received"))
        sub.connect()
        sub.subscribe("page/#", 0)
        topic = "page/" + unique_id()
        for i in range(10):
            mosquitto_pub(sb.host, sb.port, topic, "x%d" % i)
        # the numbers change on the page, no reload
        wait.until(lambda d: int(text("messages-received")) >= n0 + 10)
        wait.until(lambda d: sub.client_id in text("clients"))
        wait.until(lambda d: topic in text("topics"))
        assert drv.execute_script("return performance.getEntriesByType('navigation').length") == 1
        assert int(text("clients-connected")) >= 1
        assert text("store").endswith("B") and text("uplink") == "none"
        shot = drv.get_screenshot_as_png()
        (tmp_path / "status.png").write_bytes(shot)
        w, h = _png_size(shot)
        assert w >= 800 and h >= 600 and len(shot) > 20000, (w, h, len(shot))
        # the chart is drawn: the canvas holds pixels of the rate's line
        # colour (a line once the page has two points: a snapshot a second)
        wait.until(lambda d: d.execute_script(
            "const c=document.getElementById('chart'), d=c.getContext('2d')"
            ".getImageData(0,0,c.width,c.height).data; let n=0;"
            "for (let i=0;i<d.length;i+=4) if (d[i]==34&&d[i+1]==119&&d[i+2]==204) n++; return n") > 20)
    finally:
        close_clients(sub)
        drv.quit()
