"use strict";
// The orc dashboard: the mesh, the runs and the ensembles of the node that served this page,
// kept current by its event stream. It talks to that node only: JSON under /api/*, server-sent
// events from /api/events (docs/api.md). Text that came over the network reaches the page through
// textContent, attribute values and SVG text nodes only, never as markup.

const MAX_EVENTS = 5000;        // per open run: a chatty run cannot grow the page without bound
const MAX_TOKEN_CHARS = 65536;  // per agent, the same cap the node puts on an agent's output
const MAX_CHANGES = 50;         // node state changes listed under the mesh
const MIN_WAIT_S = 0.05;        // a shorter wait is bookkeeping, not a queue: no bar for it
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const VIEWS = ["mesh", "runs", "ensembles", "run"];
const TERMINAL = new Set(["completed", "failed", "skipped"]);
const RANK = { pending: 0, running: 1, completed: 2, failed: 2, skipped: 2 };

const state = {
  authed: false,
  selfId: null,
  nodes: new Map(),   // node_id -> NODE, in the order the node listed them
  changes: [],        // {at, name, from, to}, newest first
  runs: [],
  ensembles: [],
  runId: null,        // the run #view-run is about, set before its snapshot arrives
  run: null,          // that run: the snapshot, then kept current by its events
  buffered: [],       // its events that arrived while the snapshot was on its way
  selected: null,     // the agent whose tokens are shown
  pinned: false,      // the user chose `selected`; until then the first agent to stream is followed
  skew: 0,            // the node's clock minus this browser's, from the stamps of live events
  source: null,
  backoff: BACKOFF_FIRST_MS,
  retry: 0,
  wasDown: false,
};

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- small helpers ----------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

/** An HTML element; string children become text nodes, so they are never parsed as markup. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false).map(asChild));
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false).map(asChild));
  return node;
}

function asChild(child) {
  return child instanceof Node ? child : String(child);
}

function clip(text, length) {
  const s = String(text ?? "");
  return s.length > length ? s.slice(0, length - 1) + "…" : s;
}

const serverNow = () => Date.now() / 1000 + state.skew;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const isNum = (x) => typeof x === "number" && Number.isFinite(x);

function fmtBytes(n) {
  if (!isNum(n)) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtDuration(seconds) {
  if (!isNum(seconds)) return "";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function fmtTime(at) {
  return isNum(at) ? new Date(at * 1000).toLocaleString() : "";
}

function fmtAgo(at) {
  return isNum(at) ? `${fmtDuration(Math.max(0, serverNow() - at))} ago` : "never";
}

function fmtRate(x) {
  return isNum(x) ? `${x.toFixed(1)} tok/s` : "–";
}

function nodeName(nodeId) {
  return nodeId ? state.nodes.get(nodeId)?.name ?? null : null;
}

// ---- talking to the node ----------------------------------------------------------------------

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (typeof body?.error?.message === "string") return body.error.message;
  } catch { /* not JSON: say the status instead */ }
  return `${response.status} ${response.statusText}`.trim();
}

/** One request to the node; a lapsed session sends the page back to its login form. */
async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  // The node refuses a cookie-authenticated POST without it: a cross-site form cannot add a header.
  if (method !== "GET") init.headers["X-Orc-Dashboard"] = "1";
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    showLogin();
    throw new Unauthorized("signed out");
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response.status === 204 ? null : response.json();
}

/** Runs `promise` for its effect; a failure is written into `where` (or dropped, if signed out). */
function background(promise, where = null) {
  promise.catch((error) => {
    if (error instanceof Unauthorized) return;
    if (where) where.textContent = error.message;
    else console.warn("orc dashboard:", error);
  });
}

const runPath = (runId) => `/api/runs/${encodeURIComponent(runId)}`;
const runLink = (runId) => `#/run/${encodeURIComponent(runId)}`;

// ---- signing in and out -----------------------------------------------------------------------

function setConnection(which) {
  const badge = $("#connection");
  badge.dataset.state = which;
  badge.textContent = { live: "live", reconnecting: "reconnecting…", unauthorized: "signed out" }[which];
}

function showLogin() {
  state.authed = false;
  stopStream();
  clearTimeout(rayTimer);
  setConnection("unauthorized");
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  $("nav").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-form").elements.key.focus();
}

function start() {
  state.authed = true;
  state.backoff = BACKOFF_FIRST_MS;
  $("#login").hidden = true;
  $("nav").hidden = false;
  $("#logout").hidden = false;
  connect();
  background(loadMesh());
  background(loadRay());
  background(loadRuns());
  background(loadEnsembles());
  state.runId = null;  // so that route() loads the open run afresh
  route();
}

/** The first look: signed in already (a session cookie, or keyless loopback), or the login form. */
async function probe(wait = BACKOFF_FIRST_MS) {
  let response = null;
  try {
    response = await fetch("/api/mesh", { credentials: "same-origin" });
  } catch { /* the node is not answering yet: try again below */ }
  if (response?.status === 401) return showLogin();
  if (!response?.ok) {
    setConnection("reconnecting");
    setTimeout(() => background(probe(Math.min(wait * 2, BACKOFF_MAX_MS))), wait);
    return;
  }
  onMesh(await response.json());
  start();
}

async function login(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("#login-error");
  const button = $("#login-submit");
  error.textContent = "";
  button.disabled = true;
  try {
    const response = await fetch("/dashboard/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Orc-Dashboard": "1" },
      body: JSON.stringify({ key: form.elements.key.value.trim() }),
    });
    if (response.ok) {
      form.elements.key.value = "";
      start();
    } else {
      error.textContent = response.status === 401 ? "This node does not accept that key." : await errorMessage(response);
    }
  } catch (failure) {
    error.textContent = `The node did not answer (${failure.message}).`;
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await api("POST", "/dashboard/logout");
  } finally {
    showLogin();
  }
}

