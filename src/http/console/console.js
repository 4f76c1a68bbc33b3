// lead-lab console. Every text that comes from data or from the model is written with
// textContent; nothing is ever parsed as HTML.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const DONE = ["succeeded", "degraded", "failed"];
  const SVG = "http://www.w3.org/2000/svg";

  // ----- settings: token (localStorage, or a #token= fragment), Grafana URL -----
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (fragment.get("token")) {
    localStorage.setItem("leadlab.token", fragment.get("token"));
    // Do not leave the token in the address bar or the history.
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (params.has("grafana")) {
    const g = params.get("grafana").trim();
    if (g === "") localStorage.removeItem("leadlab.grafana");
    else localStorage.setItem("leadlab.grafana", g);
  }
  const refreshSecs = params.has("refresh") ? Number(params.get("refresh")) : 5;

  function token() { return localStorage.getItem("leadlab.token") || ""; }
  function grafana() {
    const g = localStorage.getItem("leadlab.grafana") || "";
    return /^https?:\/\/[^\s]+$/i.test(g) ? g.replace(/\/+$/, "") : "";
  }

  const $ = (id) => document.getElementById(id);
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  const fmt = new Intl.NumberFormat("en-US");
  function pct(x) { return (x * 100).toFixed(1) + "%"; }

  async function getJson(path, auth) {
    const headers = { Accept: "application/json" };
    if (auth) headers.Authorization = "Bearer " + token();
    const r = await fetch(path, { headers });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const err = new Error((body && body.message) || (r.status + " " + r.statusText));
      err.status = r.status;
      throw err;
    }
    return body;
  }

  // ----- statistics -----
  function renderCards(o) {
    for (const key of ["today", "yesterday_same_time", "all_time"]) {
      const card = document.querySelector('[data-card="' + key + '"]');
      const c = o[key];
      card.querySelector('[data-field="attempts"]').textContent = fmt.format(c.attempts);
      card.querySelector('[data-field="accepted"]').textContent = fmt.format(c.accepted);
      card.querySelector('[data-field="success_rate"]').textContent = pct(c.success_rate);
      card.querySelector('[data-field="failed_rate"]').textContent = pct(c.failed_rate);
    }
    document.querySelector('#card-all [data-field="window"]').textContent =
      "(last " + o.all_time_days + " days)";
    const t = o.today.attempts, y = o.yesterday_same_time.attempts;
    let compare = "no attempts yesterday by this time";
    if (y > 0) {
      const d = ((t - y) / y) * 100;
      compare = (d >= 0 ? "+" : "") + d.toFixed(0) + "% attempts vs yesterday at this time";
    }
    document.querySelector('#card-today [data-field="compare"]').textContent = compare;
  }

  // Attempts the service counted against the rows its spans became (lost in transit).
  function renderRecording(r) {
    const card = $("card-recording");
    card.querySelector('[data-field="counted"]').textContent = fmt.format(r.counted);
    card.querySelector('[data-field="recorded"]').textContent = fmt.format(r.recorded);
    card.querySelector('[data-field="missing"]').textContent =
      fmt.format(r.missing) + " (" + pct(r.missing_share) + ")";
    card.dataset.incomplete = String(r.incomplete);
    card.querySelector('[data-field="verdict"]').textContent = r.incomplete
      ? "incomplete: attempts were lost on their way to ClickHouse"
      : "complete: every counted attempt is on record";
  }

  let lastDaily = null;
  function renderChart(daily) {
    lastDaily = daily;
    const box = $("chart");
    clear(box);
    const days = daily.days;
    // Drawn at the box's own width, so text keeps its size on a phone.
    const W = Math.max(300, box.clientWidth - 16 || 700);
    const H = W < 500 ? 200 : 260, left = 44, bottom = 28, top = 16, right = 8;
    const max = Math.max(1, ...days.map((d) => d.accepted + d.rejected + d.failed));
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", id: "chart-svg",
      "aria-label": "attempts per day, stacked by outcome", width: W, height: H });
    const plotH = H - top - bottom;
    const step = (W - left - right) / days.length;
    const bw = Math.max(2, step * 0.7);
    for (const frac of max >= 2 ? [0, 0.5, 1] : [0, 1]) {
      const y = top + plotH * (1 - frac);
      s.appendChild(svg("line", { x1: left, x2: W - right, y1: y, y2: y, class: "grid" }));
      const label = svg("text", { x: left - 4, y: y + 4, "text-anchor": "end", class: "axis" });
      label.textContent = fmt.format(Math.round(max * frac));
      s.appendChild(label);
    }
    days.forEach((d, i) => {
      const x = left + i * step + (step - bw) / 2;
      let y = top + plotH;
      const total = d.accepted + d.rejected + d.failed;
      const g = svg("g", { class: "bar", "data-day": d.day, "data-total": total });
      for (const outcome of ["accepted", "rejected", "failed"]) {
        const h = (d[outcome] / max) * plotH;
        y -= h;
        const r = svg("rect", { x: x, y: y, width: bw, height: Math.max(0, h),
          class: outcome, "data-outcome": outcome, "data-count": d[outcome] });
        const title = svg("title");
        title.textContent = d.day + " " + outcome + ": " + d[outcome];
        r.appendChild(title);
        g.appendChild(r);
      }
      const tl = svg("text", { x: x + bw / 2, y: Math.max(10, y - 3), "text-anchor": "middle", class: "total" });
      tl.textContent = total && step >= 30 ? fmt.format(total) : "";
      g.appendChild(tl);
      const dl = svg("text", { x: x + bw / 2, y: H - bottom + 14, "text-anchor": "middle", class: "axis" });
      const every = step >= 36 ? 1 : step >= 18 ? 2 : 3;
      dl.textContent = (days.length - 1 - i) % every === 0 ? d.day.slice(5) : "";
      g.appendChild(dl);
      s.appendChild(g);
    });
    box.appendChild(s);
  }

  function renderBreakdown(id, rows) {
    const body = $(id).querySelector("tbody");
    clear(body);
    if (rows.length === 0) {
      const tr = el("tr"); const td = el("td", "no attempts"); td.colSpan = 6; tr.appendChild(td); body.appendChild(tr);
    }
    for (const r of rows) {
      const tr = el("tr");
      tr.dataset.name = r.name;
      tr.appendChild(el("td", r.name || "(none)"));
      for (const k of ["attempts", "accepted", "rejected", "failed"]) tr.appendChild(el("td", fmt.format(r.counts[k]), "num"));
      tr.appendChild(el("td", pct(r.counts.success_rate), "num"));
      body.appendChild(tr);
    }
  }

  function traceLink(traceId, time) {
    const base = grafana();
    if (!base || !/^[0-9a-f]{32}$/i.test(traceId)) return null;
    const t = Date.parse(time);
    const sql = "SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID, " +
      "ServiceName AS serviceName, SpanName AS operationName, " +
      "multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime, " +
      "multiply(Duration, 0.000001) AS duration, " +
      "arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags, " +
      "arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags, " +
      "StatusCode AS statusCode FROM otel_traces WHERE TraceId = '" + traceId + "' ORDER BY startTime ASC";
    const panes = { trace: { datasource: "clickhouse", queries: [{ refId: "A",
      datasource: { type: "grafana-clickhouse-datasource", uid: "clickhouse" },
      queryType: "traces", editorType: "sql", format: 3, rawSql: sql,
      builderOptions: { database: "otel", table: "otel_traces", queryType: "traces",
        meta: { isTraceIdMode: true, traceId: traceId, otelEnabled: true, otelVersion: "latest" } } }],
      range: { from: String(isNaN(t) ? Date.now() - 864e5 : t - 36e5), to: String(isNaN(t) ? Date.now() : t + 36e5) } } };
    return base + "/explore?schemaVersion=1&orgId=1&panes=" + encodeURIComponent(JSON.stringify(panes));
  }

  // Log lines of failed attempts, by trace id. Only found lines are kept: the export
  // may still be on its way, so an empty answer is asked again at the next refresh.
  const traceLogs = new Map();
  function logRow(traceId) {
    const tr = el("tr", null, "log-lines");
    const td = el("td"); td.colSpan = 7; tr.appendChild(td);
    const show = (lines) => {
      clear(td);
      if (lines.length === 0) { td.appendChild(el("span", "no log lines yet", "hint")); return; }
      const list = el("ul");
      for (const l of lines) {
        const why = [l.outcome, l.reason].filter(Boolean).join(" ");
        list.appendChild(el("li", l.time.slice(11, 23) + " " + l.level + " " + l.target + ": " +
          l.message + (why ? " (" + why + ")" : "")));
      }
      td.appendChild(list);
    };
    if (traceLogs.has(traceId)) { show(traceLogs.get(traceId)); return tr; }
    getJson("/v1/stats/logs?trace_id=" + encodeURIComponent(traceId)).then((answer) => {
      if (answer.lines.length > 0) traceLogs.set(traceId, answer.lines);
      show(answer.lines);
    }, (e) => { td.textContent = "log lines unavailable: " + e.message; });
    return tr;
  }

  function renderRecent(recent) {
    const body = $("recent").querySelector("tbody");
    clear(body);
    if (recent.submissions.length === 0) {
      const tr = el("tr"); const td = el("td", "no attempts in the last " + recent.days + " days"); td.colSpan = 7; tr.appendChild(td); body.appendChild(tr);
    }
    for (const s of recent.submissions) {
      const tr = el("tr", null, "outcome-" + s.outcome.replace(/[^a-z]/g, ""));
      tr.appendChild(el("td", s.time.replace("T", " ").replace(/\.\d+Z$/, "")));
      tr.appendChild(el("td", s.outcome));
      tr.appendChild(el("td", s.reason));
      tr.appendChild(el("td", s.source));
      tr.appendChild(el("td", s.endpoint));
      tr.appendChild(el("td", s.page));
      const td = el("td", null, "trace");
      const href = traceLink(s.trace_id, s.time);
      if (href) {
        const a = el("a", s.trace_id.slice(0, 12) + "…");
        a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer"; a.title = s.trace_id;
        td.appendChild(a);
      } else {
        td.appendChild(el("code", s.trace_id));
      }
      tr.appendChild(td);
      body.appendChild(tr);
      if (s.outcome === "failed") body.appendChild(logRow(s.trace_id));
    }
    $("grafana-hint").textContent = grafana()
      ? "Trace links open Grafana at " + grafana() + "."
      : "Add ?grafana=http://localhost:3000 to the address to link traces to Grafana.";
  }

  async function refresh() {
    try {
      const [o, d, b, r, rec] = await Promise.all([
        getJson("/v1/stats/overview"), getJson("/v1/stats/daily?days=14"),
        getJson("/v1/stats/breakdown?days=14"), getJson("/v1/stats/recent?days=14"),
        getJson("/v1/stats/recording")]);
      renderCards(o); renderChart(d); renderRecording(rec);
      renderBreakdown("by-source", b.by_source); renderBreakdown("by-endpoint", b.by_endpoint);
      renderRecent(r);
      $("stats-error").textContent = "";
      $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
      document.body.dataset.stats = "loaded";
      const root = document.documentElement;
      document.body.dataset.overflow = String(root.scrollWidth > root.clientWidth);
    } catch (e) {
      $("stats-error").textContent = "Statistics unavailable: " + e.message;
    } finally {
      if (refreshSecs > 0) setTimeout(refresh, refreshSecs * 1000);
    }
  }

  // ----- AI analysis -----
  function setStatus(status, text) {
    const s = $("analysis-status");
    s.dataset.status = status;
    s.textContent = text;
  }
  function showError(msg) { $("analysis-error").textContent = msg || ""; }
  function authHint(e) {
    return e.status === 401 ? "The admin token is missing or wrong: type it above." : e.message;
  }

  function field(dl, name, value) {
    dl.appendChild(el("dt", name));
    dl.appendChild(el("dd", value));
  }
  function paragraph(report, title, text, key) {
    const sec = el("section"); sec.dataset.field = key;
    sec.appendChild(el("h4", title));
    sec.appendChild(el("p", text || "(empty)"));
    report.appendChild(sec);
  }
  function jsonBlock(value) { return el("pre", JSON.stringify(value, null, 2)); }

  function renderReport(s, run) {
    const report = $("report");
    clear(report);
    if (!s) { report.appendChild(el("p", "No report for this day yet.", "hint")); return; }
    report.dataset.runId = s.run_id;
    const head = el("dl", null, "meta");
    field(head, "Day", s.day + " (" + s.time_zone + ")");
    field(head, "Version", s.version);
    field(head, "Generated", s.generated_at);
    field(head, "Generator", s.generator + (s.model ? " · " + s.model : ""));
    if (s.generator === "model" && s.model === "smollm2:135m") {
      report.appendChild(el("p", "Written by the 135M dev model: it proves the plumbing, not the quality of a summary. Point llm.url and llm.model at llama3.1:8b for real narration.", "hint"));
    }
    field(head, "Confidence", s.confidence);
    if (run) field(head, "Run", run.status + " · " + run.total_ms + " ms · " + run.trigger);
    report.appendChild(head);
    paragraph(report, "Executive summary", s.executive_summary, "executive_summary");
    paragraph(report, "User behaviour", s.user_behavior, "user_behavior");
    paragraph(report, "System behaviour", s.system_behavior, "system_behavior");

    const sig = el("section"); sig.appendChild(el("h4", "Misconfiguration signals"));
    const signals = Array.isArray(s.misconfiguration_signals) ? s.misconfiguration_signals : [];
    if (signals.length === 0) sig.appendChild(el("p", "none"));
    const ul = el("ul");
    for (const m of signals) {
      const li = el("li");
      if (m && typeof m === "object") {
        li.appendChild(el("strong", (m.severity ? "[" + m.severity + "] " : "") + (m.signal || "")));
        if (m.evidence !== undefined) li.appendChild(el("span", " — " + (typeof m.evidence === "string" ? m.evidence : JSON.stringify(m.evidence))));
      } else li.textContent = String(m);
      ul.appendChild(li);
    }
    sig.appendChild(ul); report.appendChild(sig);

    const conf = el("section"); conf.appendChild(el("h4", "Confidence: " + s.confidence));
    const cr = el("ul"); for (const r of s.confidence_reasons || []) cr.appendChild(el("li", r));
    conf.appendChild(cr); report.appendChild(conf);

    const gv = el("section"); gv.dataset.field = "grounding_violations";
    gv.appendChild(el("h4", "Grounding violations"));
    const gl = s.grounding_violations || [];
    if (gl.length === 0) gv.appendChild(el("p", "none: every number and name is in the facts"));
    const gul = el("ul", null, "violations"); for (const v of gl) gul.appendChild(el("li", v));
    gv.appendChild(gul); report.appendChild(gv);

    const scope = el("section"); scope.appendChild(el("h4", "Scope"));
    scope.appendChild(jsonBlock(s.scope)); report.appendChild(scope);

    const fs = el("section"); fs.dataset.field = "findings";
    fs.appendChild(el("h4", "Findings"));
    const findings = Array.isArray(s.findings) ? s.findings : [];
    if (findings.length === 0) fs.appendChild(el("p", "no findings"));
    for (const f of findings) {
      const d = el("details", null, "finding");
      const sum = el("summary", (f.severity ? "[" + f.severity + "] " : "") + (f.kind || "") + ": " + (f.summary || ""));
      d.appendChild(sum);
      d.appendChild(jsonBlock(f.evidence !== undefined ? f.evidence : f));
      fs.appendChild(d);
    }
    report.appendChild(fs);
  }

  function renderVersions(versions) {
    const list = $("versions");
    clear(list);
    if (!versions || versions.length === 0) { list.appendChild(el("li", "none")); return; }
    for (const v of versions) {
      const li = el("li");
      const b = el("button", "v" + v.version + " · " + v.generator + " · " + v.confidence + " · " + v.generated_at, "link");
      b.type = "button";
      b.addEventListener("click", () => showRun(v.run_id));
      li.appendChild(b);
      list.appendChild(li);
    }
  }

  async function showRun(runId) {
    showError("");
    try {
      const v = await getJson("/v1/analyses/" + encodeURIComponent(runId), true);
      renderReport(v.summary, v.run);
    } catch (e) { showError(authHint(e)); }
  }

  function saveToken() {
    const t = $("token").value.trim();
    if (t) localStorage.setItem("leadlab.token", t);
  }

  async function loadDay() {
    saveToken();
    const day = $("day").value;
    showError("");
    if (!day) return;
    try {
      const s = await getJson("/v1/summaries/" + day, true);
      renderReport(s.current, null);
      renderVersions(s.versions);
      setStatus("shown", "Current report of " + day + ".");
    } catch (e) {
      if (e.status === 404) {
        renderReport(null); renderVersions([]);
        setStatus("none", "No report for " + day + " yet: press Analyze.");
      } else { clear($("report")); showError(authHint(e)); }
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let polling = false;
  async function analyze() {
    const day = $("day").value;
    if (!day || polling) return;
    saveToken();
    showError("");
    polling = true;
    $("analyze").disabled = true;
    try {
      const r = await fetch("/v1/analyses", { method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
        body: JSON.stringify({ day }) });
      let body = null; try { body = await r.json(); } catch (_) { body = null; }
      if (!r.ok) { const e = new Error((body && body.message) || String(r.status)); e.status = r.status; throw e; }
      setStatus("queued", "Queued (run " + body.run_id + ")" + (body.joined ? ", joined a running analysis" : "") + "…");
      for (;;) {
        await sleep(1000);
        let v;
        try { v = await getJson("/v1/analyses/" + encodeURIComponent(body.run_id), true); }
        catch (e) { if (e.status === 404) continue; throw e; }
        const st = v.run.status;
        if (DONE.includes(st)) {
          setStatus(st, "Done: " + st + (v.run.error ? " (" + v.run.error + ")" : "") + ".");
          if (v.summary) renderReport(v.summary, v.run);
          try { renderVersions((await getJson("/v1/summaries/" + day, true)).versions); } catch (_) { /* shown report stays */ }
          break;
        }
        setStatus(st, (st === "running" ? "Running" : "Queued") + " (attempt " + v.run.attempts + ")…");
      }
    } catch (e) {
      setStatus("error", "");
      showError(authHint(e));
    } finally {
      polling = false;
      $("analyze").disabled = false;
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (lastDaily) renderChart(lastDaily); }, 150);
  });

  // ----- wiring -----
  function yesterday() { return new Date(Date.now() - 864e5).toISOString().slice(0, 10); }
  function start() {
    $("token").value = token();
    $("token").addEventListener("change", saveToken);
    const day = params.get("day");
    $("day").value = day && /^\d{4}-\d{2}-\d{2}$/.test(day) ? day : yesterday();
    $("analysis-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadDay(); });
    $("analyze").addEventListener("click", analyze);
    refresh();
    if (params.get("analyze") === "1") analyze();
    else if (token()) loadDay();
    else setStatus("", "Type the admin token to see and start analyses.");
  }
  start();
})();
