// The lab's web page: job list, job page (live from the event stream), submit form (with the
// service's cost estimate, a dry run, to confirm before the job is sent).
// Plain JavaScript, no build step; everything it loads is served by the API itself.
// The API key stays in sessionStorage (this tab only) and goes out as X-API-Key. Images,
// downloads and the event stream use fetch(), because <img src>, <a href> and EventSource
// cannot send that header.
"use strict";

const KEY = "bolab.apiKey";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const COLUMNS = [
  ["test_error_mean", "test err"], ["test_error_std", "± std"],
  ["test_error_ci95", "95 % interval"], ["train_error_mean", "train err"],
  ["normalized_margin_mean", "norm. margin"], ["steps_mean", "steps"],
  ["interpolated_fraction", "interp."], ["runs", "runs"],
];
const view = document.getElementById("view");
let leave = () => {};  // stops the current page's timers and streams

function apiKey() { return sessionStorage.getItem(KEY) || ""; }
function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    error.detail = detail;
    throw error;
  }
  return response;
}
const getJson = async (path) => (await api(path)).json();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    // Through the CSSOM: the page's CSP refuses inline style attributes.
    else if (k === "style") node.style.cssText = v;
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number" && !Number.isInteger(value)) return Number(value.toPrecision(3)).toString();
  return String(value);
}

// A summary row's value for a column: "test_error_ci95" is the row's [lo, hi] interval.
function column(row, key) {
  if (!key.endsWith("_ci95")) return fmt(row[key]);
  const lo = row[`${key}_lo`], hi = row[`${key}_hi`];
  return lo === null || lo === undefined || hi === null || hi === undefined
    ? "—" : `[${fmt(lo)}, ${fmt(hi)}]`;
}

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function bar(fraction, big = false) {
  const pct = Math.round(100 * fraction);
  return el("span", { class: big ? "bar big" : "bar", role: "progressbar", "aria-valuenow": pct,
    "aria-valuemin": 0, "aria-valuemax": 100 }, el("span", { style: `width:${pct}%` }));
}

function badge(status) { return el("span", { class: `status ${status}`, "data-status": status }, status); }

function showError(error) {
  view.replaceChildren(el("p", { class: "error" },
    error.status === 401 ? "This lab needs an API key: enter it at the top right." : `Error: ${error.message}`));
}

// --- job list -----------------------------------------------------------------------------