// ---- the event stream -------------------------------------------------------------------------

function stopStream() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.retry);
}

function connect() {
  stopStream();
  const source = new EventSource("/api/events");
  state.source = source;
  source.addEventListener("open", () => {
    state.backoff = BACKOFF_FIRST_MS;
    setConnection("live");
    if (state.wasDown) {
      // Whatever happened while the stream was down is fetched again; mesh and runs come on connect.
      state.wasDown = false;
      background(refreshRun());
      background(loadEnsembles());
    }
  });
  source.addEventListener("mesh", (e) => withData(e, onMesh));
  source.addEventListener("runs", (e) => withData(e, onRuns));
  source.addEventListener("run", (e) => withData(e, onRunEvent));
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    source.close();
    state.source = null;
    retryLater();
  });
}

function retryLater() {
  state.wasDown = true;
  setConnection("reconnecting");
  const wait = state.backoff;
  state.backoff = Math.min(wait * 2, BACKOFF_MAX_MS);
  state.retry = setTimeout(() => background(reconnect()), wait);
}

async function reconnect() {
  if (!state.authed) return;
  // An EventSource hides the status of a refused stream: one plain request tells a lapsed
  // session (back to the login form) from a node that is down or restarting (try again later).
  let response;
  try {
    response = await fetch("/api/mesh", { credentials: "same-origin" });
  } catch {
    return retryLater();
  }
  if (response.status === 401) return showLogin();
  if (!response.ok) return retryLater();
  connect();
}

function withData(event, handle) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    console.warn("orc dashboard: an event that is not JSON was ignored");
    return;
  }
  handle(data);
}

// ---- views ------------------------------------------------------------------------------------

function route() {
  if (!state.authed) return;
  // Routes start with "/" so that none is also an element's id, which the browser would scroll to.
  let hash = "";
  try {
    hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  } catch { /* a mangled address: the mesh */ }
  let view = hash || "mesh";
  let runId = null;
  if (hash.startsWith("run/")) {
    view = "run";
    runId = hash.slice(4);
  }
  if (!VIEWS.includes(view)) view = "mesh";
  if ($(`#view-${view}`).hidden) window.scrollTo(0, 0);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    const here = link.dataset.view === view || (view === "run" && link.dataset.view === "runs");
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "run") {
    if (runId !== state.runId) background(openRun(runId), $("#run-error"));
    else schedule("timeline");  // drawn at the width the view has now that it shows
  }
}

// Re-rendering is batched to one pass per frame: a run's events can come hundreds a second.
const dirty = new Set();
let frame = 0;

function schedule(...parts) {
  for (const part of parts) dirty.add(part);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  const parts = [...dirty];
  dirty.clear();
  for (const part of parts) RENDER[part]();
}

const RENDER = {
  mesh: () => renderMesh(),
  runs: () => renderRuns(),
  ensembles: () => renderEnsembles(),
  head: () => state.run && renderRunHead(state.run),
  dag: () => state.run && renderDag(state.run),
  timeline: () => state.run && renderTimeline(state.run),
  agent: () => state.run && renderAgent(state.run),
  results: () => state.run && renderResults(state.run),
};

// ---- the mesh ---------------------------------------------------------------------------------

async function loadMesh() {
  onMesh(await api("GET", "/api/mesh"));
}

function onMesh(mesh) {
  const before = state.nodes;
  const next = new Map();
  const at = serverNow();
  for (const node of mesh.nodes ?? []) {
    next.set(node.node_id, node);
    const old = before.get(node.node_id);
    if (old && old.state !== node.state) noteChange(at, node.name, old.state, node.state);
    else if (!old && before.size) noteChange(at, node.name, null, node.state);
  }
  for (const [id, old] of before) if (!next.has(id)) noteChange(at, old.name, old.state, null);
  state.selfId = mesh.self;
  state.nodes = next;
  $("#self-name").textContent = nodeName(mesh.self) ?? "";
  schedule("mesh");
}

function noteChange(at, name, from, to) {
  state.changes.unshift({ at, name, from, to });
  state.changes.length = Math.min(state.changes.length, MAX_CHANGES);
}

function renderMesh() {
  $("#mesh").replaceChildren(...[...state.nodes.values()].map(nodeCard));
  if (state.changes.length) {
    $("#mesh-changes").replaceChildren(...state.changes.map((c) => el("li", { "data-to": c.to ?? "unlisted" },
      el("time", {}, new Date(c.at * 1000).toLocaleTimeString()), " ", el("strong", {}, c.name), " ",
      c.from === null ? "joined" : c.to === null ? "left the list" : `${c.from} → ${c.to}`)));
  }
}

function nodeCard(node) {
  const hw = node.hardware;
  const load = node.load;
  const facts = el("dl", { class: "facts" });
  const fact = (term, value) => value && facts.append(el("dt", {}, term), el("dd", {}, value));
  fact("address", node.address);
  fact("hardware", hw && [hw.arch, `${hw.cores} cores`, hw.accelerator || "no accelerator", hw.system]
    .filter(Boolean).join(" · "));
  fact("memory", hw && `${fmtBytes(hw.ram_available_bytes)} free of ${fmtBytes(hw.ram_total_bytes)}`);
  fact("load", load && `${load.active_generations} generating · ${load.queued} queued` +
    (isNum(load.cpu_load_1m) ? ` · CPU ${load.cpu_load_1m.toFixed(2)}` : ""));
  fact("tags", (node.tags ?? []).join(", "));
  const seen = node.self ? null
    : el("p", { class: "last-seen", "data-last-seen": node.last_seen ?? "" }, `last seen ${fmtAgo(node.last_seen)}`);
  return el("article", { class: "node card", "data-node-id": node.node_id, "data-state": node.state },
    el("header", {},
      el("span", { class: "node-name" }, node.name),
      node.self ? el("span", { class: "badge self" }, "this node") : null,
      node.state === "self" ? null : el("span", { class: `badge state state-${node.state}` }, node.state)),
    el("p", { class: "muted node-id" }, clip(node.node_id, 24)),
    seen, facts, modelTable(node.models ?? []));
}

