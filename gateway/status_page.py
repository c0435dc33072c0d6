# The status page (GET / on the HTTP port; docs/gateway.md "Status page"): one
# self-contained HTML document, no script or style fetched from anywhere. It
# opens a WebSocket to /live and redraws from each snapshot
# (gateway/status.py) without reloading; the chart is drawn on a canvas.
# Held in a module, not a data file: a wheel carries it with the code.

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgebroker status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.05em;margin:1.2em 0 .4em}
#state{font-size:.85em;padding:.1em .5em;border-radius:.6em;background:#c33;color:#fff}
#state.live{background:#2a2}
.cards{display:flex;flex-wrap:wrap;gap:.6em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:9em}
.card b{display:block;font-size:1.4em}.card span{color:#666;font-size:.85em}
table{border-collapse:collapse;background:#fff;font-size:.9em}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}th{background:#eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}
canvas{background:#fff;border:1px solid #ddd;border-radius:6px}
</style></head><body>
<h1>edgebroker <span id="version"></span> <span id="state">connecting</span></h1>
<div>up <span id="uptime">-</span></div>
<div class="cards">
<div class="card"><b id="clients-connected">-</b><span>clients connected</span></div>
<div class="card"><b id="rate-in">-</b><span>messages in /s</span></div>
<div class="card"><b id="rate-out">-</b><span>messages out /s</span></div>
<div class="card"><b id="messages-received">-</b><span>messages received</span></div>
<div class="card"><b id="messages-sent">-</b><span>messages sent</span></div>
<div class="card"><b id="dropped">-</b><span>dropped</span></div>
<div class="card"><b id="retained">-</b><span>retained</span></div>
<div class="card"><b id="subscriptions">-</b><span>subscriptions</span></div>
<div class="card"><b id="store">-</b><span>store (live / on disk), <i id="syncs">-</i> syncs</span></div>
<div class="card"><b id="uplink">-</b><span>uplink, backlog <i id="backlog">-</i></span></div>
<div class="card"><b id="coap">-</b><span>CoAP observers, <i id="coap-requests">-</i> requests</span></div>
<div class="card"><b id="memory">-</b><span>memory (RSS), budget <i id="budget">-</i></span></div>
</div>
<h2>Messages received per second, last hour</h2>
<canvas id="chart" width="720" height="160"></canvas>
<h2>Clients (<span id="clients-total">0</span>)</h2>
<table id="clients"><thead><tr><th>client id</th><th>address</th><th>via</th><th>protocol</th>
<th>since</th><th>inflight</th><th>queued</th></tr></thead><tbody></tbody></table>
<h2>Topics <span id="topics-note"></span></h2>
<table id="topics"><thead><tr><th>topic</th><th>messages</th><th>per second</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const $ = id => document.getElementById(id);
let last = null;
function fmtBytes(n) {
  if (n === undefined || n === null || n < 0) return "-";
  const u = ["B", "KiB", "MiB", "GiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function cell(tr, text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; tr.appendChild(td);
}
function rows(tbody, items, fill) {
  tbody.replaceChildren();
  for (const it of items) { const tr = document.createElement("tr"); fill(tr, it); tbody.appendChild(tr); }
}
function chart(points) {
  const c = $("chart"), g = c.getContext("2d"), w = c.width, h = c.height, pad = 30;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#ccc"; g.beginPath(); g.moveTo(pad, 5); g.lineTo(pad, h - 15); g.lineTo(w - 5, h - 15); g.stroke();
  const now = Date.now() / 1000, max = Math.max(1, ...points.map(p => p[1]));
  g.fillStyle = "#666"; g.font = "10px sans-serif";
  g.fillText(max.toFixed(0), 2, 12); g.fillText("0", 2, h - 15); g.fillText("-60 min", pad, h - 3);
  g.fillText("now", w - 25, h - 3);
  if (!points.length) return;
  g.strokeStyle = "#27c"; g.lineWidth = 2; g.beginPath();
  points.forEach((p, i) => {
    const x = pad + (w - pad - 5) * (1 - Math.min(3600, now - p[0]) / 3600);
    const y = (h - 15) - (h - 20) * p[1] / max;
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
}
// The chart: the broker's 10 s points of the last hour, then this page's own
// points, one a snapshot, since it opened
const recent = [];
function show(s) {
  const v = s.sys, dt = last ? s.time - last.time : 0;
  const rate = k => dt > 0 ? ((v[k] - last.sys[k]) / dt).toFixed(1) : "-";
  if (dt > 0) {
    recent.push([s.time, (v["messages/received"] - last.sys["messages/received"]) / dt]);
    while (recent.length && recent[0][0] < s.time - 3600) recent.shift();
  }
  $("version").textContent = (v.version || "").replace("edgebroker ", "");
  $("uptime").textContent = v.uptime;
  $("clients-connected").textContent = v["clients/connected"];
  $("rate-in").textContent = rate("messages/received");
  $("rate-out").textContent = rate("messages/sent");
  $("messages-received").textContent = v["messages/received"];
  $("messages-sent").textContent = v["messages/sent"];
  $("dropped").textContent = v["publish/messages/dropped"];
  $("retained").textContent = s.retained;
  $("subscriptions").textContent = v["subscriptions/count"];
  $("store").textContent = "store/bytes" in v ? fmtBytes(v["store/bytes"]) + " / " + fmtBytes(v["store/disk bytes"]) : "off";
  $("syncs").textContent = "store/syncs" in v ? v["store/syncs"] : "-";
  $("uplink").textContent = v["uplink/state"] || "none";
  $("backlog").textContent = "uplink/backlog" in v ? v["uplink/backlog"] + " (" + fmtBytes(v["uplink/backlog/bytes"]) + ")" : "-";
  $("coap").textContent = "coap/observers" in v ? v["coap/observers"] : "off";
  $("coap-requests").textContent = "coap/requests" in v ? v["coap/requests"] : "-";
  $("memory").textContent = fmtBytes(s.memory.rss);
  $("budget").textContent = fmtBytes(s.memory.budget_used) + " of " + fmtBytes(s.memory.budget);
  $("clients-total").textContent = s.clients_total;
  rows($("clients").tBodies[0], s.clients, (tr, c) => {
    cell(tr, c.id); cell(tr, c.address); cell(tr, c.transport); cell(tr, c.protocol);
    cell(tr, c.since ? new Date(c.since * 1000).toLocaleString() : "-");
    cell(tr, c.inflight, "n"); cell(tr, c.queued, "n");
  });
  $("topics-note").textContent = s.topics_other ? "(" + s.topics_other + " messages on more topics)" : "";
  rows($("topics").tBodies[0], s.topics, (tr, t) => {
    cell(tr, t.topic); cell(tr, t.count, "n"); cell(tr, t.rate.toFixed(1), "n");
  });
  const since = recent.length ? recent[0][0] : Infinity;
  chart(s.history.filter(p => p[0] < since).concat(recent));
  last = s;
}
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
  ws.onopen = () => { $("state").textContent = "live"; $("state").className = "live"; };
  ws.onmessage = e => show(JSON.parse(e.data));
  ws.onclose = () => { $("state").textContent = "disconnected"; $("state").className = ""; setTimeout(connect, 2000); };
}
connect();
</script></body></html>
"""
