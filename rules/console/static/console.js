// aquavolt operator console: plain JS module, no build step. The server renders every page;
// this module keeps the alarm list live (server-sent events), and sends actions as JSON
// with the session's CSRF token.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const P = "/console";
const WORDS = JSON.parse(document.getElementById("i18n")?.textContent || "{}");
// the page's language (the server chose it): English text is the key, {name} is filled in
export function t(text, values = {}) {
  return (WORDS[text] ?? text).replace(/\{(\w+)\}/g, (_, k) => String(values[k] ?? ""));
}
const LABELS = {unack: "Unacknowledged", acked: "Acknowledged", rtn_unack: "Returned, unacknowledged",
  shelved: "Shelved", suppressed: "Suppressed", out_of_service: "Out of service", normal: "Normal"};
const LANG = document.documentElement.lang || undefined;

function refused(status, data) { say(`${t("Refused")} (${status}): ${data.error ?? ""}`, true); }

function say(text, bad = false) {
  const s = document.getElementById("status");
  if (s) { s.textContent = text; s.classList.toggle("error", bad); }
}

export async function post(path, body) {
  const r = await fetch(P + "/api" + path, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
  let data = {};
  try { data = await r.json(); } catch { /* not JSON */ }
  return {status: r.status, data};
}

function fmtTime(ms) { return ms ? new Date(ms).toLocaleString(LANG) : ""; }
function fmtTimes(root) { root.querySelectorAll("time[data-ms]").forEach(x => { x.textContent = fmtTime(+x.dataset.ms); }); }
function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}
function duration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}
function placeText(p) {
  return ["zone", "feeder", "transformer", "site"].filter(k => p[k]).map(k => `${k} ${p[k]}`).join(" · ");
}

// ---- the live alarm list ---------------------------------------------------------------------
const table = document.getElementById("alarms");
let seenSeq = table ? +table.dataset.seq : 0;

function row(a, canAct) {
  const tr = el("tr", {"data-alarm": a.id, "data-state": a.state, class: `p-${a.priority} s-${a.state}`});
  tr.append(el("td", {}, t(a.priority)), el("td", {}, t(LABELS[a.state] ?? a.state)));
  const when = el("td"); when.append(el("time", {"data-ms": a.raised_ms, datetime: new Date(a.raised_ms).toISOString()}, fmtTime(a.raised_ms)));
  tr.append(when, el("td", {}, a.asset), el("td", {}, placeText(a.place)));
  if (a.parent) { tr.dataset.parent = a.parent; tr.classList.add("consequence"); }
  const msg = el("td", {}, a.message || a.condition);
  if (a.consequences) {
    const b = el("button", {type: "button", class: "fold", "aria-expanded": String(unfolded.has(a.id)),
      "aria-label": `${t("{n} consequences", {n: a.consequences})}: ${a.id}`}, t("{n} consequences", {n: a.consequences}));
    b.addEventListener("click", () => {
      if (unfolded.has(a.id)) unfolded.delete(a.id); else unfolded.add(a.id);
      b.setAttribute("aria-expanded", String(unfolded.has(a.id)));
      applyHidden();
    });
    msg.append(" ", b);
  }
  if (a.state === "shelved" && a.shelved_until_ms) msg.append(el("div", {class: "note"}, t("shelved until {t}: {reason}", {t: fmtTime(a.shelved_until_ms), reason: a.shelve_reason})));
  tr.append(msg);
  const outage = el("td");
  if (a.customers != null) outage.append(el("span", {}, `${a.customers} ${t("customers")}`));
  if (a.duration_s != null) outage.append(el("span", {class: "dur"}, ` · ${duration(a.duration_s)}`));
  tr.append(outage);
  const act = el("td", {class: "actions"});
  if (canAct && (a.state === "unack" || a.state === "rtn_unack")) {
    const b = el("button", {type: "button", class: "ack", "aria-label": `${t("Acknowledge")} ${a.id}`}, t("Acknowledge"));
    b.addEventListener("click", () => ack([a.id]));
    act.append(b);
  }
  if (canAct && a.state !== "shelved") {
    const b = el("button", {type: "button", class: "shelve", "aria-label": `${t("Shelve")} ${a.id}`}, t("Shelve"));
    b.addEventListener("click", () => shelve(a.id));
    act.append(b);
  }
  if (canAct && a.state === "shelved") {
    const b = el("button", {type: "button", class: "unshelve", "aria-label": `${t("Unshelve")} ${a.id}`}, t("Unshelve"));
    b.addEventListener("click", () => unshelve(a.id));
    act.append(b);
  }
  act.append(el("a", {href: `${P}/alarms/${encodeURIComponent(a.asset)}/${encodeURIComponent(a.condition)}`,
    "aria-label": `${t("History")} ${a.id}`}, t("History")));
  if (a.grafana) act.append(el("a", {href: a.grafana, rel: "noopener", "aria-label": `${t("Dashboard")} ${a.asset}`}, t("Dashboard")));
  tr.append(act);
  tr.hidden = isHidden(tr);
  return tr;
}

const unfolded = new Set();  // parents whose consequences the operator opened
function isHidden(tr) {
  // a consequence shows under its parent when unfolded; other shelved or suppressed on demand
  if (tr.dataset.parent) return !unfolded.has(tr.dataset.parent);
  return HIDDEN.has(tr.dataset.state) && !showHidden();
}

const HIDDEN = new Set(["shelved", "suppressed", "out_of_service"]);
function showHidden() { return document.getElementById("show-hidden")?.checked ?? false; }
function applyHidden() {
  table.querySelectorAll("tr[data-alarm]").forEach(tr => { tr.hidden = isHidden(tr); });
}

