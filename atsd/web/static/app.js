// The atsd lab page: fetches the list endpoints once, then applies /events as they come.
// Everything the daemon sends is put in the page with textContent, never as HTML.
"use strict";

const HOUR = 3600;
const RENDER_MS = 250;
const state = {
  resources: [], reservations: [], revocations: new Map(), pool: null, queues: [],
  seq: null, view: { start: null, span: 26 * HOUR }, drawn: 0,
};
let source = null;
let refreshTimer = null;
let renderQueued = false;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const DAY = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });
const days = new Map();     // day number -> "Dec 3", made once: a calendar formats thousands

function fmtTime(t) {
  const d = new Date(t * 1000);
  const local = t - d.getTimezoneOffset() * 60;
  const day = Math.floor(local / 86400), today = Math.floor((Date.now() / 1000 -
    d.getTimezoneOffset() * 60) / 86400);
  const hm = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  if (day === today) return hm;
  if (!days.has(day)) days.set(day, DAY.format(d));
  return days.get(day) + " " + hm;
}

function fmtLeft(s) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
}

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  const body = await r.json();
  if (!source && (state.seq === null || body.seq < state.seq)) state.seq = body.seq;
  return body;
}

function route() {
  const parts = (location.hash || "#/calendar").slice(2).split("/");
  return { page: parts[0] || "calendar", arg: decodeURIComponent(parts.slice(1).join("/")) };
}

// --- loading ---

async function load() {
  const { page, arg } = route();
  const v = state.view;
  if (v.start === null) v.start = Date.now() / 1000 - 2 * HOUR;
  const jobs = [getJSON("/api/resources"), getJSON("/api/revocations")];
  if (page === "calendar")
    jobs.push(getJSON(`/api/reservations?start_time=${v.start}&end_time=${v.start + v.span}`));
  else if (page === "resource")
    jobs.push(getJSON(`/api/reservations?resource=${encodeURIComponent(arg)}`),
              getJSON(`/api/history?resource=${encodeURIComponent(arg)}`).catch(() => null));
  else if (page === "pool") jobs.push(getJSON("/api/pool"));
  else if (page === "queues") jobs.push(getJSON("/api/queues"));
  const [res, rev, extra, history] = await Promise.all(jobs);
  state.resources = res.resources;
  state.revocations = new Map(rev.revocations.map(r => [r.revocation_id, r]));
  if (extra && extra.reservations) state.reservations = extra.reservations;
  if (extra && extra.resource_pool) state.pool = extra.resource_pool;
  if (extra && extra.queues) state.queues = extra.queues;
  state.history = history ? history.entries : null;
  render();
  if (!source) connect();
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => load().catch(showError), 250);
}

function showError(err) {
  const live = document.getElementById("live");
  live.textContent = String(err.message || err);
  live.classList.add("down");
}

// --- live events ---

function connect() {
  source = new EventSource("/events?since=" + state.seq);
  const live = document.getElementById("live");
  source.onopen = () => { live.textContent = "live"; live.classList.remove("down"); };
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.classList.add("down");
    if (source.readyState === EventSource.CLOSED) {  // refused outright: start a new one
      source = null;
      setTimeout(() => { if (!source) connect(); }, 1000);
    }
  };
  source.onmessage = m => apply(JSON.parse(m.data));
  source.addEventListener("reset", m => {   // the log no longer reaches back: reload all
    state.seq = JSON.parse(m.data).last_seq;
    refreshSoon();
  });
}

function apply(e) {
  state.seq = e.seq;
  const topic = e.topic;
  if (topic === "reservation.status") {
    state.reservations = state.reservations.filter(r => r.id !== e.reservation_id);
    if (e.reservation_status !== "RESERVATION_ENDED") {
      for (const resource of e.resources)
        state.reservations.push({ id: e.reservation_id, kind: e.kind, resource, owner: e.owner,
          start_time: e.start_time, end_time: e.end_time, reservation_status: e.reservation_status,
          slots: null, reservation_mode: null, expire_time: null });
    }
  } else if (topic === "resource.delete_pending") {
    state.revocations.set(e.revocation_id, { revocation_id: e.revocation_id, reason: e.reason,
      deadline: e.deadline, nodes: [...new Set(e.nodelist.map(n => n.node_id))] });
  } else if (topic === "resource.delete_complete" && e.final) {
    state.revocations.delete(e.revocation_id);
  }
  renderSoon();
  // What an event does not carry is fetched again, only where the page shows it: the
  // calendar applies bookings itself and reloads only for service state (revocations).
  const page = route().page;
  const resourceTopic = topic.startsWith("resource.") ||
    topic === "reservation.degraded" || topic === "reservation.replaced";
  if ({ calendar: resourceTopic, resources: true, resource: true,
        pool: resourceTopic || topic === "reservation.status",
        queues: resourceTopic || topic === "job.status" || e.kind === "batch" }[page])
    refreshSoon();
}