function modelTable(models) {
  if (!models.length) return el("p", { class: "muted" }, "No models.");
  const rows = models.map((m) => el("tr", { "data-model": m.id },
    el("td", {}, m.id), el("td", {}, m.runtime ?? ""),
    el("td", {}, m.unavailable ? (typeof m.unavailable === "string" ? `unavailable: ${m.unavailable}` : "unavailable")
      : m.loaded ? "loaded" : "on disk"),
    el("td", { class: "num" }, fmtBytes(m.size_bytes)),
    el("td", { class: "num" }, fmtRate(m.prefill_tokens_per_s)),
    el("td", { class: "num" }, fmtRate(m.decode_tokens_per_s)),
    el("td", { class: "num" }, m.capacity ?? "")));
  const head = el("tr", {}, ...["model", "runtime", "state", "size", "prefill", "decode", "slots"].map((h) => el("th", {}, h)));
  return el("div", { class: "scroll" }, el("table", { class: "models" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

// ---- a Ray cluster (the config's `ray: address:`) -----------------------------------------------

const RAY_REFRESH_MS = 30000;  // the node itself asks the cluster at most this often
let rayTimer = 0;

async function loadRay() {
  clearTimeout(rayTimer);
  let ray;
  try {
    ray = await api("GET", "/api/ray");
  } finally {
    if (state.authed) rayTimer = setTimeout(() => background(loadRay()), RAY_REFRESH_MS);
  }
  renderRay(ray);
}

function renderRay(ray) {
  $("#ray").hidden = !ray.address;
  if (!ray.address) return;
  $("#ray-address").textContent = `ray://${ray.address.replace(/^ray:\/\//, "")}`;
  const status = $("#ray-status");
  status.classList.toggle("error", Boolean(ray.error));
  status.textContent = ray.error ? `Cannot list its models: ${ray.error}`
    : `${ray.models.length} model${ray.models.length === 1 ? "" : "s"} on its workers, as of ${fmtAgoSeconds(ray.age_s)}.`;
  if (!ray.models.length) {
    $("#ray-models").replaceChildren(ray.error ? "" : el("p", { class: "muted" },
      "No worker serves a model: start one with ray start --resources '{\"orc-model:MODEL_ID\": 1}'."));
    return;
  }
  const rows = ray.models.map((m) => el("tr", { "data-model": m.id },
    el("td", {}, m.id), el("td", { class: "num" }, m.actors), el("td", {}, m.worker), el("td", {}, m.tags.join(", "))));
  const head = el("tr", {}, ...["model", "actors", "worker", "tags"].map((h) => el("th", {}, h)));
  $("#ray-models").replaceChildren(el("div", { class: "scroll" },
    el("table", { class: "models ray-models" }, el("thead", {}, head), el("tbody", {}, ...rows))));
}

const fmtAgoSeconds = (s) => (!isNum(s) || s < 1 ? "now" : `${Math.round(s)} s ago`);

// ---- runs -------------------------------------------------------------------------------------

async function loadRuns() {
  onRuns(await api("GET", "/api/runs"));
}

function onRuns(data) {
  state.runs = data.runs ?? [];
  schedule("runs");
  const open = state.run;
  const summary = open && state.runs.find((r) => r.run_id === open.run_id);
  // The list says the open run started or ended and its events have not: fetch it to catch up.
  if (summary && (summary.status !== open.status || summary.active !== open.active)) background(refreshRun());
}

function renderRuns() {
  const items = state.runs.map((run) => {
    const took = isNum(run.finished_at) ? fmtDuration(run.finished_at - run.started_at) : "";
    return el("a", { class: "run", href: runLink(run.run_id), "data-run-id": run.run_id,
      "data-status": run.status },
    el("span", { class: "run-ensemble" }, run.ensemble),
    el("span", { class: `badge status-${run.status}` }, run.active ? `${run.status} · live` : run.status),
    el("span", { class: "muted" }, [fmtTime(run.started_at), took].filter(Boolean).join(" · ")),
    el("span", { class: "muted run-id" }, clip(run.run_id, 40)));
  });
  $("#runs").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "No runs yet.")]));
}

async function startRun(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("#start-run-error");
  const button = $("#start-run-submit");
  error.textContent = "";
  button.disabled = true;
  try {
    const answer = await api("POST", "/api/runs", { ensemble: form.elements.ensemble.value, input: form.elements.input.value });
    location.hash = runLink(answer.run_id);
  } catch (failure) {
    if (!(failure instanceof Unauthorized)) error.textContent = failure.message;
  } finally {
    button.disabled = false;
  }
}

async function cancelRun() {
  const runId = state.runId;
  $("#cancel-run").disabled = true;
  $("#run-error").textContent = "";
  await api("POST", `${runPath(runId)}/cancel`);
  await refreshRun();
}

async function resumeRun() {
  const runId = state.runId;
  $("#resume-run").disabled = true;
  $("#run-error").textContent = "";
  const answer = await api("POST", `${runPath(runId)}/resume`);
  if (answer.run_id === runId) await refreshRun();
  else location.hash = runLink(answer.run_id);
}