async function unshelve(id) {
  const [asset, condition] = id.split("/");
  const {status, data} = await post(`/alarms/${encodeURIComponent(asset)}/${encodeURIComponent(condition)}/unshelve`, {});
  if (status === 200) say(t("Unshelved {id}", {id})); else refused(status, data);
}

function render(data) {
  const canAct = table.dataset.canAct === "1";
  const body = table.tBodies[0];
  body.replaceChildren(...data.alarms.map(a => row(a, canAct)));
  for (const [p, n] of Object.entries(data.counts)) {
    const c = document.querySelector(`[data-count="${p}"]`);
    if (c) c.textContent = n;
  }
  seenSeq = data.seq;  // what the operator now sees
  table.dataset.seq = data.seq;
  table.dataset.live = "1";
}

async function ack(ids) {
  const {status, data} = await post("/ack", {ids, seen_seq: seenSeq});
  if (status === 200) say(t("Acknowledged {n}", {n: data.acknowledged.length})
    + (data.skipped.length ? t(", {n} raised since you looked were not", {n: data.skipped.length}) : ""));
  else refused(status, data);
}

function shelve(id) {
  const dlg = document.getElementById("shelve-dialog");
  document.getElementById("shelve-target").textContent = id;
  dlg.returnValue = "";
  dlg.onclose = async () => {
    if (dlg.returnValue !== "ok") return;
    const reason = document.getElementById("shelve-reason").value.trim();
    const hours = +document.getElementById("shelve-hours").value;
    const [asset, condition] = id.split("/");
    const {status, data} = await post(`/alarms/${encodeURIComponent(asset)}/${encodeURIComponent(condition)}/shelve`,
      {reason, duration_s: Math.round(hours * 3600)});
    if (status === 200) say(t("Shelved {id} until {t}", {id, t: fmtTime(data.shelved_until_ms)})); else refused(status, data);
  };
  dlg.showModal();
}

if (table) {
  fmtTimes(table);
  applyHidden();
  document.getElementById("show-hidden")?.addEventListener("change", applyHidden);
  const q = table.dataset.asset ? `?asset=${encodeURIComponent(table.dataset.asset)}` : "";
  const es = new EventSource(`${P}/events${q}`);
  es.addEventListener("alarms", ev => render(JSON.parse(ev.data)));
  es.addEventListener("signed-out", () => { es.close(); location.assign(`${P}/login`); });
  es.onerror = () => { table.dataset.live = "0"; say(t("Connection lost: reconnecting…"), true); };
  es.onopen = () => say("");
  document.getElementById("ack-visible")?.addEventListener("click", () => {
    const ids = [...table.querySelectorAll('tr[data-state="unack"], tr[data-state="rtn_unack"]')]
      .filter(r => !r.hidden).map(r => r.dataset.alarm);
    if (ids.length) ack(ids); else say(t("Nothing to acknowledge"));
  });
}

// ---- an alarm's page: comment -------------------------------------------------------------------
const commentForm = document.getElementById("comment-form");
if (commentForm) {
  commentForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    const [asset, condition] = commentForm.dataset.alarm.split("/");
    const text = document.getElementById("comment-text").value;
    const {status, data} = await post(`/alarms/${encodeURIComponent(asset)}/${encodeURIComponent(condition)}/comment`, {text});
    if (status === 200) location.reload(); else refused(status, data);
  });
}
document.querySelectorAll("#history, #command-log").forEach(fmtTimes);

// ---- commands: confirm with the current value, then follow the reply ---------------------------
const writable = document.getElementById("writable");
if (writable) {
  const log = document.getElementById("command-log");
  const es = new EventSource(`${P}/events?commands=1`);
  es.addEventListener("commands", ev => {
    const commands = JSON.parse(ev.data).commands;
    for (const c of [...commands].reverse()) {  // oldest first: the newest read-back wins
      if (c.value_read == null) continue;
      const card = writable.querySelector(`[data-command="${CSS.escape(`${c.gateway}/${c.device}/${c.point}`)}"] .current`);
      if (card) card.textContent = String(c.value_read);
    }
    const rows = commands.map(c => {
      const tr = el("tr", {"data-command-id": c.id});
      const when = el("td"); when.append(el("time", {"data-ms": c.issued_ms}, fmtTime(c.issued_ms)));
      tr.append(when, el("td", {}, c.operator), el("td", {}, `${c.device}.${c.point} = ${c.value}`),
        el("td", {class: "outcome"}, c.outcome ?? t("waiting")), el("td", {class: "why"}, c.outcome_reason ?? ""));
      return tr;
    });
    log.tBodies[0].replaceChildren(...rows);
  });
  writable.addEventListener("click", ev => {
    const b = ev.target.closest("button[data-value]");
    if (!b) return;
    const card = b.closest("[data-command]");
    let value;
    if (b.dataset.value === "input") {
      const input = card.querySelector("input");
      if (input.value === "" || !input.checkValidity()) { say(t("Enter a value inside the range"), true); input.focus(); return; }
      value = +input.value;
    } else value = b.dataset.value === "true";
    const dlg = document.getElementById("confirm-dialog");
    document.getElementById("confirm-text").textContent = t("{point}: now {current}, set to {value}?",
      {point: `${card.dataset.device}.${card.dataset.point}`, current: card.querySelector(".current").textContent, value});
    dlg.returnValue = "";
    dlg.onclose = async () => {
      if (dlg.returnValue !== "ok") return;
      const {status, data} = await post("/commands", {gateway: card.dataset.gateway, device: card.dataset.device,
        point: card.dataset.point, value, reason: document.getElementById("confirm-reason").value});
      if (status === 202) say(t("Command {id} sent: waiting for the gateway's reply", {id: data.id.slice(0, 8)}));
      else refused(status, data);
    };
    dlg.showModal();
  });
}