// --- drawing ---

function renderSoon() {   // at most every RENDER_MS: a busy lab does not keep the CPU busy
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => requestAnimationFrame(() => { renderQueued = false; render(); }), RENDER_MS);
}

function render() {
  const { page, arg } = route();
  for (const a of document.querySelectorAll("header nav a"))
    a.toggleAttribute("aria-current", a.getAttribute("href") === "#/" + page);
  const main = document.getElementById("main");
  const view = { calendar: calendarPage, resources: resourcesPage, pool: poolPage,
                 queues: queuesPage, resource: () => resourcePage(arg) }[page] || calendarPage;
  main.replaceChildren(view());
  if (document.getElementById("gantt")) fillRows();
  drawCountdowns();
  state.drawn++;
  performance.mark("atsd-drawn");
  document.body.dataset.drawn = state.drawn;
  document.body.dataset.seq = state.seq;
}

let rowObserver = null;

function fillRows() {   // bars for the rows in sight now, the others' as they come into sight
  if (rowObserver) rowObserver.disconnect();
  rowObserver = new IntersectionObserver(entries => {
    for (const e of entries)
      if (e.isIntersecting) { rowObserver.unobserve(e.target); e.target.fill(); }
  }, { rootMargin: "600px 0px" });
  const rows = [...document.querySelectorAll("#gantt .row")];
  const boxes = rows.map(r => r.getBoundingClientRect());    // one layout, before any change
  rows.forEach((row, i) => {
    if (boxes[i].bottom > -600 && boxes[i].top < innerHeight + 600) row.fill();
    else rowObserver.observe(row);
  });
}

function revokedNodes() {
  const out = new Map();
  for (const r of state.revocations.values())
    for (const n of r.nodes) out.set(n, r);
  return out;
}

function drawCountdowns() {
  const box = document.getElementById("countdowns");
  const now = Date.now() / 1000;
  const lines = [...state.revocations.values()].map(r =>
    (r.maintenance ? "Maintenance on " : "Revoking ") + r.nodes.join(", ") + " in " +
    fmtLeft(r.deadline - now) + (r.reason ? " (" + r.reason + ")" : ""));
  box.textContent = lines.join(" · ");
  for (const span of document.querySelectorAll("[data-deadline]"))
    span.textContent = "revoked in " + fmtLeft(Number(span.dataset.deadline) - now);
}