// ---- one run: its state, kept current by its events ---------------------------------------------

async function openRun(runId) {
  state.runId = runId;
  state.run = null;
  state.buffered = [];
  state.selected = null;
  state.pinned = false;
  clearRunView(runId);
  let snapshot;
  for (let attempt = 0; ; attempt++) {
    try {
      snapshot = await api("GET", runPath(runId));
      break;
    } catch (failure) {
      // A run started a moment ago may not be listed yet: ask again a few times before giving up.
      if (!(failure instanceof ApiError && failure.status === 404) || attempt >= 4) {
        if (failure instanceof ApiError && failure.status === 404) failure.message = `This node knows no run ${runId}.`;
        throw failure;
      }
      await sleep(250 * (attempt + 1));
      if (state.runId !== runId) return;
    }
  }
  if (state.runId !== runId) return;
  const run = adopt(snapshot);
  for (const event of state.buffered) if (!seenIn(run.events, event)) applyEvent(run, event);
  state.buffered = [];
  state.run = run;
  rebuildTokens(run);
  schedule("head", "dag", "timeline", "agent", "results");
}

function adopt(snapshot) {
  return { ...snapshot, agents: { ...(snapshot.agents ?? {}) }, events: (snapshot.events ?? []).slice(-MAX_EVENTS),
    tokens: new Map(), failovers: new Map() };
}

/** Whether `event` is already among `events` (the node's list is in the order it saw them). */
function seenIn(events, event) {
  const key = JSON.stringify(event);
  for (let i = events.length - 1; i >= 0; i--) {
    if (events[i].at < event.at) return false;
    if (JSON.stringify(events[i]) === key) return true;
  }
  return events.length > 0;  // older than everything the node kept: it was kept and has been dropped since
}

/** Fetches the open run again and folds it into what its events built: outputs, missed events. */
async function refreshRun() {
  const runId = state.runId;
  if (!runId || !state.run) return;
  const snapshot = await api("GET", runPath(runId));
  const run = state.run;
  if (state.runId !== runId || run === null) return;
  const theirs = snapshot.events ?? [];
  // A snapshot that has not seen the last event this page has is older than the page's state.
  const behind = theirs.length > 0 && run.events.length > 0 && theirs[theirs.length - 1].at < run.events[run.events.length - 1].at;
  const fields = behind ? ["input", "graph"]
    : ["status", "active", "finished_at", "deliverable", "input", "graph", "usage", "budget"];
  for (const field of fields) run[field] = snapshot[field];
  for (const [name, fresh] of Object.entries(snapshot.agents ?? {})) {
    const mine = run.agents[name];
    // The snapshot may be older than the last event seen: an agent's status never goes back.
    if (!mine) run.agents[name] = fresh;
    else if (RANK[fresh.status] >= RANK[mine.status] || fresh.attempts > mine.attempts) {
      // What the events taught (the node an agent is on) stays unless the node says otherwise.
      for (const [field, value] of Object.entries(fresh)) if (value !== null || !(field in mine)) mine[field] = value;
    } else if (fresh.output !== null && fresh.output !== undefined) mine.output = fresh.output;
  }
  if (theirs.length) {
    run.events = theirs.concat(run.events.filter((event) => !seenIn(theirs, event))).slice(-MAX_EVENTS);
    rebuildTokens(run);
  }
  schedule("head", "dag", "timeline", "agent", "results");
}

function rebuildTokens(run) {
  run.tokens = new Map();
  run.failovers = new Map();
  for (const event of run.events) {
    if (event.type === "token") addTokens(run, event.agent, event.text);
    if (event.type === "agent_placed" && event.replaces) addFailover(run, event.agent, event.replaces);
  }
}

function addTokens(run, agent, text) {
  const had = run.tokens.get(agent) ?? "";
  if (had.length >= MAX_TOKEN_CHARS) return "";
  const added = String(text ?? "").slice(0, MAX_TOKEN_CHARS - had.length);
  run.tokens.set(agent, had + added);
  return added;
}

function addFailover(run, agent, why) {
  const list = run.failovers.get(agent) ?? [];
  if (list.length < 100) list.push(String(why));
  run.failovers.set(agent, list);
}

function agentOf(run, name) {
  if (!run.agents[name]) {
    run.agents[name] = { status: "pending", node_id: null, node_name: null, model: null, attempts: 0,
      started_at: null, finished_at: null, output: null, error: null, usage: null };
  }
  return run.agents[name];
}