async function listPage() {
  view.replaceChildren(el("h1", {}, "Jobs"), el("p", { class: "muted" }, "loading …"));
  let timer = null;
  const draw = async () => {
    try {
      const page = await getJson("/v1/jobs?limit=100");
      const rows = page.items.map((job) => el("tr", { "data-job": job.id },
        el("td", {}, el("a", { href: `#/jobs/${job.id}` }, job.id)),
        el("td", {}, badge(job.status)),
        el("td", {}, job.owner || "—"),
        el("td", {}, bar(job.progress.fraction), " ",
          `${job.progress.runs_done}/${job.progress.runs_total}`),
        el("td", {}, job.queue),
        el("td", { title: job.created_at }, age(job.created_at))));
      view.replaceChildren(el("h1", {}, "Jobs"), rows.length
        ? el("table", { id: "jobs" }, el("thead", {}, el("tr", {},
            ["id", "status", "owner", "progress", "queue", "age"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows))
        : el("p", { class: "muted" }, "No jobs yet. ", el("a", { href: "#/submit" }, "Submit one.")));
    } catch (error) { showError(error); }
  };
  await draw();
  timer = setInterval(draw, 2000);
  return () => clearInterval(timer);
}

// --- job page -----------------------------------------------------------------------------

function axesOf(spec) {
  const grid = (spec && spec.grid) || {};
  const axes = Object.keys(grid);
  return axes.length ? axes : ["n", "d", "gamma"];
}

function plotKind(spec) {
  const grid = (spec && spec.grid) || {};
  return Object.values(grid).filter((v) => v.length > 1).length === 2 ? "heatmap" : "auto";
}

async function download(path, name) {
  const blob = await (await api(path)).blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function* sse(path, signal) {
  // Server-Sent Events over fetch (EventSource cannot send X-API-Key); resumes on a dropped
  // connection with Last-Event-ID, so no event is lost.
  let last = null;
  for (let attempt = 0; attempt < 20 && !signal.aborted; attempt++) {
    try {
      const response = await fetch(path, { signal,
        headers: headers(last ? { "Last-Event-ID": last } : {}) });
      if (!response.ok) throw new Error(`event stream: HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = { id: null, event: "message", data: "" };
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const name = line.slice(0, i), text = line.slice(i + 1).replace(/^ /, "");
            if (name === "data") event.data += text;
            else if (name in event) event[name] = text;
          }
          if (!event.data) continue;
          last = event.id || last;
          attempt = 0;
          const parsed = { ...event, data: JSON.parse(event.data) };
          yield parsed;
          if (parsed.event === "end") return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function jobPage(id) {
  const stop = new AbortController();
  let job;
  try { job = await getJson(`/v1/jobs/${id}`); } catch (error) { showError(error); return () => {}; }
  const refine = job.spec.refine;  // an adaptive boundary search: rounds and a boundary plot
  const axes = refine ? [...axesOf(job.spec).filter((a) => a !== refine.axis), refine.axis] : axesOf(job.spec);
  const kind = plotKind(job.spec);
  const roundText = el("span", { id: "job-round", class: "muted" });
  const boundary = el("img", { class: "plot", id: "boundary-plot", alt: "boundary estimates", hidden: true });
  const status = el("span", { id: "job-status" });
  const progress = el("div", { id: "job-progress" });
  const progressText = el("span", { id: "progress-text", class: "muted" });
  const tbody = el("tbody");
  const plot = el("img", { class: "plot", id: "plot", alt: "mean test error" });
  const plotNote = el("p", { class: "muted", id: "plot-note" }, "The plot appears with the first finished cell.");
  const cancel = el("button", { class: "danger", id: "cancel", onclick: async () => {
    cancel.disabled = true;
    try { setJob(await (await api(`/v1/jobs/${id}/cancel`, { method: "POST" })).json()); }
    catch (error) { alert(error.message); }
  } }, "Cancel job");
  const remove = el("button", { class: "danger", id: "delete", hidden: true, onclick: async () => {
    if (!confirm(`Delete job ${id} and its results for good?`)) return;
    remove.disabled = true;
    try { await api(`/v1/jobs/${id}`, { method: "DELETE" }); location.hash = "#/"; }
    catch (error) { alert(error.message); remove.disabled = false; }
  } }, "Delete job");
  const error = el("p", { class: "error", id: "job-error" });
  let plotBusy = false, plotAgain = false, plotUrl = null, plotRetried = -1;

  function setProgress(p) {
    progress.replaceChildren(bar(p.fraction, true));
    const budget = p.runs_bound == null ? "" : " of the budget";
    progressText.textContent = `${p.runs_done}/${p.runs_total} runs${budget} (${Math.round(100 * p.fraction)} %)`;
    if (p.round != null) setRound(p.round);
  }
  function setRound(k) { roundText.textContent = `round ${k}`; }
  async function showBoundary() {
    // A finished refine job: the boundary estimates against the line axis.
    if (!refine || !TERMINAL.includes(job.status) || !boundary.hidden) return;
    try {
      const blob = await (await api(`/v1/jobs/${id}/plot.png?kind=boundary`)).blob();
      boundary.src = URL.createObjectURL(blob);
      boundary.hidden = false;
    } catch (_) { /* no cells, nothing to draw */ }
  }
  function setStatus(value) {
    job.status = value;
    status.replaceChildren(badge(value));
    cancel.hidden = TERMINAL.includes(value);
    remove.hidden = !TERMINAL.includes(value);  // a queued or running job is cancelled first
  }
  function addRow(row) {
    // A row again (an adaptive job's cell got more seeds in a later round) replaces its old one.
    const tr = el("tr", { "data-index": row.index },
      axes.map((a) => el("td", {}, fmt(row[a]))), COLUMNS.map(([k]) => el("td", {}, column(row, k))));
    const old = tbody.querySelector(`tr[data-index="${row.index}"]`);
    if (old) { old.replaceWith(tr); return; }
    const after = [...tbody.children].find((r) => Number(r.dataset.index) > row.index);
    tbody.insertBefore(tr, after || null);
  }
  function setJob(data) {
    job = data;
    setStatus(data.status);
    setProgress(data.progress);
    (data.summary || []).forEach(addRow);
    error.textContent = data.error ? `Error: ${data.error}` : "";
  }
  async function refreshPlot() {
    // At most one request in flight; cells that finish meanwhile trigger one more.
    if (plotBusy) { plotAgain = true; return; }
    plotBusy = true;
    const cells = tbody.children.length;  // what this image will show
    try {
      const partial = TERMINAL.includes(job.status) ? "" : "&partial=true";
      const blob = await (await api(`/v1/jobs/${id}/plot.png?kind=${kind}${partial}`)).blob();
      if (plotUrl) URL.revokeObjectURL(plotUrl);
      plotUrl = URL.createObjectURL(blob);
      plot.src = plotUrl;
      plot.dataset.cells = String(cells);
      plotNote.textContent = TERMINAL.includes(job.status) ? "" : "live: redrawn as cells finish";
    } catch (_) {
      // No cells yet, or not drawable; or a cell's event came a moment before its results
      // were stored: one more try for these cells, shortly.
      if (!TERMINAL.includes(job.status) && cells && plotRetried !== cells) {
        plotRetried = cells;
        setTimeout(refreshPlot, 1000);
      }
    }
    plotBusy = false;
    if (plotAgain) { plotAgain = false; refreshPlot(); }
  }

  view.replaceChildren(
    el("h1", {}, "Job ", el("code", {}, id), " ", status),
    el("div", { class: "card" },
      progress, el("div", { class: "actions" }, progressText, roundText, cancel, remove,
        el("a", { href: "#", onclick: (e) => { e.preventDefault(); download(`/v1/jobs/${id}/results?format=json`, `${id}.json`); } }, "results JSON"),
        el("a", { href: "#", onclick: (e) => { e.preventDefault(); download(`/v1/jobs/${id}/results?format=csv`, `${id}.csv`); } }, "CSV"),
        el("span", { class: "muted" }, `owner ${job.owner || "—"} · queue ${job.queue} · created ${job.created_at}`)),
      error),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Plot"), plotNote, plot, boundary),
      el("section", { class: "card" }, el("h2", {}, "Spec"), el("pre", { id: "spec" }, JSON.stringify(job.spec, null, 2)))),
    el("section", { class: "card" }, el("h2", {}, "Summary (one row per finished cell)"),
      el("div", { class: "scroll" }, el("table", { id: "summary" },
        el("thead", {}, el("tr", {}, axes.map((a) => el("th", {}, a)), COLUMNS.map(([, h]) => el("th", {}, h)))),
        tbody))));
  setJob(job);
  if (tbody.children.length) refreshPlot();
  showBoundary();
  if (!TERMINAL.includes(job.status)) {
    (async () => {
      for await (const event of sse(`/v1/jobs/${id}/events`, stop.signal)) {
        if (event.event === "status") setStatus(event.data.status);
        else if (event.event === "progress") setProgress(event.data);
        else if (event.event === "cell") { addRow(event.data); refreshPlot(); }
        else if (event.event === "round") setRound(event.data.round);
        else if (event.event === "end") {
          setJob(await getJson(`/v1/jobs/${id}`));
          refreshPlot();
          showBoundary();
        }
      }
    })();
  }
  return () => stop.abort();
}

// --- submit form --------------------------------------------------------------------------

async function submitPage() {
  const examples = await getJson("/v1/examples").catch(() => ({}));
  const names = Object.keys(examples);
  const editor = el("textarea", { id: "spec-editor", spellcheck: "false" });
  const problems = el("div", { class: "error", id: "submit-errors" });
  const notify = el("input", { id: "notify-url", type: "url", size: 50,
    placeholder: "optional: webhook URL to POST the summary to when the job ends" });
  const pick = el("select", { id: "example", onchange: () => load(pick.value) },
    names.map((n) => el("option", { value: n }, n)));
  const load = (name) => {
    editor.value = JSON.stringify(examples[name] || {}, null, 2);
    check();
    hideEstimate();
  };
  const check = () => {
    try { JSON.parse(editor.value); problems.textContent = ""; return true; }
    catch (e) { problems.textContent = `Not valid JSON: ${e.message}`; return false; }
  };
  editor.addEventListener("input", check);
  const estimate = el("div", { class: "card", id: "estimate", hidden: "" });
  const explain = (error) => {
    const detail = Array.isArray(error.detail)
      ? error.detail.map((p) => `${(p.loc || []).filter((x) => x !== "body").join(".") || "spec"}: ${p.msg}`).join("\n")
      : error.message;
    problems.textContent = error.status === 401 ? "Enter an API key at the top right." : detail;
  };
  const query = (dryRun) => {
    const params = new URLSearchParams();
    if (dryRun) params.set("dry_run", "true");
    else if (notify.value) params.set("notify_url", notify.value);
    const text = params.toString();
    return text ? `?${text}` : "";
  };
  const post = (dryRun) => api(`/v1/jobs${query(dryRun)}`, { method: "POST", body: editor.value,
    headers: { "Content-Type": "application/json" } });
  const hideEstimate = () => { estimate.hidden = true; submit.hidden = false; };
  editor.addEventListener("input", hideEstimate);
  // First the service's estimate (a dry run: nothing is stored), then a confirm step.
  const submit = el("button", { class: "primary", id: "submit", onclick: async () => {
    if (!check()) return;
    submit.disabled = true;
    try {
      showEstimate(await (await post(true)).json());
    } catch (error) { explain(error); }
    submit.disabled = false;
  } }, "Submit job…");
  const confirm = el("button", { class: "primary", id: "confirm", onclick: async () => {
    confirm.disabled = true;
    try {
      location.hash = `#/jobs/${(await (await post(false)).json()).id}`;
    } catch (error) { explain(error); hideEstimate(); }
    confirm.disabled = false;
  } }, "Confirm: submit");
  const back = el("button", { id: "estimate-back", onclick: hideEstimate }, "Back to editing");
  const span = (pair, unit) => pair ? `${fmt(pair[0])} – ${fmt(pair[1])}${unit}` : "no data yet";
  function showEstimate(found) {
    problems.textContent = "";
    const rows = [
      ["cells", found.cells],
      ["runs (cached / to train)", `${found.runs} (${found.runs_cached} / ${found.runs_to_train})`],
      ["GD steps", span(found.gd_steps, "")],
      ["wall time, CPU worker", span(found.seconds.cpu, " s")],
      ["wall time, GPU worker", span(found.seconds.gpu, " s")],
      ["peak memory of a batch", `${fmt(found.peak_batch_bytes / 2 ** 20)} MiB`],
    ];
    const over = found.violations.map((v) => el("li", {}, v));
    confirm.disabled = over.length > 0;
    estimate.replaceChildren(el("h2", {}, "Estimate (nothing submitted yet)"),
      el("table", { id: "estimate-table" },
        el("tbody", {}, rows.map(([k, v]) => el("tr", { "data-what": k }, el("th", {}, k), el("td", {}, fmt(v)))))),
      over.length ? el("div", { class: "error" }, "Over the lab's bounds, so it cannot be submitted:",
        el("ul", { id: "estimate-violations" }, over)) : null,
      el("div", { class: "actions" }, confirm, back));
    estimate.hidden = false;
    submit.hidden = true;
  }
  view.replaceChildren(el("h1", {}, "Submit a job"),
    el("div", { class: "card" },
      el("div", { class: "actions" }, el("label", {}, "Start from an example: ", pick)),
      editor,
      el("div", { class: "actions" }, notify),
      el("div", { class: "actions" }, submit, el("span", { class: "muted" },
        "The spec is validated by the service; every bad field is named. You see the "
        + "service's estimate of its cost before you confirm.")),
      problems),
    estimate);
  if (names.length) load(names[0]);
  return () => {};
}

// --- routing and the key ------------------------------------------------------------------

async function route() {
  leave();
  leave = () => {};
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/([0-9a-f]+)$/);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active",
    (a.dataset.nav === "submit") === (hash === "#/submit") && !job));
  if (job) leave = await jobPage(job[1]);
  else if (hash === "#/submit") leave = await submitPage();
  else leave = await listPage();
}

function showKey() {
  document.getElementById("key-state").textContent = apiKey() ? "key set" : "no key";
}
document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("key");
  if (input.value) sessionStorage.setItem(KEY, input.value.trim());
  input.value = "";
  showKey();
  route();
});
document.getElementById("key-clear").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showKey();
  route();
});
window.addEventListener("hashchange", route);
showKey();
route();
