// abguard's risk dashboard: the tests from /v1/tests, one test's risk_dashboard document, live
// updates from the /v1/watch Server-Sent Events. No framework, no build step.
"use strict";

const state = { selected: null, tests: new Map() };

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

async function getJSON(path) {
  const answer = await fetch(path, { headers: { Accept: "application/json" } });
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return answer.json();
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
    row.addEventListener("click", () => select(test.test_id));
    body.append(row);
  }
}

async function loadTests() {
  const listing = await getJSON("/v1/tests");
  const policy = listing.policy;
  document.getElementById("policy").textContent = `policy ${policy.name} v${policy.version} ${policy.digest.slice(0, 19)}...`;
  state.tests = new Map(listing.tests.map((test) => [test.test_id, test]));
  renderTests();
  if (state.selected === null && listing.tests.length > 0) {
    const rolledBack = listing.tests.find((t) => t.test_status.startsWith("roll"));
    await select((rolledBack || listing.tests[0]).test_id);
  }
}

async function select(testId) {
  state.selected = testId;
  renderTests();
  const doc = await getJSON(`/v1/tests/${encodeURIComponent(testId).replace(/%2F/g, "/")}/dashboard`);
  renderDetail(doc);
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
  renderHealth(dash);
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
    body.append(el("tr", {},
      el("td", { text: c.name }),
      el("td", { class: `status-${c.status}`, text: c.status }),
      el("td", { text: score(c.weight) }),
      el("td", { text: score(c.contribution) }),
      fired));
  }
}

function renderHealth(dash) {
  const health = dash.test_health, trends = dash.rolling_metrics;
  const arms = health.performance_comparison;
  const arm = (name) => `${name}: accuracy ${arms[name].accuracy ?? "-"}, latency ${arms[name].latency_ms ?? "-"} ms`;
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
  const source = new EventSource("/v1/watch");
  source.onopen = () => { live.textContent = "live"; live.className = "pill on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "pill off"; };
  source.addEventListener("decision", async (event) => {
    const decision = JSON.parse(event.data);
    try {
      const test = await getJSON(`/v1/tests/${encodeURIComponent(decision.test_id).replace(/%2F/g, "/")}`);
      state.tests.set(test.test_id, test);
      renderTests();
      if (state.selected === null || state.selected === decision.test_id) await select(decision.test_id);
    } catch (error) {
      console.warn(error);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  loadTests().catch((error) => console.warn(error));
  watch();
});