/** Folds one event into the run; answers what must be drawn again. */
function applyEvent(run, event) {
  run.events.push(event);
  if (run.events.length > MAX_EVENTS) run.events.splice(0, run.events.length - MAX_EVENTS);
  const agent = typeof event.agent === "string" ? agentOf(run, event.agent) : null;
  switch (event.type) {
    case "run_began":
      Object.assign(run, { status: "running", active: true, finished_at: null });
      for (const name of event.agents ?? []) {
        const each = agentOf(run, name);
        if (event.resumed && each.status !== "completed") each.status = "pending";
      }
      return "structure";
    case "agent_began":
      Object.assign(agent, { status: "running", error: null, node_id: event.node_id ?? agent.node_id,
        model: event.model ?? agent.model, attempts: Math.max(agent.attempts ?? 0, event.attempt ?? 0) });
      agent.node_name = nodeName(event.node_id) ?? agent.node_name;
      if (!isNum(agent.started_at)) agent.started_at = event.at;
      return "structure";
    case "agent_placed":
      agent.node_id = event.node_id;
      agent.node_name = event.node_name ?? nodeName(event.node_id) ?? event.node_id;
      if (event.replaces) addFailover(run, event.agent, event.replaces);
      return "structure";
    case "agent_working":
      agent.status = "running";
      agent.node_id = event.node_id ?? agent.node_id;
      agent.node_name = nodeName(agent.node_id) ?? agent.node_name;
      return "structure";
    case "token":
      return addTokens(run, event.agent, event.text) ? "token" : "none";
    case "agent_ended":
      for (const field of ["status", "node_id", "model", "attempts", "started_at", "finished_at", "error", "usage"]) {
        if (event[field] !== undefined) agent[field] = event[field];
      }
      agent.node_name = nodeName(event.node_id) ?? agent.node_name;
      return "ended";
    case "agent_retrying":
      agent.error = event.error ?? null;
      agent.attempts = Math.max(agent.attempts ?? 0, event.attempt ?? 0);
      return "structure";
    case "run_finished":
      Object.assign(run, { status: event.status, active: false, finished_at: event.at });
      if (event.deliverable !== undefined) run.deliverable = event.deliverable;
      return "ended";
    default:
      return "none";  // a kind this page does not know yet: kept in the log, drawn by nothing
  }
}

let refreshTimer = 0;

function onRunEvent(data) {
  const event = data?.event;
  if (!event || typeof event.type !== "string") return;
  if (isNum(event.at)) state.skew = event.at - Date.now() / 1000;
  if (data.run_id !== state.runId) return;
  if (!state.run) {
    if (state.buffered.length < MAX_EVENTS) state.buffered.push(event);
    return;
  }
  switch (applyEvent(state.run, event)) {
    case "token":
      if (!state.pinned && state.selected === null) select(event.agent, false);
      else if (event.agent === state.selected) appendTokens(event.text);
      return;
    case "structure":
      schedule("head", "dag", "timeline", "agent");
      return;
    case "ended":
      schedule("head", "dag", "timeline", "agent", "results");
      // An agent's result is not in its event: fetch the run once things settle.
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => background(refreshRun()), 300);
      return;
    default:
  }
}

// ---- one run: drawing it -----------------------------------------------------------------------

function clearRunView(runId) {
  const box = $("#run");
  box.dataset.runId = runId;
  box.dataset.status = "";
  $("#run-ensemble").textContent = runId;
  $("#run-status").textContent = "loading";
  for (const id of ["#run-meta", "#run-error", "#run-input", "#agent-name", "#tokens", "#deliverable"]) $(id).textContent = "";
  $("#agent-meta").textContent = "Select an agent in the graph to follow its tokens.";
  for (const id of ["#dag", "#timeline", "#results"]) $(id).replaceChildren();
  delete $("#dag").dataset.shape;
  $("#cancel-run").disabled = true;
  $("#resume-run").disabled = true;
}

/** "1234 tokens" spent by a run, from its journal (usage: prompt and completion tokens). */
function spentText(usage) {
  if (!usage || !isNum(usage.prompt_tokens) || !isNum(usage.completion_tokens)) return "";
  return `${usage.prompt_tokens + usage.completion_tokens} tokens`;
}

/** "budget 120/200 tokens, 3.2/10 s (spent)" for a run's or an agent's budget report. */
function budgetText(budget) {
  if (!budget) return "";
  const caps = [isNum(budget.max_tokens) ? `${budget.used_tokens}/${budget.max_tokens} tokens` : "",
    isNum(budget.max_seconds) ? `${Number(budget.used_seconds).toFixed(1)}/${budget.max_seconds} s` : ""];
  return `budget ${caps.filter(Boolean).join(", ")}${budget.exhausted ? " (spent)" : ""}`;
}

function renderRunHead(run) {
  const box = $("#run");
  box.dataset.runId = run.run_id;
  box.dataset.status = run.status;
  $("#run-ensemble").textContent = run.ensemble;
  const status = $("#run-status");
  status.textContent = run.active ? `${run.status} · live` : run.status;
  status.className = `badge status-${run.status}`;
  const end = isNum(run.finished_at) ? run.finished_at : run.active ? serverNow() : null;
  const agents = Object.values(run.agents);
  const done = agents.filter((a) => TERMINAL.has(a.status)).length;
  $("#run-meta").textContent = [`started ${fmtTime(run.started_at)}`, isNum(end) ? fmtDuration(end - run.started_at) : "",
    `${done} of ${agents.length} agents done`, spentText(run.usage), budgetText(run.budget),
    clip(run.run_id, 40)].filter(Boolean).join(" · ");
  $("#run-input").textContent = run.input ?? "";
  $("#cancel-run").disabled = !run.active;
  $("#resume-run").disabled = run.active || run.status === "completed";
  const deliverable = $("#deliverable");
  if (deliverable.textContent !== (run.deliverable ?? "")) deliverable.textContent = run.deliverable ?? "";
}

/** The run's agents in the graph's order, then the ones the graph does not name (fan-out, nested). */
function agentOrder(run) {
  const names = (run.graph?.agents ?? []).map((a) => a.name);
  const known = new Set(names);
  return names.concat(Object.keys(run.agents).filter((name) => !known.has(name)));
}

/** The graph agent an instance belongs to: `name[2]` and `name/child` are drawn under `name`. */
function baseOf(name) {
  return name.split("/")[0].replace(/\[\d+\]$/, "");
}

/**
 * Places a graph's agents in layers, each one layer below the longest chain of agents it
 * depends on; instances (`extra` names) go into their base agent's layer after it.
 */
