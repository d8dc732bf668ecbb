// The agent's web console: the same API as any system, with the token held
// in this tab's sessionStorage only. Text from the hub is always set with
// textContent, never parsed as HTML.
"use strict";

const STATES = {
  pending: "待获取 pending",
  fetched: "已获取 fetched",
  acknowledged: "已确认 acknowledged",
  exception: "异常反馈 exception",
};
const KINDS = {
  notification: "通报", "early-warning": "预警", lead: "线索", "case-update": "案件",
  statistics: "统计", "meeting-agenda": "会议议程", minutes: "会议纪要", "minutes-consent": "纪要意见",
  escalation: "上报", "liaison-change": "联络员变更", "exception-feedback": "异常反馈", receipt: "回执",
  "meeting-proposal": "会议提议", "joint-notice": "联合通报", "co-signature": "会签",
};

const $ = (id) => document.getElementById(id);
let party = null;
let inbox = [];
let selected = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function kindLabel(k) {
  return KINDS[k] ? `${KINDS[k]} ${k}` : k;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem("tongbao-token") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({ error: r.statusText, code: "http" }));
  if (r.status === 401) {
    sessionStorage.removeItem("tongbao-token");
    showLogin();
  }
  if (!r.ok) throw new Error(`${r.status} ${data.code}: ${data.error}`);
  return data;
}

function showLogin() {
  $("login").hidden = false;
  $("tabs").hidden = true;
}

function show(view) {
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== "view-" + view));
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  showError("");
  const load = { inbox: loadInbox, audit: loadAudit, units: loadUnits, compose: async () => {} }[view];
  if (load) load().catch((e) => showError(e.message));
}

async function loadInbox() {
  const page = await api("GET", "/v1/inbox?after=0&limit=1000");
  inbox = page.entries;
  renderInbox();
}

function renderInbox() {
  const kind = $("filter-kind").value.trim();
  const sender = $("filter-sender").value.trim();
  const body = $("inbox-table").tBodies[0];
  body.replaceChildren();
  for (const e of inbox.slice().reverse()) {
    if ((kind && e.kind !== kind) || (sender && e.sender !== sender)) continue;
    const row = el("tr", null, "entry");
    row.id = `entry-${e.channel}-${e.seq}`;
    row.append(el("td", e.cursor), el("td", e.sender), el("td", kindLabel(e.kind)), el("td", e.subject), el("td", e.hub_time), el("td", `${e.channel}:${e.seq}`));
    row.addEventListener("click", () => openMessage(e));
    body.append(row);
  }
}

function openMessage(e) {
  selected = e;
  $("message").hidden = false;
  $("message-subject").textContent = e.subject;
  $("message-meta").textContent = `${e.channel}:${e.seq} · ${kindLabel(e.kind)} · ${e.sender} → ${e.recipients.join(", ")} · ${e.hub_time}`;
  $("message-body").textContent = e.body !== undefined ? e.body : `(base64) ${e.body_base64}`;
  $("ack-button").hidden = !party || party.kind !== "unit" || e.kind === "receipt";
}

async function acknowledge() {
  if (!selected) return;
  const r = await api("POST", "/v1/acknowledge", { entries: [{ channel: selected.channel, seq: selected.seq }] });
  showError("");
  $("message-meta").textContent += r.newly_acknowledged ? " · 已确认 acknowledged" : " · 此前已确认 acknowledged earlier";
}

async function loadAudit() {
  const overdue = $("audit-overdue").checked ? "&overdue=true" : "";
  const r = await api("GET", "/v1/audit/deliveries?limit=200" + overdue);
  const body = $("audit-table").tBodies[0];
  body.replaceChildren();
  for (const e of r.entries.slice().reverse()) {
    const row = el("tr");
    row.id = `audit-${e.channel}-${e.seq}`;
    const states = el("td");
    for (const d of e.recipients) {
      const s = el("span", `${d.recipient}: ${STATES[d.state] || d.state}${d.overdue ? " · 逾期 overdue" : ""}`, `state state-${d.state}${d.overdue ? " overdue" : ""}`);
      s.dataset.recipient = d.recipient;
      s.dataset.state = d.state;
      if (d.answer_check) s.title = d.answer ? `回执 answer ${d.answer.channel}:${d.answer.seq} (${d.answer_check})` : d.answer_check;
      states.append(s);
    }
    row.append(el("td", `${e.channel}:${e.seq}`), el("td", e.sender), el("td", kindLabel(e.kind)), el("td", e.hub_time), el("td", e.deadline || "—"), states);
    body.append(row);
  }
}

async function loadUnits() {
  const r = await api("GET", "/v1/audit/units");
  const body = $("units-table").tBodies[0];
  body.replaceChildren();
  const longest = Math.max(1, ...r.units.map((u) => u.ack_p50_seconds));
  for (const u of r.units) {
    const chart = el("td");
    const bar = el("span", null, "bar");
    bar.style.width = `${Math.round((u.ack_p50_seconds / longest) * 12)}em`;
    chart.append(bar, document.createTextNode(`${u.ack_p50_seconds.toFixed(1)} s`));
    const row = el("tr");
    row.append(el("td", u.unit), el("td", u.sent), el("td", u.received), el("td", u.acknowledged), el("td", u.exceptions), el("td", u.overdue), chart);
    body.append(row);
  }
}

async function send(ev) {
  ev.preventDefault();
  const units = $("compose-to").value.split(",").map((s) => s.trim()).filter(Boolean);
  const r = await api("POST", "/v1/messages", {
    kind: $("compose-kind").value,
    audience: { units },
    subject: $("compose-subject").value,
    body: $("compose-body").value,
  });
  $("compose-result").textContent = `已发送 Sent: ${r.channel}:${r.seq} → ${r.recipients.join(", ")}`;
}

async function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("tongbao-token", fragment.get("token"));
  }
  // The token never stays in the address bar or the history.
  if (location.hash) history.replaceState(null, "", location.pathname);
  if (!sessionStorage.getItem("tongbao-token")) return showLogin();
  party = await api("GET", "/v1/party");
  $("login").hidden = true;
  $("party").textContent = `${party.kind === "office" ? "办公室 office" : "成员单位 unit"}: ${party.id}`;
  $("tabs").hidden = false;
  document.querySelectorAll("#tabs button").forEach((b) => {
    b.hidden = Boolean(b.dataset.for) && b.dataset.for !== party.kind;
  });
  show(fragment.get("view") || (party.kind === "office" ? "audit" : "inbox"));
}

document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));
$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("tongbao-token", $("token").value.trim());
  start().catch((e) => showError(e.message));
});
$("filter-kind").addEventListener("input", renderInbox);
$("filter-sender").addEventListener("input", renderInbox);
$("audit-overdue").addEventListener("change", () => loadAudit().catch((e) => showError(e.message)));
$("ack-button").addEventListener("click", () => acknowledge().catch((e) => showError(e.message)));
$("compose-form").addEventListener("submit", (ev) => send(ev).catch((e) => showError(e.message)));
start().catch((e) => showError(e.message));
