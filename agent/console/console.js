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
const STAGES = {
  "agenda-open": "议程征集中 agenda open",
  "agenda-settled": "议程已定 agenda settled",
  "minutes-drafted": "纪要会签中 minutes drafted",
  "minutes-issued": "纪要已印发 minutes issued",
};
const ANSWERS = {
  "not-answered": "未答复 not answered",
  consented: "同意 consented",
  objected: "反对 objected",
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
  const load = {
    inbox: loadInbox, audit: loadAudit, units: loadUnits, compose: async () => {},
    pending: loadPending, meetings: loadMeetings, liaisons: loadLiaisons,
  }[view];
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

function button(label, action) {
  const b = el("button", label);
  b.addEventListener("click", () => action(b).catch((e) => showError(e.message)));
  return b;
}

function draftCard(id, title, meta, text) {
  const card = el("article", null, "step");
  card.id = id;
  card.append(el("h3", title), el("p", meta, "meta"), el("pre", text),
    el("p", "✔ 已验证签名、叶哈希与包含证明 Signature, leaf hash and inclusion verified", "verified"));
  return card;
}

async function loadPending() {
  const r = await api("GET", "/v1/workflow/pending");
  const minutes = $("pending-minutes");
  minutes.replaceChildren();
  $("pending-minutes-none").hidden = r.minutes.length > 0;
  for (const m of r.minutes) {
    const card = draftCard(`minutes-${m.meeting_id}`, `${m.title} · 纪要第 ${m.revision} 稿 draft ${m.revision}`,
      `会议 meeting ${m.meeting_id} · ${m.proposer} · ${m.draft.channel}:${m.draft.seq} · 未答复 not answered: ${m.not_answered.join(", ")}`, m.text);
    const comments = el("input");
    comments.placeholder = "意见（反对时必填） comments (required to object)";
    comments.size = 50;
    const answer = (consent) => async () => {
      await api("POST", `/v1/meetings/${encodeURIComponent(m.meeting_id)}/minutes-answer`, { consent, comments: comments.value });
      await loadPending();
    };
    card.append(comments, button("同意 Consent", answer(true)), button("反对 Object", answer(false)));
    minutes.append(card);
  }
  const joint = $("pending-joint");
  joint.replaceChildren();
  $("pending-joint-none").hidden = r.joint_notices.length > 0;
  for (const n of r.joint_notices) {
    const card = draftCard(`joint-${n.notice_id}`, `${kindLabel(n.kind)} · ${n.title}`,
      `${n.notice_id} · 起草 drafter ${n.drafter} · 联署单位 co-issuers ${n.co_issuers.join(", ")} · 未署名 not signed ${n.not_signed.join(", ")}`, n.text);
    card.append(button("会签 Co-sign", async () => {
      await api("POST", `/v1/joint-notices/${encodeURIComponent(n.notice_id)}/co-sign`);
      await loadPending();
    }));
    joint.append(card);
  }
}

async function loadMeetings() {
  const r = await api("GET", "/v1/workflow/meetings");
  const body = $("meetings-table").tBodies[0];
  body.replaceChildren();
  for (const m of r.meetings) {
    const row = el("tr");
    row.id = `meeting-${m.meeting_id}`;
    const answers = el("td");
    for (const a of m.answers) {
      const s = el("span", `${a.unit}: ${ANSWERS[a.state] || a.state}`, `state answer-${a.state}`);
      s.dataset.unit = a.unit;
      s.dataset.state = a.state;
      if (a.comments) s.title = a.comments;
      answers.append(s);
    }
    const waiting = el("td", m.not_answered.join(", ") || "—", m.not_answered.length ? "waiting" : "");
    row.append(el("td", m.meeting_id), el("td", m.title), el("td", STAGES[m.stage] || m.stage),
      el("td", m.draft ? `第 ${m.revision} 稿 ${m.draft.channel}:${m.draft.seq}` : "—"), answers, waiting);
    body.append(row);
  }
}

async function loadLiaisons() {
  const r = await api("GET", "/v1/liaisons");
  const body = $("liaisons-table").tBodies[0];
  body.replaceChildren();
  for (const u of r.units) {
    const c = u.current || {};
    const row = el("tr");
    row.id = `liaison-${u.unit}`;
    row.append(el("td", u.unit), el("td", c.name || "未报送 none reported"), el("td", c.title || ""),
      el("td", c.contact || ""), el("td", c.hub_time || ""), el("td", u.changes));
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