function layoutGraph(graph, extra = []) {
  const specs = new Map((graph?.agents ?? []).map((a) => [a.name, a]));
  const layer = new Map();
  const visiting = new Set();
  const depth = (name) => {
    if (layer.has(name)) return layer.get(name);
    if (visiting.has(name)) return 0;  // a cycle: the ensemble is invalid and says so; draw it anyway
    visiting.add(name);
    const deps = (specs.get(name)?.depends_on ?? []).filter((d) => specs.has(d));
    const value = deps.length ? 1 + Math.max(...deps.map(depth)) : 0;
    visiting.delete(name);
    layer.set(name, value);
    return value;
  };
  const rows = [];
  const put = (box) => (rows[box.layer] ??= []).push(box);
  const instances = new Map();
  const strays = [];
  for (const name of extra) {
    const base = baseOf(name);
    if (specs.has(base)) (instances.get(base) ?? instances.set(base, []).get(base)).push(name);
    else strays.push(name);
  }
  for (const name of specs.keys()) {
    put({ name, layer: depth(name), spec: specs.get(name), instance: false });
    for (const child of instances.get(name) ?? []) put({ name: child, layer: depth(name), spec: null, instance: true });
  }
  const strayLayer = rows.length;  // agents the graph cannot account for get a row of their own
  for (const name of strays) put({ name, layer: strayLayer, spec: null, instance: true });
  const W = 156, H = 46, GX = 14, GY = 34, PAD = 6;
  const widest = Math.max(1, ...rows.map((row) => row?.length ?? 0));
  const boxes = new Map();
  rows.forEach((row, i) => (row ?? []).forEach((box, j) => {
    box.x = PAD + (widest - row.length) * (W + GX) / 2 + j * (W + GX);
    box.y = PAD + i * (H + GY);
    box.w = W;
    box.h = H;
    boxes.set(box.name, box);
  }));
  const edges = [];
  for (const [name, spec] of specs) {
    for (const dep of spec.depends_on ?? []) if (specs.has(dep)) edges.push([boxes.get(dep), boxes.get(name)]);
  }
  return { boxes: [...boxes.values()], edges, width: 2 * PAD + widest * (W + GX) - GX, height: 2 * PAD + rows.length * (H + GY) - GY };
}

/** The status a box shows: its own, or for a fan-out drawn as one box, the sum of its instances. */
function boxStatus(run, name) {
  if (run.agents[name]) return run.agents[name].status;
  const parts = Object.entries(run.agents).filter(([n]) => n !== name && baseOf(n) === name).map(([, a]) => a.status);
  if (!parts.length) return "pending";
  for (const status of ["running", "failed", "pending"]) if (parts.includes(status)) return status;
  return parts.every((s) => s === "skipped") ? "skipped" : "completed";
}

function drawGraph(layout, boxClass, describe) {
  const edges = layout.edges.map(([from, to]) => {
    const x1 = from.x + from.w / 2, y1 = from.y + from.h, x2 = to.x + to.w / 2, y2 = to.y, mid = (y1 + y2) / 2;
    return svg("path", { class: "edge", d: `M${x1} ${y1} C${x1} ${mid} ${x2} ${mid} ${x2} ${y2}` });
  });
  const boxes = layout.boxes.map((box) => {
    const { attrs, line } = describe(box);
    return svg("g", { class: `${boxClass}${box.instance ? " instance" : ""}`, tabindex: 0, role: "button", ...attrs },
      svg("title", {}, `${box.name}\n${line}`),
      svg("rect", { x: box.x, y: box.y, width: box.w, height: box.h, rx: 6 }),
      svg("text", { x: box.x + 8, y: box.y + 18, class: "label" }, clip(box.name, 22)),
      svg("text", { x: box.x + 8, y: box.y + 36, class: "sub" }, clip(line, 24)));
  });
  return svg("svg", { viewBox: `0 0 ${layout.width} ${layout.height}`, width: layout.width, height: layout.height,
    "aria-label": "agent graph" }, ...edges, ...boxes);
}

function renderDag(run) {
  const order = agentOrder(run);
  const inGraph = new Set((run.graph?.agents ?? []).map((a) => a.name));
  const layout = layoutGraph(run.graph, order.filter((n) => !inGraph.has(n)));
  const describe = (box) => {
    const agent = run.agents[box.name];
    const status = boxStatus(run, box.name);
    const moved = run.failovers.get(box.name)?.length ?? 0;
    const line = [agent?.node_name ?? (status === "pending" ? "not placed" : "–"),
      agent?.attempts > 1 ? `${agent.attempts} tries` : "", moved ? `moved ${moved}×` : ""].filter(Boolean).join(" · ");
    return { attrs: { "data-agent": box.name, "data-status": status, "data-node-name": agent?.node_name ?? "",
      class: `dag-agent status-${status}${box.name === state.selected ? " selected" : ""}${box.instance ? " instance" : ""}` },
    line };
  };
  const dag = $("#dag");
  const shape = layout.boxes.map((box) => box.name).join("\n");
  if (dag.dataset.shape !== shape) {
    dag.dataset.shape = shape;
    dag.replaceChildren(drawGraph(layout, "dag-agent", describe));
    return;
  }
  // The same boxes: changed in place, so that a box being clicked is not replaced under the pointer.
  const drawn = dag.querySelectorAll(".dag-agent");
  layout.boxes.forEach((box, i) => {
    const { attrs, line } = describe(box);
    setAttrs(drawn[i], attrs);
    drawn[i].querySelector("title").textContent = `${box.name}\n${line}`;
    drawn[i].querySelector(".sub").textContent = clip(line, 24);
  });
}

function select(name, pinned) {
  state.selected = name;
  state.pinned = state.pinned || pinned;
  for (const box of document.querySelectorAll("#dag .dag-agent")) box.classList.toggle("selected", box.dataset.agent === name);
  schedule("agent");
}