function calendarPage() {
  const v = state.view;
  const end = v.start + v.span;
  const frag = document.createDocumentFragment();
  const button = (text, title, fn) => {
    const b = el("button", { type: "button", title }, text);
    b.addEventListener("click", fn);
    return b;
  };
  frag.append(el("div", { class: "toolbar" },
    button("◀ Earlier", "Scroll back (←)", () => scroll(-1)),
    button("Now", "Back to now (n)", () => { v.start = Date.now() / 1000 - 2 * HOUR; v.span = 26 * HOUR; load().catch(showError); }),
    button("Later ▶", "Scroll on (→)", () => scroll(1)),
    button("Zoom in +", "Shorter window (+)", () => zoom(0.5)),
    button("Zoom out −", "Longer window (−)", () => zoom(2)),
    el("span", { class: "window" }, fmtTime(v.start) + " – " + fmtTime(end)),
    el("span", { class: "legend" },
      el("span", { class: "bar-key s-RESERVATION_GRANTED" }, "booked"),
      el("span", { class: "bar-key s-RESERVATION_ACTIVE" }, "in use"),
      el("span", { class: "bar-key k-allocation s-RESERVATION_ACTIVE" }, "pool lease"),
      el("span", { class: "bar-key k-batch s-RESERVATION_ACTIVE" }, "batch"),
      el("span", { class: "bar-key k-maintenance" }, "maintenance")),
    el("span", { class: "hint" }, "Keys: ← → scroll, + − zoom, n now, Tab to bars")));
  const gantt = el("div", { class: "gantt", id: "gantt" });
  gantt.append(axis(v.start, v.span));
  const pos = t => ((t - v.start) / v.span * 100);
  const byResource = new Map(state.resources.map(r => [r.name, []]));
  for (const r of state.reservations)
    if (r.end_time > v.start && r.start_time < end && byResource.has(r.resource))
      byResource.get(r.resource).push(r);
  const revoked = revokedNodes();
  const drawn = [];       // the bookings behind the bars, described when one is looked at
  for (const res of state.resources) {
    const bookings = byResource.get(res.name).sort((a, b) => a.start_time - b.start_time);
    const lanes = [], placed = [];
    for (const b of bookings) {
      let lane = lanes.findIndex(t => t <= b.start_time);
      if (lane < 0) { lane = lanes.length; lanes.push(0); }
      lanes[lane] = b.end_time;
      placed.push([b, lane]);
    }
    const track = el("div", { class: "track" });
    track.style.height = `calc(var(--row) * ${Math.max(1, lanes.length)})`;
    const link = el("a", { href: "#/resource/" + encodeURIComponent(res.name) }, res.name);
    const label = el("div", { class: "label", title: `${res.name} (${res.type}): ${res.state}` }, link);
    const rev = revoked.get(res.name);
    if (rev) label.append(" ", el("span", { "data-deadline": String(rev.deadline) }, ""));
    else if (res.state === "out_of_service") label.append(" (out of service)");
    const row = el("div", { class: "row" + (res.state === "out_of_service" ? " out" : ""),
                            "data-resource": res.name }, label, track);
    row.fill = () => {      // the bars, made when the row comes into sight (see fillRows)
      for (const [b, lane] of placed) {
        const left = Math.max(0, pos(b.start_time)), right = Math.min(100, pos(b.end_time));
        const bar = document.createElement("div");    // (no el(): there are thousands)
        bar.className = `bar s-${b.reservation_status} k-${b.kind}`;
        bar.tabIndex = 0;
        bar.dataset.id = b.id;
        bar.dataset.i = drawn.length;
        bar.textContent = b.owner + (b.kind === "maintenance" ? " (maintenance)" : "");
        drawn.push(b);
        bar.style.cssText = `left:${left}%;width:${Math.max(0.15, right - left)}%;top:${lane * 22}px`;
        track.append(bar);
      }
    };
    gantt.append(row);
  }
  const now = Date.now() / 1000;
  if (now >= v.start && now <= end) {
    const line = el("div", { class: "now", "aria-hidden": "true" }, el("span", {}, "now"));
    line.style.left = `calc(var(--label) + (100% - var(--label)) * ${pos(now) / 100})`;
    gantt.append(line);
  }
  gantt.addEventListener("keydown", barKeys);
  const describe = ev => {
    const bar = ev.target.closest(".bar");
    if (bar && !bar.title) {
      const b = drawn[Number(bar.dataset.i)];
      bar.title = `${b.resource}: ${b.owner}${b.kind === "maintenance" ? " (maintenance)" : ""}, ` +
        `${b.reservation_status.replace("RESERVATION_", "").toLowerCase()}, ` +
        `${fmtTime(b.start_time)} – ${fmtTime(b.end_time)}, ${b.id}`;
    }
  };
  gantt.addEventListener("focusin", describe);
  gantt.addEventListener("mouseover", describe);
  frag.append(gantt, el("div", { id: "detail", role: "status", "aria-live": "polite" }));
  return frag;
}

function axis(start, span) {
  const steps = [900, 1800, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR, 48 * HOUR];
  const step = steps.find(s => span / s <= 16) || 96 * HOUR;
  const ax = el("div", { class: "axis", "aria-hidden": "true" });
  const offset = new Date().getTimezoneOffset() * 60;
  for (let t = Math.ceil((start - offset) / step) * step + offset; t < start + span; t += step) {
    const tick = el("div", { class: "tick" }, fmtTime(t));
    tick.style.left = ((t - start) / span * 100) + "%";
    ax.append(tick);
  }
  return ax;
}

function barKeys(ev) {   // Enter on a bar says what it is in the live region below
  const bar = ev.target.closest(".bar");
  if (bar && (ev.key === "Enter" || ev.key === " ")) {
    document.getElementById("detail").textContent = bar.title;
    ev.preventDefault();
  }
}

function scroll(dir) { state.view.start += dir * state.view.span / 4; load().catch(showError); }

function zoom(f) {
  const v = state.view, mid = v.start + v.span / 2;
  v.span = Math.min(28 * 24 * HOUR, Math.max(HOUR / 4, v.span * f));
  v.start = mid - v.span / 2;
  load().catch(showError);
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map(h => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map(r => el("tr", {}, ...r.map(c => el("td", {}, c))))));
}

function kv(obj) {
  return Object.entries(obj || {}).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
}

function resourcesPage() {
  const revoked = revokedNodes();
  const now = Date.now() / 1000;
  return el("section", {}, el("h2", {}, "Resources and their service state"),
    table(["Resource", "Type", "State", "Service", "Free slots", "Value", "Config", "Tags"],
      state.resources.map(r => [
        el("a", { href: "#/resource/" + encodeURIComponent(r.name) }, r.name), r.type,
        el("span", { class: "state-" + r.state }, r.state.replace(/_/g, " ") +
          (revoked.has(r.name) ? " (revoking, " + fmtLeft(revoked.get(r.name).deadline - now) + " left)" : "")),
        service(r),
        `${r.free_slots} / ${r.slots}`, r.value === null ? "–" : String(r.value), kv(r.config), kv(r.tags)])));
}

