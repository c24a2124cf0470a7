// abguard's risk dashboard: the tests from /v1/tests, one test's risk_dashboard document, live
// updates from the /v1/watch Server-Sent Events. No framework, no build step.
//
// Who is looking: GET /v1/whoami first. A 401 shows the sign-in form (a pasted token goes once to
// POST /v1/session as a Bearer header; the server answers with an HttpOnly cookie the page itself
// never sees, which EventSource sends too). The operator controls (roll back, restart, reload the
// policy) are built only when whoami's permissions hold "operate"; otherwise they are not in the DOM.
"use strict";

const state = { selected: null, tests: new Map(), who: null, source: null, retry: null, generation: 0 };
const DASHBOARD_HEADER = { "X-Abguard-Dashboard": "1" }; // the server's proof a cookie-borne change comes from this page

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- talking to the server ------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

class SignedOut extends Error {} // a 401 already handled (back to the form): callers stop quietly

async function problemDetail(answer) {
  // problem+json's detail, with the fields it blames; a bare status when the body is something else
  try {
    const body = await answer.json();
    const fields = (body.errors || []).map((e) => `${e.field}: ${e.message}`).join("; ");
    const detail = body.detail || `HTTP ${answer.status}`;
    return fields && !detail.includes(fields) ? `${detail} (${fields})` : detail;
  } catch {
    return `HTTP ${answer.status} ${answer.statusText}`.trim();
  }
}

// Every call but the sign-in: same-origin credentials (the cookie), the dashboard header on anything
// that is not a GET. 401: the session is gone, back to the form. Other failures throw ApiError with
// the problem's detail for the caller to show.
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") Object.assign(headers, DASHBOARD_HEADER);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const generation = state.generation;
  const answer = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (generation !== state.generation) throw new SignedOut("signed in or out meanwhile"); // an answer for the last session
  if (answer.status === 401) {
    signedOut(`Signed out: ${await problemDetail(answer)}`);
    throw new SignedOut("401");
  }
  if (!answer.ok) throw new ApiError(answer.status, await problemDetail(answer));
  return answer.status === 204 ? null : answer.json();
}

const getJSON = (path) => api(path);

function notify(message, kind = "error") {
  const notice = document.getElementById("notice");
  notice.textContent = message;
  notice.className = kind;
  notice.hidden = !message;
}

// A failure no control owns (a read, the live stream): 403/429 and the rest show their detail.
function reported(error) {
  if (error instanceof SignedOut) return;
  if (error instanceof ApiError) notify(error.message);
  else console.warn(error);
}

// --- who is looking -------------------------------------------------------------------------------
const anonymous = () => state.who !== null && (state.who.identity === null || state.who.via === "anonymous");
const may = (permission) => state.who !== null && (state.who.permissions || []).includes(permission);

// The first look: a 401 here is no ended session, just none yet (the form, without a message).
async function begin() {
  let answer;
  try {
    answer = await fetch("/v1/whoami", { headers: { Accept: "application/json" }, credentials: "same-origin" });
  } catch (error) {
    notify(`cannot reach the server: ${error.message}`);
    return;
  }
  if (answer.status === 401) signedOut("");
  else if (!answer.ok) notify(`cannot tell who you are (HTTP ${answer.status}): ${await problemDetail(answer)}; reload to retry`);
  else enter(await answer.json());
}

function enter(who) {
  state.who = who;
  document.getElementById("signin").hidden = true;
  document.getElementById("content").hidden = false;
  const label = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  if (anonymous()) { // no auth file: nothing to sign in to or out of
    label.hidden = true;
    signOut.hidden = true;
  } else {
    label.replaceChildren("signed in as ", el("strong", { text: who.identity }),
      el("span", { class: "muted", text: ` (${(who.roles || []).join(", ") || "no role"})` }));
    label.hidden = false;
    signOut.hidden = false;
  }
  renderOperatorBar();
  loadTests().catch(reported);
  watch();
}