function renderAgent(run) {
  const name = state.selected;
  if (name === null) return;
  const agent = run.agents[name];
  $("#agent-name").textContent = name;
  const moved = run.failovers.get(name) ?? [];
  $("#agent-meta").textContent = agent ? [agent.status, agent.node_name && `on ${agent.node_name}`, agent.model,
    agent.attempts ? `attempt ${agent.attempts}` : "", moved.length ? `moved: ${moved.join("; ")}` : "",
    agent.usage ? `${agent.usage.prompt_tokens} prompt + ${agent.usage.completion_tokens} completion tokens` : "",
    budgetText(agent.budget), agent.error ? `error: ${agent.error}` : ""].filter(Boolean).join(" · ") : "not started";
  const text = run.tokens.get(name) || agent?.output || "";
  const tokens = $("#tokens");
  if (tokens.textContent !== text) tokens.textContent = text;
}

function appendTokens(text) {
  const tokens = $("#tokens");
  const follow = tokens.scrollTop + tokens.clientHeight >= tokens.scrollHeight - 8;
  if (tokens.textContent.length < MAX_TOKEN_CHARS) tokens.append(String(text ?? ""));
  if (follow) tokens.scrollTop = tokens.scrollHeight;
}

function renderResults(run) {
  const items = agentOrder(run).map((name) => [name, run.agents[name]])
    .filter(([, agent]) => agent && (agent.output || agent.error))
    .map(([name, agent]) => el("details", { class: "result", "data-agent": name, "data-status": agent.status },
      el("summary", {}, el("strong", {}, name), ` · ${agent.status}`, agent.node_name ? ` · ${agent.node_name}` : ""),
      agent.error ? el("p", { class: "error" }, agent.error) : null,
      agent.output ? el("pre", {}, agent.output) : null));
  $("#results").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "No results yet.")]));
}

// ---- one run: its timeline ----------------------------------------------------------------------

/**
 * One bar per agent attempt on its node, from the run's events: placed → working is a wait,
 * working → ended (or → placed elsewhere, on a failover) is work. A run known only from its
 * journal has no events: one work bar per agent, from its start to its end. Open bars end `now`.
 */
function timelineBars(run, now) {
  const bars = [];
  if (!run.events.length) {
    for (const name of agentOrder(run)) {
      const agent = run.agents[name];
      if (!agent || !isNum(agent.started_at)) continue;
      const open = !isNum(agent.finished_at);
      bars.push({ agent: name, node: agent.node_name ?? "", kind: "work", start: agent.started_at,
        end: open ? (run.active ? now : agent.started_at) : agent.finished_at, open: open && run.active, outcome: agent.status });
    }
    return bars;
  }
  const open = new Map();     // agent -> its bar still going
  const began = new Map();    // agent -> the event that began its current attempt
  const drawn = new Set();    // agents with a bar in their current attempt
  const close = (name, at, outcome) => {
    const bar = open.get(name);
    if (!bar) return null;
    Object.assign(bar, { end: Math.max(at, bar.start), open: false, outcome });
    open.delete(name);
    return bar;
  };
  const begin = (name, kind, node, at) => {
    const bar = { agent: name, node, kind, start: at, end: at, open: true, outcome: "running" };
    bars.push(bar);
    open.set(name, bar);
    drawn.add(name);
    return bar;
  };
  let last = run.started_at;
  for (const event of run.events) {
    const name = event.agent;
    const at = event.at;
    if (!isNum(at)) continue;
    last = Math.max(last ?? at, at);
    switch (event.type) {
      case "agent_began":
        close(name, at, "retried");
        began.set(name, event);
        drawn.delete(name);
        break;
      case "agent_placed":
        close(name, at, "moved");
        begin(name, "wait", event.node_name ?? nodeName(event.node_id) ?? event.node_id ?? "", at);
        break;
      case "agent_working": {
        const wait = open.get(name)?.kind === "wait" ? close(name, at, "waited") : close(name, at, "moved");
        const waited = isNum(event.waited_s) ? event.waited_s : wait ? wait.end - wait.start : 0;
        if (wait?.kind === "wait" && waited < MIN_WAIT_S) bars.splice(bars.indexOf(wait), 1);
        begin(name, "work", nodeName(event.node_id) ?? wait?.node ?? event.node_id ?? "", at);
        break;
      }
      case "agent_retrying":
        close(name, at, "failed");
        break;
      case "agent_ended":
        if (open.has(name)) close(name, at, event.status);
        else if (!drawn.has(name) && event.status !== "skipped") {
          // An agent that ran where it was asked (a script, a local step) has no placement events.
          const from = isNum(event.started_at) ? event.started_at : began.get(name)?.at ?? at;
          const to = isNum(event.finished_at) ? event.finished_at : at;
          begin(name, "work", nodeName(event.node_id) ?? run.agents[name]?.node_name ?? "", from);
          close(name, Math.max(to, from), event.status);
        }
        break;
      case "run_finished":
        for (const each of [...open.keys()]) close(each, at, event.status);
        break;
      default:
    }
  }
  const end = run.active ? now : isNum(run.finished_at) ? run.finished_at : last;
  for (const bar of open.values()) {
    bar.end = Math.max(bar.start, end);
    bar.open = run.active;
  }
  return bars;
}

function niceStep(span, ticks) {
  for (const step of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400]) {
    if (span / step <= ticks) return step;
  }
  return 86400 * Math.ceil(span / ticks / 86400);
}