function service(r) {     // up, down, revoked or retired, and why
  return (r.service || "") + (r.service_reason ? ` (${r.service_reason})` : "");
}

function meter(free, total) {
  const used = total - free;
  const m = el("span", { class: "meter", role: "img", "aria-label": `${used} of ${total} slots used` });
  const fill = el("i");
  fill.style.width = (total ? used / total * 100 : 0) + "%";
  m.append(fill, el("b", {}, `${used} / ${total} used`));
  return m;
}

function poolPage() {
  const sec = el("section", {}, el("h2", {}, "Pool usage"));
  const pool = (state.pool && state.pool.resources) || {};
  if (!Object.keys(pool).length) sec.append(el("p", {}, "No pool types are configured."));
  for (const [type, insts] of Object.entries(pool)) {
    const free = insts.reduce((a, i) => a + i.slots, 0), total = insts.reduce((a, i) => a + i.total, 0);
    sec.append(el("h3", {}, type + " ", meter(free, total)),
      table(["Instance", "Used", "Free slots"], insts.map(i => [i.id, meter(i.slots, i.total), String(i.slots)])));
  }
  return sec;
}

function queuesPage() {
  const sec = el("section", {}, el("h2", {}, "Batch queues"));
  if (!state.queues.length) sec.append(el("p", {}, "No batch queues are configured."));
  for (const q of state.queues) {
    sec.append(el("h3", {}, `${q.queue_id} (${q.backend}${q.partition ? ", partition " + q.partition : ""})`),
      el("p", {}, q.hosts.length ? "Hosts: " + q.hosts.join(", ") : "Hosts: from Slurm"));
    if (!q.reservations.length) { sec.append(el("p", {}, "No live reservations.")); continue; }
    sec.append(table(["Reservation", "Owner", "State", "Start", "End", "Hosts", "Jobs"],
      q.reservations.map(r => [r.reservation_id, r.owner, r.reservation_status.replace("RESERVATION_", ""),
        fmtTime(r.start_time), fmtTime(r.end_time), r.hosts.join(", "),
        r.jobs.length ? r.jobs.map(j => `${j.job_id} ${j.state}` + (j.exit_code === null ? "" : ` (exit ${j.exit_code})`)).join("; ") : "none"])));
  }
  return sec;
}

function resourcePage(name) {
  const res = state.resources.find(r => r.name === name);
  if (!res) return el("p", {}, "No resource named " + name + ".");
  const rev = revokedNodes().get(name);
  const now = Date.now() / 1000;
  const rows = state.reservations.filter(r => r.resource === name && r.end_time > now);
  return el("section", {}, el("h2", {}, res.name),
    table(["Type", "State", "Service", "Free slots", "Value", "Config", "Tags"],
      [[res.type, res.state.replace(/_/g, " ") + (rev ? `, revoked in ${fmtLeft(rev.deadline - now)}` : ""),
        service(res),
        `${res.free_slots} / ${res.slots}`, res.value === null ? "–" : String(res.value), kv(res.config), kv(res.tags)]]),
    el("h3", {}, "Upcoming bookings"),
    rows.length ? table(["Reservation", "Owner", "Kind", "State", "From", "To", "Slots"],
      rows.map(r => [r.id, r.owner, r.kind, r.reservation_status.replace("RESERVATION_", ""),
        fmtTime(r.start_time), fmtTime(r.end_time), r.slots === null ? "" : String(r.slots)]))
      : el("p", {}, "Nothing booked."),
    el("h3", {}, "History (last 7 days, newest first)"),
    state.history && state.history.length
      ? table(["Time", "User", "Command", "Outcome", "Ids"],
          state.history.map(h => [fmtTime(h.time), h.user, h.command, h.outcome, h.ids.join(", ")]))
      : el("p", {}, state.history ? "Nothing recorded." : "History could not be loaded."));
}

// --- keys and clock ---

document.addEventListener("keydown", ev => {
  if (route().page !== "calendar" || ev.target.closest("input, textarea, button") ||
      ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const act = { ArrowLeft: () => scroll(-1), ArrowRight: () => scroll(1), "+": () => zoom(0.5),
    "=": () => zoom(0.5), "-": () => zoom(2), n: () => { state.view.start = null; load().catch(showError); } }[ev.key];
  if (act) { act(); ev.preventDefault(); }
});
window.addEventListener("hashchange", () => {
  load().then(() => document.getElementById("main").focus()).catch(showError);
});
setInterval(drawCountdowns, 1000);
setInterval(() => { if (route().page === "calendar") renderSoon(); }, 30000);   // the now line
setInterval(refreshSoon, 300000);   // what changed without an event (an extension moves an end)
load().catch(showError);