function signedOut(message = "") {
  state.generation += 1; // answers still on their way belong to the session that ended
  state.who = null;
  state.selected = null;
  state.tests = new Map();
  if (state.source !== null) state.source.close();
  state.source = null;
  clearTimeout(state.retry);
  const live = document.getElementById("live");
  live.textContent = "signed out";
  live.className = "pill off";
  document.getElementById("content").hidden = true;
  document.getElementById("detail").hidden = true;
  document.querySelector("#tests tbody").replaceChildren();
  document.getElementById("actions").replaceChildren();
  document.getElementById("operator-bar").replaceChildren();
  document.getElementById("policy").textContent = "";
  document.getElementById("who").hidden = true;
  document.getElementById("sign-out").hidden = true;
  notify("");
  document.getElementById("signin").hidden = false;
  const error = document.getElementById("signin-error");
  error.textContent = message;
  error.hidden = !message;
  document.getElementById("signin-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("signin-token");
  const error = document.getElementById("signin-error");
  const button = document.getElementById("signin-submit");
  const token = input.value.trim();
  if (!token) return;
  button.disabled = true;
  error.hidden = true;
  try {
    const answer = await fetch("/v1/session", {
      method: "POST", credentials: "same-origin",
      headers: { Accept: "application/json", Authorization: `Bearer ${token}`, ...DASHBOARD_HEADER },
    });
    if (!answer.ok) {
      error.textContent = await problemDetail(answer);
      error.hidden = false;
      return;
    }
    const who = await answer.json();
    input.value = "";
    state.generation += 1;
    enter(who);
  } catch (failure) {
    error.textContent = `cannot reach the server: ${failure.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    await api("/v1/session", { method: "DELETE" });
  } catch (error) {
    if (error instanceof SignedOut) return;
    if (error instanceof ApiError) { notify(`sign out failed: ${error.message}`); return; }
    throw error;
  }
  signedOut("");
}

// --- what an operator may do ----------------------------------------------------------------------
// A control that asks for a reason: the button opens a small form; its answer (or the problem's
// detail) shows beside it.
function reasonForm(name, label, extraFields, send) {
  const box = el("div", { class: `action ${name}` });
  const open = el("button", { type: "button", class: `open-${name}`, text: label });
  const reason = el("input", { type: "text", name: "reason", class: "reason", required: "", maxlength: "500",
    placeholder: "reason (recorded)", "aria-label": `${label}: reason` });
  const confirm = el("button", { type: "submit", class: `confirm-${name}`, text: `Confirm ${label.toLowerCase()}` });
  const cancel = el("button", { type: "button", class: "cancel", text: "Cancel" });
  const form = el("form", { class: "reason-form" }, reason, ...extraFields, confirm, cancel);
  const result = el("p", { class: "result", role: "status", hidden: "" });
  form.hidden = true;
  open.addEventListener("click", () => {
    form.hidden = false;
    open.hidden = true;
    result.hidden = true;
    reason.focus();
  });
  cancel.addEventListener("click", () => { form.hidden = true; open.hidden = false; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!reason.value.trim()) return;
    confirm.disabled = true;
    try {
      result.textContent = await send(reason.value.trim());
      result.className = "result ok";
      form.hidden = true;
      open.hidden = false;
      reason.value = "";
    } catch (error) {
      if (error instanceof SignedOut) return; // the page is back at the sign-in form
      result.textContent = error instanceof ApiError ? `${label} refused (HTTP ${error.status}): ${error.message}` : String(error);
      result.className = "result error";
    } finally {
      confirm.disabled = false;
    }
    result.hidden = false;
  });
  box.append(open, form, result);
  return box;
}

const testPath = (testId) => `/v1/tests/${encodeURIComponent(testId).replace(/%2F/g, "/")}`;

function renderActions(testId) {
  const actions = document.getElementById("actions");
  actions.replaceChildren();
  if (!may("operate")) return; // a viewer's page holds no control that could act
  // without an auth file the server knows no one: a rollback must then say who asks for it
  const requester = anonymous()
    ? [el("input", { type: "text", name: "requested_by", class: "requested-by", required: "", maxlength: "200",
      placeholder: "requested by (recorded)", "aria-label": "Roll back: requested by" })]
    : [];
  actions.append(
    reasonForm("rollback", "Roll back", requester, async (reason) => {
      const body = { reason };
      if (requester.length) body.requested_by = requester[0].value.trim();
      const record = await api(`${testPath(testId)}/rollback`, { method: "POST", body });
      await refresh(testId);
      return `rollback ${record.rollback_id} ${record.status}: requested by ${record.requested_by}`;
    }),
    reasonForm("restart", "Restart", [], async (reason) => {
      const answer = await api(`${testPath(testId)}/restart`, { method: "POST", body: { reason } });
      await refresh(testId);
      return `restarted at ${answer.restarted_at}: ${answer.test_status}`;
    }));
}

function renderOperatorBar() {
  const bar = document.getElementById("operator-bar");
  bar.replaceChildren();
  if (!may("operate")) return;
  const button = el("button", { type: "button", id: "reload-policy", text: "Reload policy",
    title: "read the policies folder again now (POST /v1/policy/reload)" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const status = await api("/v1/policy/reload", { method: "POST", body: { reason: "from the dashboard" } });
      showPolicy(status.policy);
      const refused = status.rejected ? `; the last refused policy (${status.rejected.digest.slice(0, 19)}...): ${status.rejected.why}` : "";
      notify(`policy in force: ${status.policy.name} v${status.policy.version}, loaded at ${status.loaded_at}${refused}`, "ok");
    } catch (error) {
      if (error instanceof ApiError) notify(`reload refused (HTTP ${error.status}): ${error.message}`);
      else reported(error);
    } finally {
      button.disabled = false;
    }
  });
  bar.append(button);
}

async function refresh(testId) {
  try {
    const test = await getJSON(testPath(testId));
    state.tests.set(test.test_id, test);
    renderTests();
    if (state.selected === testId) await select(testId, false);
  } catch (error) {
    reported(error);
  }
}

const pct = (value) => (value === null || value === undefined ? "-" : `${Number(value).toFixed(1).replace(/\.0$/, "")}%`);
const score = (value) => (value === null || value === undefined ? "-" : Number(value).toFixed(2));

function renderTests() {
  const body = document.querySelector("#tests tbody");
  body.replaceChildren();
  const tests = [...state.tests.values()].sort((a, b) => a.test_id.localeCompare(b.test_id));
  document.getElementById("no-tests").hidden = tests.length > 0;
  for (const test of tests) {
    const last = test.last_decision || {};
    const row = el("tr", { "data-test": test.test_id },
      el("td", { text: test.test_id }),
      el("td", { class: `status-${test.test_status}`, text: test.test_status }),
      el("td", { class: `level-${last.risk_level}`, text: last.risk_level || "-" }),
      el("td", { text: score(last.risk_score) }),
      el("td", { text: pct(test.target_rollout_percent) }),
      el("td", { text: last.action || "-" }),
      el("td", { text: String(test.decisions) }));
    if (test.test_id === state.selected) row.classList.add("selected");
    row.addEventListener("click", () => select(test.test_id).catch(reported));
    body.append(row);
  }
}

function showPolicy(policy) {
  document.getElementById("policy").textContent = `policy ${policy.name} v${policy.version} ${policy.digest.slice(0, 19)}...`;
}

async function loadTests() {
  const listing = await getJSON("/v1/tests");
  showPolicy(listing.policy);
  state.tests = new Map(listing.tests.map((test) => [test.test_id, test]));
  renderTests();
  if (state.selected === null && listing.tests.length > 0) {
    const rolledBack = listing.tests.find((t) => t.test_status.startsWith("roll"));
    await select((rolledBack || listing.tests[0]).test_id);
  }
}

async function select(testId) {
  const changed = state.selected !== testId;
  state.selected = testId;
  renderTests();
  if (changed) renderActions(testId); // once per selection: a live update leaves an open reason form alone
  const doc = await getJSON(`${testPath(testId)}/dashboard`);
  if (state.selected === testId) renderDetail(doc);
}

function renderDetail(doc) {
  const dash = doc.risk_dashboard;
  document.getElementById("detail").hidden = false;
  const title = document.getElementById("detail-title");
  title.replaceChildren(`${dash.test_id} `,
    el("span", { class: `status-${doc.test.test_status}`, text: doc.test.test_status }), " ",
    el("span", { class: `level-${dash.overall_risk_level}`, text: `risk ${dash.overall_risk_level} (${score(dash.risk_score)})` }));
  document.getElementById("detail-reason").textContent = `${dash.action} at ${dash.as_of}: ${doc.test.last_decision.reason}`;
  renderChart(dash.series);
  renderConditions(doc.test.last_decision.conditions || []);
  renderHealth(dash, doc.test.last_decision.label_lag_seconds || {});
  renderRollbacks(doc.rollbacks || []);
}

function renderChart(series) {
  const width = 1000, height = 220, pad = 24;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const n = Math.max(series.length - 1, 1);
  const x = (i) => pad + (i / n) * (width - 2 * pad);
  const y = (v) => height - pad - v * (height - 2 * pad);
  const line = (values, color) => {
    const path = document.createElementNS(svgNS, "polyline");
    path.setAttribute("points", values.map((v, i) => `${x(i)},${y(v)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", color);
    path.setAttribute("stroke-width", "2");
    svg.append(path);
  };
  line(series.map((p) => Math.min(1, p.risk_score || 0)), "#3366cc");
  line(series.map((p) => (p.target_rollout_percent ?? 0) / 100), "#999");
  series.forEach((p, i) => {
    if (p.action === "continue") return;
    const mark = document.createElementNS(svgNS, "circle");
    mark.setAttribute("cx", x(i));
    mark.setAttribute("cy", y(Math.min(1, p.risk_score || 0)));
    mark.setAttribute("r", "4");
    mark.setAttribute("fill", p.action.includes("rollback") ? "#c0392b" : "#d2691e");
    const tip = document.createElementNS(svgNS, "title");
    tip.textContent = `${p.timestamp}: ${p.action} (risk ${p.risk_level}, ${score(p.risk_score)})`;
    mark.append(tip);
    svg.append(mark);
  });
  document.getElementById("chart").replaceChildren(svg);
}

function renderConditions(conditions) {
  const body = document.querySelector("#conditions tbody");
  body.replaceChildren();
  for (const c of conditions) {
    const fired = el("td");
    for (const indicator of c.indicators || []) {
      const held = indicator.held_seconds ? ` held ${indicator.held_seconds}s` : "";
      fired.append(el("span", { class: "indicator", text: `${indicator.name}: ${indicator.detail}${held}` }));
    }
    if (c.error) fired.append(el("span", { class: "indicator status-error", text: c.error }));
    if (c.note) fired.append(el("span", { class: "indicator status-inconclusive", text: c.note }));
    body.append(el("tr", {},
      el("td", { text: c.name }),
      el("td", { class: `status-${c.status}`, text: c.status }),
      el("td", { text: score(c.weight) }),
      el("td", { text: score(c.contribution) }),
      fired));
  }
}

function lagText(seconds) {
  if (seconds === undefined || seconds === null) return "no labels yet";
  return seconds >= 60 ? `labels ${Math.round(seconds / 60)} min behind` : `labels ${Math.round(seconds)} s behind`;
}

function renderHealth(dash, lags) {
  const health = dash.test_health, trends = dash.rolling_metrics;
  const arms = health.performance_comparison;
  const arm = (name) => `${name}: accuracy ${arms[name].accuracy ?? "-"} (${lagText(lags[name])}), latency ${arms[name].latency_ms ?? "-"} ms`;
  const progress = health.sample_size_progress === null ? "-" : `${Math.round(health.sample_size_progress * 100)}%`;
  document.getElementById("health").replaceChildren(el("div", { class: "card" },
    el("div", { text: `trends: accuracy ${trends.accuracy_trend}, latency ${trends.latency_trend}, throughput ${trends.throughput_trend}, cache ${trends.cache_performance}` }),
    el("div", { text: `statistically significant: ${health.statistical_significance ? "yes" : "no"}; sample size progress ${progress}` }),
    el("div", { text: arm("champion") }),
    el("div", { text: arm("challenger") })));
}

function renderRollbacks(rollbacks) {
  const box = document.getElementById("rollbacks");
  box.replaceChildren();
  if (rollbacks.length === 0) box.append(el("p", { class: "muted", text: "none" }));
  for (const r of rollbacks) {
    const card = el("div", { class: "card rollback" },
      el("div", { text: `rollback ${r.rollback_id.slice(0, 12)} ${r.status}: ${r.trigger} by ${r.requested_by} at ${r.decided_at}` }),
      el("div", { class: "muted", text: r.reason }));
    for (const phase of r.phases) {
      card.append(el("div", { class: `phase status-${phase.state}`, text: `${phase.name}: ${phase.state} (deadline ${phase.deadline})` }));
      for (const step of r.steps.filter((s) => s.phase === phase.name)) {
        card.append(el("div", { class: "step", text: `${step.name} (${step.owner}) ${step.state}` }));
      }
    }
    if (r.recovery) card.append(el("div", { text: `recovery: ${r.recovery.status} (score ${score(r.recovery.score)})` }));
    box.append(card);
  }
}

function watch() {
  const live = document.getElementById("live");
  if (state.source !== null) state.source.close();
  clearTimeout(state.retry);
  const source = new EventSource("/v1/watch"); // no headers possible: the session cookie identifies us
  state.source = source;
  source.onopen = () => { live.textContent = "live"; live.className = "pill on"; };
  source.onerror = () => {
    if (state.source !== source) return;
    live.textContent = "reconnecting";
    live.className = "pill off";
    if (source.readyState !== EventSource.CLOSED) return; // the browser retries a dropped stream itself
    // refused (401, 403, 429: EventSource cannot read why): whoami tells an ended session from the rest
    state.source = null;
    api("/v1/whoami").then(() => {
      live.textContent = "offline";
      notify("the server refused the live stream (too many open, or not allowed); retrying in 10 s");
      state.retry = setTimeout(watch, 10_000);
    }).catch(reported);
  };
  source.addEventListener("decision", async (event) => {
    const decision = JSON.parse(event.data);
    try {
      const test = await getJSON(testPath(decision.test_id));
      state.tests.set(test.test_id, test);
      renderTests();
      if (state.selected === null || state.selected === decision.test_id) await select(decision.test_id);
    } catch (error) {
      reported(error);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signin-form").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", () => signOut().catch(reported));
  begin();
});