function renderTimeline(run) {
  const box = $("#timeline");
  if (box.closest("[hidden]")) return;  // drawn when shown, at the width it then has
  const bars = timelineBars(run, serverNow());
  if (!bars.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No agent has started yet."));
    return;
  }
  const names = [...new Set(agentOrder(run).filter((n) => bars.some((b) => b.agent === n))
    .concat(bars.map((b) => b.agent)))];
  const width = Math.max(280, box.clientWidth);
  const label = Math.min(150, Math.round(width * 0.3));
  const top = 22, row = 26, right = 10;
  const t0 = Math.min(...bars.map((b) => b.start), isNum(run.started_at) ? run.started_at : Infinity);
  const t1 = Math.max(...bars.map((b) => b.end), t0 + 1);
  const x = (t) => label + ((t - t0) / (t1 - t0)) * (width - label - right);
  const height = top + names.length * row + 4;
  const parts = [];
  const step = niceStep(t1 - t0, Math.max(2, Math.floor((width - label) / 70)));
  for (let t = 0; t <= t1 - t0 + 1e-9; t += step) {
    parts.push(svg("line", { class: "tick", x1: x(t0 + t), x2: x(t0 + t), y1: top - 4, y2: height }),
      svg("text", { class: "tick-label", x: x(t0 + t) + 2, y: 13 }, `+${fmtDuration(t).replace(".0 s", " s")}`));
  }
  names.forEach((name, i) => {
    parts.push(svg("text", { class: "row-label", x: 4, y: top + i * row + 17 }, clip(name, Math.floor(label / 7.5))));
  });
  for (const bar of bars) {
    const i = names.indexOf(bar.agent);
    const bx = x(bar.start);
    const bw = Math.max(2, x(bar.end) - bx);
    const y = top + i * row + 4;
    const took = fmtDuration(bar.end - bar.start);
    parts.push(svg("rect", { class: `bar ${bar.kind} outcome-${bar.outcome}${bar.open ? " open" : ""}`, x: bx, y, width: bw,
      height: row - 8, rx: 3, "data-agent": bar.agent, "data-node-name": bar.node, "data-kind": bar.kind },
    svg("title", {}, `${bar.agent} on ${bar.node || "?"}: ${bar.kind === "wait" ? "waited" : "worked"} ${took} (${bar.outcome})`)));
    if (bar.kind === "work" && bw > bar.node.length * 6.5 + 8) {
      parts.push(svg("text", { class: "bar-label", x: bx + 4, y: y + 13 }, bar.node));
    }
  }
  box.replaceChildren(svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "timeline of agent attempts" }, ...parts));
}

// ---- ensembles ----------------------------------------------------------------------------------

async function loadEnsembles() {
  const answer = await api("GET", "/api/ensembles");
  state.ensembles = answer.ensembles ?? [];
  schedule("ensembles");
}

function renderEnsembles() {
  const picker = $("#start-run").elements.ensemble;
  const chosen = picker.value;
  picker.replaceChildren(...state.ensembles.map((e) => el("option", { value: e.name, disabled: !e.valid },
    e.valid ? e.name : `${e.name} (invalid)`)));
  if (state.ensembles.some((e) => e.name === chosen && e.valid)) picker.value = chosen;
  const cards = state.ensembles.map((e) => el("article", { class: "ensemble card", "data-name": e.name, "data-valid": String(e.valid) },
    el("header", {}, el("span", { class: "ensemble-name" }, e.name),
      el("span", { class: `badge ${e.valid ? "valid" : "invalid"}` }, e.valid ? "valid" : "invalid"),
      e.valid ? el("button", { type: "button", class: "quiet run-this", "data-name": e.name }, "Run…") : null),
    e.description ? el("p", {}, e.description) : null,
    e.problems?.length ? el("ul", { class: "problems" }, ...e.problems.map((p) => el("li", {}, p))) : null,
    e.graph ? el("div", { class: "scroll graph" }, drawGraph(layoutGraph(e.graph), "graph-agent", (box) => ({
      attrs: { "data-agent": box.name, class: `graph-agent kind-${box.spec?.kind ?? "llm"}` },
      line: [box.spec?.kind, box.spec?.model].filter(Boolean).join(" · ") }))) : null));
  $("#ensembles").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted" }, "No ensembles on this node.")]));
}

// ---- wiring -------------------------------------------------------------------------------------

function onGraphClick(event) {
  const target = event.target.closest("[data-agent]");
  if (target && state.run) select(target.dataset.agent, true);
}

function tick() {
  for (const node of document.querySelectorAll("#mesh .last-seen[data-last-seen]")) {
    const at = parseFloat(node.dataset.lastSeen);
    node.textContent = `last seen ${fmtAgo(isNum(at) ? at : null)}`;
  }
  if (state.run?.active && !$("#view-run").hidden) schedule("head", "timeline");
}

function boot() {
  $("#login-form").addEventListener("submit", login);
  $("#start-run").addEventListener("submit", startRun);
  $("#logout").addEventListener("click", () => background(logout()));
  $("#cancel-run").addEventListener("click", () => background(cancelRun(), $("#run-error")));
  $("#resume-run").addEventListener("click", () => background(resumeRun(), $("#run-error")));
  for (const id of ["#dag", "#timeline"]) {
    $(id).addEventListener("click", onGraphClick);
    $(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onGraphClick(event);
      }
    });
  }
  $("#ensembles").addEventListener("click", (event) => {
    const button = event.target.closest("button.run-this");
    if (!button) return;
    $("#start-run").elements.ensemble.value = button.dataset.name;
    location.hash = "#/runs";
    $("#start-run").elements.input.focus();
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => schedule("timeline"));
  setInterval(tick, 1000);
  background(probe());
}

boot();
