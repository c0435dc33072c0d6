# Keeps the CoAP benchmark harness (python -m tools.bench.coap) working: its
# RFC 7252 codec against aiocoap's (no sockets), then every scenario for a
# fraction of a second through the real entry point against the aiocoap
# anchor (and libcoap, and edgebroker once its CoAP endpoint exists).
import json
import os
import shutil
import subprocess
import sys

import pytest

from tools.bench import coapgen
from tools.bench import coapwire as cw

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_ENDPOINT = os.path.exists(os.path.join(REPO_ROOT, "edge", "coap", "endpoint.py"))


# aiocoap deprecates setting mtype, mid and token by hand, which this needs
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_codec_agrees_with_aiocoap():
    aiocoap = pytest.importorskip("aiocoap")
    # ours -> aiocoap: options needing 1- and 2-byte extended deltas/lengths
    long_seg = "x" * 300
    data = cw.encode(cw.CON, cw.POST, 0x1234, b"\x01\x02\x03\x04",
                     cw.uri_options("/ps/a/" + long_seg, ["qos=1", "retain=1"]) + [(cw.OBSERVE, cw.uint(70000))],
                     b"payload")
    m = aiocoap.Message.decode(data)
    assert (m.mtype, m.code, m.mid, m.token) == (aiocoap.CON, aiocoap.POST, 0x1234, b"\x01\x02\x03\x04")
    assert m.opt.uri_path == ("ps", "a", long_seg) and m.opt.uri_query == ("qos=1", "retain=1")
    assert m.opt.observe == 70000 and m.payload == b"payload"
    assert cw.payload_of(data) == b"payload"
    # aiocoap -> ours
    m = aiocoap.Message(mtype=aiocoap.NON, code=aiocoap.CONTENT, mid=7, token=b"tk",
                        observe=5, content_format=0, payload=b"\xffhello")
    data = m.encode()
    t, code, mid, token, opts, payload = cw.decode(data)
    assert (t, code, mid, token, payload) == (cw.NON, cw.CONTENT, 7, b"tk", b"\xffhello")
    assert cw.to_int(cw.option(opts, cw.OBSERVE)) == 5 and cw.option(opts, cw.CONTENT_FORMAT) == b""
    assert cw.payload_of(data) == b"\xffhello"
    # malformed input is refused, never misread
    for bad in (b"\x40\x01\x00", b"\x80\x01\x00\x00", b"\x49\x01\x00\x00", b"\x40\x01\x00\x00\xff",
                b"\x40\x01\x00\x00\xf1", b"\x40\x00\x00\x00\xff\x01"):
        with pytest.raises(ValueError):
            cw.decode(bad)


def test_template_patches_mid_token_and_sequence():
    tpl = coapgen.Template(cw.POST, "/ps/bench/coap/3", ["qos=0"], coapgen.payload(3, 0))
    data = tpl.make(0xBEEF, 0x01020304, 77)
    t, code, mid, token, opts, payload = cw.decode(data)
    assert (t, code, mid, token) == (cw.CON, cw.POST, 0xBEEF, b"\x01\x02\x03\x04")
    assert coapgen.parse_payload(payload) == (3, 77)
    assert [v for n, v in opts if n == cw.URI_PATH] == [b"ps", b"bench", b"coap", b"3"]


def _bench(tmp_path, servers, timeout=100):
    out = tmp_path / "bench"
    p = subprocess.run(
        [sys.executable, "-m", "tools.bench.coap", "--quick", "--duration", "0.3", "--servers"]
        + servers + ["--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "coap.json").read_text())
    assert set(doc) >= {"meta", "scenarios", "servers", "skipped", "runs", "summary"}
    assert doc["meta"]["quick"] is True and doc["meta"]["runs"] == 1
    return p.stdout, doc


def _rows(doc, server):
    return {r["scenario"]: r for r in doc["runs"] if r["server"] == server}


def _check_rows(rows, post_refusals_ok=False):
    post, get, obs = rows["post_mqtt"], rows["get_retained"], rows["observe_fanout"]
    for r in rows.values():
        assert r["error"] is None, r
        assert r["loadgen_rx_drops"] in (0, None), r
    # every publish answered 2.04 reached the MQTT subscriber, once
    assert post["delivered"] > 0 and post["msgs_per_s"] > 0, post
    assert (post["lost"], post["duplicated"], post["foreign"], post["timeouts"]) == (0, 0, 0, 0), post
    if not post_refusals_ok:
        assert post["bad_codes"] == {} and post["delivered"] == post["requests"], post
    # every GET answered 2.05 with the retained payload
    assert get["requests"] > 0 and get["requests_per_s"] > 0, get
    assert (get["bad_codes"], get["corrupt"], get["timeouts"]) == ({}, 0, 0), get
    # every published message reached the 50 observers
    assert obs["observers"] == 50 and obs["published"] > 0, obs
    assert obs["received"] == obs["expected"] == 50 * obs["published"], obs
    assert (obs["lost"], obs["duplicated"]) == (0, 0), obs
    assert obs["notifications_per_s"] > 0, obs


@pytest.mark.timeout(120)
def test_quick_against_anchor(tmp_path):
    if not os.access("/usr/sbin/mosquitto", os.X_OK):
        pytest.skip("mosquitto not installed")
    pytest.importorskip("aiocoap")
    stdout, doc = _bench(tmp_path, ["anchor"])
    assert list(doc["servers"]) == ["anchor"]
    _check_rows(_rows(doc, "anchor"))
    assert "Integrity: no loss" in stdout, stdout
    med = doc["summary"]["medians"]["get_retained"]["requests_per_s"]["anchor"]
    assert med["n"] == 1 and med["median"] > 0


@pytest.mark.timeout(60)
def test_quick_get_against_libcoap(tmp_path):
    if shutil.which("coap-server-notls") is None:
        pytest.skip("coap-server-notls not installed (libcoap3-bin)")
    out = tmp_path / "bench"
    p = subprocess.run(
        [sys.executable, "-m", "tools.bench.coap", "--quick", "--duration", "0.3", "--servers", "libcoap",
         "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=50)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "coap.json").read_text())
    [row] = doc["runs"]  # libcoap runs the GET scenario only
    assert row["scenario"] == "get_retained" and row["error"] is None, row
    assert row["requests"] > 0 and (row["bad_codes"], row["corrupt"], row["timeouts"]) == ({}, 0, 0), row


@pytest.mark.timeout(150)
@pytest.mark.skipif(not HAVE_ENDPOINT, reason="edge/coap/endpoint.py does not exist yet")
def test_quick_against_edgebroker_and_anchor(tmp_path):
    if not os.access("/usr/sbin/mosquitto", os.X_OK):
        pytest.skip("mosquitto not installed")
    stdout, doc = _bench(tmp_path, ["edgebroker", "anchor"], timeout=130)
    assert list(doc["servers"]) == ["edgebroker", "anchor"]
    # edgebroker's reply cache (max_exchanges entries for exchange_lifetime,
    # docs/coap.md "Deduplication") refuses publishes with 5.03 once full:
    # counted as such, never as deliveries nor losses
    _check_rows(_rows(doc, "edgebroker"), post_refusals_ok=True)
    _check_rows(_rows(doc, "anchor"))
    ratio = doc["summary"]["ratios"]["get_retained"]["requests_per_s"]["edgebroker/anchor"]
    assert ratio["n"] == 1 and ratio["median"] > 0
