// mcp-gateway dashboard: calls /api/* with the pasted bearer token; row-level security decides
// what comes back. No framework, no build step, nothing from another origin.
"use strict";

(function () {
  const TOKEN_KEY = "mcp-gateway.token";
  const VISIBLE_MS = 10000;
  const HIDDEN_MS = 60000;
  const COLORS = ["#2f6fdf", "#e07b39", "#2f855a", "#b83280", "#805ad5", "#d69e2e", "#319795", "#c53030",
                  "#718096"];
  // The API lives next to /dashboard (also behind a proxy that adds a path prefix).
  const BASE = window.location.pathname.replace(/\/dashboard\/?$/, "");
  const $ = (id) => document.getElementById(id);

  let timer = null;
  let inFlight = null;
  let me = null;
  let expanded = null;          // {id, row: <tr class="detail-row">} of the session shown inline
  let armedRevoke = null;       // token id whose Revoke button asks for confirmation
  const csvData = {};           // section -> {columns, rows}: exactly what the section shows

  // -- helpers --------------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "title") node.title = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function num(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  // USD with 8 places, as the API, CSV and CLI show it (docs/reports.md): the same figure everywhere.
  function money(value) {
    return num(value).toFixed(8);
  }

  function ms(value) {
    return value === null || value === undefined ? "–" : `${num(value).toFixed(1)} ms`;
  }

  function duration(seconds) {
    let s = Math.max(0, Math.round(num(seconds)));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
    return `${s}s`;
  }

  function since(iso) {
    if (!iso) return "–";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    return seconds < 5 ? "just now" : `${duration(seconds)} ago`;
  }

  function clock(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function clientName(row) {
    const type = row.client_type || "unknown";
    return row.client_version ? `${type} ${row.client_version}` : type;
  }

  function toolLabel(name) {
    return name ? name : "(not a tool call)";
  }

  function fill(tbody, rows, empty) {
    tbody.replaceChildren(...rows);
    if (empty) empty.hidden = rows.length > 0;
  }

  // Keyboard focus survives the periodic re-render: controls carry data-focus, restored by value.
  function rememberFocus() {
    const active = document.activeElement;
    return active && active.dataset && active.dataset.focus ? active.dataset.focus : null;
  }

  function restoreFocus(key) {
    if (!key || (document.activeElement && document.activeElement !== document.body)) return;
    const target = document.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    if (target) target.focus();
  }

  // -- CSV: what a section shows, safe to open in a spreadsheet ------------------------------

  function csvCell(value) {
    let text = value === null || value === undefined ? "" : String(value);
    // A cell starting like a formula would run in a spreadsheet: make it text.
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function toCsv(columns, rows) {
    return [columns, ...rows].map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
  }

  function download(section) {
    const data = csvData[section];
    if (!data) return;
    const blob = new Blob([toCsv(data.columns, data.rows)], { type: "text/csv;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `mcp-gateway-${section}-${new Date().toISOString().slice(0, 10)}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // -- API --------------------------------------------------------------------------------------

  class Unauthorized extends Error {}
  class Forbidden extends Error {}

  async function api(path, options) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const opts = options || {};
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(BASE + path, {
      method: opts.method || "GET",
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new Unauthorized("the token was refused (expired or revoked?)");
    if (!response.ok) {
      let detail = "";
      try { detail = (await response.json()).detail || ""; } catch (e) { /* not JSON */ }
      const Kind = response.status === 403 ? Forbidden : Error;
      const error = new Kind(detail || `${path.split("?")[0]}: HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    if (response.status === 204 || opts.raw) return null;
    return response.json();
  }

  function period() {
    // Reports count whole UTC days, `until` (default today) included: N days = today and N-1 before.
    const days = Number($("period").value) || 7;
    return { days, since: days === 1 ? "today" : `${days - 1}d` };
  }

  function userFilter() {
    const value = $("user-filter").value;
    if (!value) return "";
    const slash = value.indexOf("/");
    return `&tenant_id=${encodeURIComponent(value.slice(0, slash))}&user_id=${encodeURIComponent(value.slice(slash + 1))}`;
  }

  function periodText(p) {
    return p.days === 1 ? "today (UTC)" : `last ${p.days} days`;
  }

  function owner(row) {
    return me && me.role === "auditor" ? `${row.tenant_id}/${row.user_id}` : row.user_id;
  }

  // -- sessions, with the selected one's requests right under its row -----------------------

  function sessionButton(s, label) {
    return el("button", { type: "button", class: "link", "aria-expanded": expanded && expanded.id === s.session_id ? "true" : "false",
                          dataset: { focus: `session:${s.session_id}` },
                          title: "Show this session's requests" }, label);
  }

  function renderActive(data) {
    const open = data.clients.filter((s) => s.activity !== "ended")
      .sort((a, b) => (a.activity === b.activity ? 0 : a.activity === "live" ? -1 : 1));
    $("live-count").textContent = String(data.live);
    $("idle-count").textContent = String(data.idle);
    $("live-explain").textContent =
      `Live: a call within the last ${duration(data.live_window_seconds)}. Idle: still open, but quiet since; ` +
      `an open session ends after ${duration(data.idle_timeout_seconds)} without a call (clients that never ` +
      "say goodbye, and sessionless clients, stay open until then).";
    const rows = open.map((s) => el("tr", { dataset: { session: s.session_id, user: s.user_id, activity: s.activity } },
      el("td", { class: "user" }, sessionButton(s, owner(s)), s.user_email ? el("div", { class: "sub" }, s.user_email) : null),
      el("td", {}, el("span", { class: `pill ${s.activity}` }, s.activity)),
      el("td", {}, clientName(s)),
      el("td", {}, s.transport || "–"),
      el("td", { class: "num" }, num(s.request_count)),
      el("td", {}, duration((Date.now() - Date.parse(s.connected_at)) / 1000)),
      el("td", { title: clock(s.last_activity) }, since(s.last_activity))));
    fill($("active").tBodies[0], rows, $("active-empty"));
    csvData.sessions = {
      columns: ["tenant_id", "user_id", "state", "client", "transport", "calls", "connected_at", "last_activity",
                "idle_seconds", "session_id"],
      rows: open.map((s) => [s.tenant_id, s.user_id, s.activity, clientName(s), s.transport, s.request_count,
                             s.connected_at, s.last_activity, Math.round(num(s.idle_seconds)), s.session_id]),
    };
  }

  function renderDisconnected(data, p) {
    const sessions = data.sessions;
    const stats = data.statistics || {};
    $("disconnected-period").textContent = `last ${plural(data.period.days, "day")}`;
    const figures = [
      [num(stats.total_disconnected), "ended"],
      [duration(stats.avg_duration_seconds), "average duration"],
      [duration(stats.max_duration_seconds), "longest"],
    ];
    $("disconnected-stats").replaceChildren(...figures.map(([value, label]) =>
      el("div", {}, el("strong", {}, value), el("span", {}, label))));
    const reasons = Object.entries(stats.disconnect_reasons || {}).sort((a, b) => b[1] - a[1]);
    $("reasons").replaceChildren(...reasons.map(([reason, count]) =>
      el("span", { class: "reason", dataset: { reason } }, reason, el("b", {}, count))));
    fill($("disconnected").tBodies[0], sessions.map((s) => el("tr", { dataset: { session: s.session_id, user: s.user_id } },
      el("td", { class: "user" }, sessionButton(s, owner(s))), el("td", {}, clientName(s)),
      el("td", {}, el("span", { class: "pill" }, s.disconnect_reason || "–")),
      el("td", {}, duration(s.total_duration)),
      el("td", { title: clock(s.disconnected_at) }, since(s.disconnected_at)))), $("disconnected-empty"));
    csvData.disconnected = {
      columns: ["tenant_id", "user_id", "client", "reason", "duration_seconds", "connected_at", "disconnected_at",
                "calls", "session_id"],
      rows: sessions.map((s) => [s.tenant_id, s.user_id, clientName(s), s.disconnect_reason, s.total_duration,
                                 s.connected_at, s.disconnected_at, s.request_count, s.session_id]),
    };
  }

  function placeExpanded() {
    // After a re-render, put the open detail back under its session's row (wherever it is now).
    if (!expanded) return;
    const row = document.querySelector(`tr[data-session="${CSS.escape(expanded.id)}"]`);
    if (row) {
      row.after(expanded.row);
      const button = row.querySelector("button.link");
      if (button) button.setAttribute("aria-expanded", "true");
    } else {
      expanded.row.remove();
    }
  }

  function collapse() {
    if (!expanded) return;
    const id = expanded.id;
    expanded.row.remove();
    expanded = null;
    document.querySelectorAll(`tr[data-session="${CSS.escape(id)}"] button.link`)
      .forEach((b) => b.setAttribute("aria-expanded", "false"));
  }

  async function toggleSession(row) {
    const id = row.dataset.session;
    if (expanded && expanded.id === id) { collapse(); return; }
    collapse();
    const columns = row.children.length;
    const body = el("div", { class: "detail", role: "region", "aria-label": "Requests of this session" },
      el("p", { class: "meta" }, "Loading requests…"));
    const detailRow = el("tr", { class: "detail-row", dataset: { detailFor: id } }, el("td", { colspan: columns }, body));
    expanded = { id, row: detailRow };
    row.after(detailRow);
    row.querySelector("button.link").setAttribute("aria-expanded", "true");
    detailRow.scrollIntoView({ block: "nearest" });
    try {
      const data = await api(`/api/mcp/sessions/${encodeURIComponent(id)}?limit=200`);
      if (!expanded || expanded.id !== id) return;
      const s = data.session;
      const meta = [`${s.user_id} (${s.tenant_id})`, clientName(s), s.transport, s.activity,
                    `connected ${clock(s.connected_at)}`, s.disconnect_reason ? `ended: ${s.disconnect_reason}` : null,
                    `${plural(data.requests_total, "request")}`, `$${money(s.total_cost)}`].filter(Boolean).join(" · ");
      const requests = data.requests.map((r) => el("tr", { dataset: { tool: r.tool_name || "" } },
        el("td", {}, clock(r.timestamp)), el("td", {}, r.tool_name || r.method),
        el("td", {}, el("span", { class: `pill ${r.status}` }, r.status)),
        el("td", { class: "num" }, ms(r.duration_ms)),
        el("td", { class: "num" }, num(r.prompt_tokens) + num(r.completion_tokens)),
        el("td", { class: "num" }, money(r.estimated_cost)),
        el("td", { class: "error-text" }, r.error_message || "")));
      const table = el("table", { class: "requests" },
        el("thead", {}, el("tr", {}, ...["Time", "Tool", "Status", "Duration", "Tokens", "Cost (USD)", "Error"]
          .map((h, i) => el("th", { class: [3, 4, 5].includes(i) ? "num" : null }, h)))),
        el("tbody", {}, ...requests));
      const close = el("button", { type: "button", class: "small secondary", dataset: { focus: `close:${id}` } }, "Close");
      close.addEventListener("click", () => {
        collapse();
        const back = document.querySelector(`tr[data-session="${CSS.escape(id)}"] button.link`);
        if (back) back.focus();
      });
      body.replaceChildren(el("div", { class: "detail-head" }, el("p", { class: "meta" }, meta), close),
        requests.length ? table : el("p", { class: "empty" }, "No requests in this session."));
      detailRow.scrollIntoView({ block: "nearest" });
    } catch (error) {
      body.replaceChildren(el("p", { class: "error" }, error.message));
      if (error instanceof Unauthorized) handleError(error);
    }
  }

  function onSessionClick(event) {
    const button = event.target.closest("button.link");
    if (!button) return;
    const row = button.closest("tr[data-session]");
    if (row) toggleSession(row);
  }

  // -- usage per day: stacked bars drawn here, no library -----------------------------------

  let lastUsage = null;

  function niceCeil(value, integer) {
    // The axis top: 1, 2 or 5 times a power of ten (even, for counts, so the half line is a whole number).
    if (!(value > 0)) return integer ? 2 : 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const f of integer ? [1, 2, 4, 6, 8, 10] : [1, 2, 5, 10]) {
      const top = f * power;
      if (top >= value && (!integer || (top >= 2 && top % 2 === 0))) return top;
    }
    return integer ? 2 * Math.ceil(value / 2) : 10 * power;
  }

  function renderUsage(data, p) {
    lastUsage = [data, p];
    const measure = $("usage-measure").value;
    const days = data.days;
    const series = data.series.map((s, i) => ({
      label: s.key === "(other)" ? `${plural(s.other, "other")}` : (data.stack_by === "tool" ? toolLabel(s.key) :
        (me && me.role === "auditor" ? s.key : s.user_id)),
      key: s.key, color: COLORS[Math.min(i, COLORS.length - 1)],
      values: (measure === "cost" ? s.cost : s.calls).map(num), calls: s.calls, cost: s.cost,
    }));
    $("usage-period").textContent = `${periodText(p)} · ${data.totals.all_calls} calls · $${money(data.totals.all_cost)}`;
    const box = $("usage-chart");
    const totals = days.map((_, i) => series.reduce((sum, s) => sum + s.values[i], 0));
    const max = Math.max(...totals, 0);
    $("usage-empty").hidden = data.totals.all_calls > 0;
    box.hidden = data.totals.all_calls === 0;  // an empty grid says less than "No calls in this period"
    box.setAttribute("aria-label", `${measure === "cost" ? "Cost" : "Calls"} per day, stacked by ${data.stack_by}: ` +
      days.map((d, i) => `${d} ${measure === "cost" ? `$${money(totals[i])}` : totals[i]}`).join(", "));
    // Drawn at the box's own pixel width, so labels stay legible from 375 px to wide screens.
    const width = Math.max(280, Math.round(box.clientWidth || 760)), height = 200, left = 52, bottom = 24, top = 10;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, "aria-hidden": "true" });
    const plotH = height - bottom - top, plotW = width - left - 8;
    const step = plotW / Math.max(days.length, 1);
    const barW = Math.max(2, Math.min(48, step * 0.7));
    const ceiling = niceCeil(max, measure === "calls");
    const scale = ceiling > 0 ? plotH / ceiling : 0;
    for (let g = 0; g <= 2; g++) {  // gridlines at 0, half, top
      const value = (ceiling * g) / 2, y = top + plotH - value * scale;
      chart.append(svg("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }));
      chart.append(svg("text", { x: left - 4, y: y + 4, "text-anchor": "end", class: "axis" },
        measure === "cost" ? `$${money(value)}` : String(value)));
    }
    const labelEvery = Math.ceil(days.length / Math.max(2, Math.floor(plotW / 44)));
    days.forEach((day, i) => {
      const x = left + i * step + (step - barW) / 2;
      let y = top + plotH;
      series.forEach((s) => {
        const v = s.values[i];
        if (!v) return;
        const h = Math.max(1, v * scale);
        y -= h;
        const rect = svg("rect", { x, y, width: barW, height: h, fill: s.color, class: "seg",
                                   "data-day": day, "data-key": s.key });
        rect.append(svg("title", {}, `${day} · ${s.label}: ${s.calls[i]} calls, $${money(s.cost[i])}`));
        chart.append(rect);
      });
      if (i % labelEvery === 0) {
        chart.append(svg("text", { x: x + barW / 2, y: height - 6, "text-anchor": "middle", class: "axis" }, day.slice(5)));
      }
    });
    box.replaceChildren(chart);
    $("usage-legend").replaceChildren(...series.map((s) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = s.color;
      const total = s.values.reduce((a, b) => a + b, 0);
      return el("li", { dataset: { key: s.key } }, swatch, s.label, el("b", {}, measure === "cost" ? `$${money(total)}` : total));
    }));
    csvData.usage = {
      columns: ["day", data.stack_by === "tool" ? "tool_name" : "user", "calls", "errors", "denied", "cost"],
      rows: data.series.flatMap((s) => days.map((day, i) => [day, s.key, s.calls[i], s.errors[i], s.denied[i], s.cost[i]]))
        .filter((r) => r[2] > 0 || num(r[5]) > 0),
    };
  }

  // -- cost per user ----------------------------------------------------------------------------

  function userOptions(rows) {
    const select = $("user-filter");
    const current = select.value;
    const multiTenant = new Set(rows.map((r) => r.tenant_id)).size > 1 || (me && me.role === "auditor");
    const values = new Set([""]);
    const options = [el("option", { value: "" }, "all users")];
    for (const r of [...rows].sort((a, b) => `${a.tenant_id}/${a.user_id}`.localeCompare(`${b.tenant_id}/${b.user_id}`))) {
      const value = `${r.tenant_id}/${r.user_id}`;
      values.add(value);
      options.push(el("option", { value }, multiTenant ? value : r.user_id));
    }
    if (current && !values.has(current)) {  // keep the chosen user even if they have no calls this period
      options.push(el("option", { value: current }, current));
    }
    select.replaceChildren(...options);
    select.value = current;
  }

  function renderCosts(data, p) {
    userOptions(data.rows);
    const chosen = $("user-filter").value;
    const users = data.rows.filter((r) => !chosen || `${r.tenant_id}/${r.user_id}` === chosen).map((r) => ({
      user: r.user_id, tenant: r.tenant_id, label: owner(r), calls: num(r.calls), tokens: num(r.total_tokens),
      cost: num(r.cost), costText: r.cost,
    })).sort((a, b) => b.cost - a.cost || b.calls - a.calls || a.label.localeCompare(b.label));
    $("cost-period").textContent = periodText(p);
    fill($("costs").tBodies[0], users.map((u) => el("tr", { dataset: { user: u.user } },
      el("td", { class: "user" }, u.label), el("td", { class: "num" }, u.calls),
      el("td", { class: "num" }, u.tokens), el("td", { class: "num" }, money(u.cost)))), $("costs-empty"));
    renderCostChart(users.slice(0, 12));
    csvData.costs = {
      columns: ["tenant_id", "user_id", "calls", "tokens", "cost"],
      rows: users.map((u) => [u.tenant, u.user, u.calls, u.tokens, u.costText]),
    };
  }

  function renderCostChart(users) {
    const box = $("cost-chart");
    if (!users.length) { box.replaceChildren(); return; }
    const width = Math.max(280, Math.round(box.clientWidth || 560));  // drawn at its pixel width: legible text
    const rowHeight = 22, labelWidth = Math.min(120, Math.round(width * 0.3)), valueWidth = 80;
    const barSpace = width - labelWidth - valueWidth;
    const max = Math.max(...users.map((u) => u.cost), 1e-9);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${users.length * rowHeight + 4}`, "aria-hidden": "true" });
    users.forEach((u, i) => {
      const y = i * rowHeight + 2;
      const fit = Math.max(6, Math.floor(labelWidth / 7));
      const label = u.label.length > fit ? `${u.label.slice(0, fit - 1)}…` : u.label;
      chart.append(svg("text", { x: labelWidth - 6, y: y + 14, "text-anchor": "end" }, label));
      const w = Math.max(1, (u.cost / max) * barSpace);
      const bar = svg("rect", { class: "bar-rect", x: labelWidth, y: y + 3, width: w, height: rowHeight - 8, rx: 2 });
      bar.append(svg("title", {}, `${u.label}: $${money(u.cost)} (${u.calls} calls)`));
      chart.append(bar);
      chart.append(svg("text", { class: "value", x: labelWidth + w + 6, y: y + 14 }, `$${money(u.cost)}`));
    });
    box.setAttribute("aria-label", `Estimated cost per user: ${users.map((u) => `${u.label} $${money(u.cost)}`).join(", ")}`);
    box.replaceChildren(chart);
  }

  // -- tools: calls, errors, latency; and the error/denied breakdown -----------------------

  function renderTools(data, p) {
    const tools = data.tools.map((t) => ({ ...t, rate: t.calls ? t.errors / t.calls : 0 }));
    $("tools-period").textContent = periodText(p);
    $("errors-period").textContent = periodText(p);
    fill($("tools").tBodies[0], tools.map((t) => {
      const fillBar = el("div", { class: "fill" });
      fillBar.style.width = `${Math.round(t.rate * 100)}%`;
      return el("tr", { dataset: { tool: t.tool_name } },
        el("td", {}, toolLabel(t.tool_name)), el("td", { class: "num" }, t.calls), el("td", { class: "num" }, t.errors),
        el("td", { class: "num" }, t.denied),
        el("td", {}, el("span", { class: "rate" }, el("span", { class: "track" }, fillBar), `${(t.rate * 100).toFixed(1)}%`)),
        el("td", { class: "num" }, ms(t.p50_ms)), el("td", { class: "num" }, ms(t.p95_ms)));
    }), $("tools-empty"));
    csvData.tools = {
      columns: ["tool_name", "calls", "success", "errors", "denied", "error_rate", "p50_ms", "p95_ms", "max_ms"],
      rows: tools.map((t) => [t.tool_name, t.calls, t.success, t.errors, t.denied, t.rate.toFixed(4), t.p50_ms, t.p95_ms,
                              t.max_ms]),
    };
    fill($("errors").tBodies[0], data.errors.map((e) => el("tr", { dataset: { tool: e.tool_name, status: e.status } },
      el("td", {}, toolLabel(e.tool_name)), el("td", {}, el("span", { class: `pill ${e.status}` }, e.status)),
      el("td", { class: "error-text" }, e.message || "(no message)"), el("td", { class: "num" }, e.count),
      el("td", { title: clock(e.last_at) }, since(e.last_at)))), $("errors-empty"));
    csvData.errors = {
      columns: ["tool_name", "status", "message", "count", "last_at"],
      rows: data.errors.map((e) => [e.tool_name, e.status, e.message, e.count, e.last_at]),
    };
  }

  // -- upstream servers (tenant admins and auditors) ----------------------------------------

  function renderUpstreams(data) {
    const items = data.upstreams;
    fill($("upstreams").tBodies[0], items.map((u) => el("tr", { dataset: { upstream: u.name, status: u.status } },
      el("td", {}, u.name, el("div", { class: "sub" }, `${u.transport} · ${u.target}`)),
      el("td", {}, el("span", { class: `pill ${u.status}` }, u.status)),
      el("td", { class: "wrap" }, u.tools.length ? u.tools.join(", ") : (u.tool_count === null ? "not listed yet" : "none")),
      el("td", { class: "error-text" }, u.last_error ? `${u.last_error} (${since(u.last_error_at)})` : ""),
      el("td", { title: clock(u.last_ok) }, since(u.last_ok)))), $("upstreams-empty"));
    csvData.upstreams = {
      columns: ["name", "status", "transport", "target", "tools", "last_error", "last_error_at", "last_ok"],
      rows: items.map((u) => [u.name, u.status, u.transport, u.target, u.tools.join(" "), u.last_error, u.last_error_at,
                              u.last_ok]),
    };
  }

  // -- personal access tokens -------------------------------------------------------------------

  function mayRevoke(t) {
    if (!me || me.role === "auditor" || t.state !== "active") return false;
    return t.mine || (me.role === "admin" && t.tenant_id === me.tenant_id);
  }

  function renderTokens(data) {
    const tokens = data.tokens;
    fill($("tokens").tBodies[0], tokens.map((t) => {
      let action = "";
      if (mayRevoke(t)) {
        const armed = armedRevoke === t.token_id;
        action = el("button", { type: "button", class: `small ${armed ? "danger" : "secondary"}`,
                                dataset: { revoke: t.token_id, focus: `revoke:${t.token_id}` },
                                "aria-label": `${armed ? "Confirm: revoke" : "Revoke"} token ${t.name || t.prefix}` },
                    armed ? "Confirm revoke" : "Revoke");
      }
      return el("tr", { dataset: { token: t.token_id, state: t.state, owner: `${t.tenant_id}/${t.user_id}` } },
        el("td", {}, t.name || "–"), el("td", {}, t.mine ? `${owner(t)} (you)` : owner(t)),
        el("td", {}, el("code", {}, `${t.prefix}…`)), el("td", {}, t.role),
        el("td", {}, el("span", { class: `pill ${t.state}` }, t.state)),
        el("td", { title: clock(t.created_at) }, since(t.created_at)),
        el("td", {}, t.expires_at ? clock(t.expires_at) : "never"),
        el("td", { title: clock(t.last_used_at) }, t.last_used_at ? since(t.last_used_at) : "never"),
        el("td", {}, action));
    }), $("tokens-empty"));
    csvData.tokens = {
      columns: ["token_id", "tenant_id", "user_id", "name", "prefix", "role", "state", "created_at", "expires_at",
                "revoked_at", "last_used_at"],
      rows: tokens.map((t) => [t.token_id, t.tenant_id, t.user_id, t.name, t.prefix, t.role, t.state, t.created_at,
                               t.expires_at, t.revoked_at, t.last_used_at]),
    };
  }

  async function loadTokens() {
    renderTokens(await api("/api/tokens"));
  }

  // -- connections: the caller's own upstream accounts ------------------------------------------

  let lastConnections = "";

  function connectionState(c) {
    if (c.link_with === "automatic") return ["linked", "automatic (your sign-in)"];
    if (c.needs_relink) return ["revoked", "needs re-link"];
    return c.linked ? ["active", "linked"] : ["expired", "not linked"];
  }

  function renderConnections(data) {
    const items = data.credentials;
    $("connections-card").hidden = items.length === 0;
    const signature = JSON.stringify(items);
    if (signature === lastConnections) return;  // do not wipe a token being typed
    lastConnections = signature;
    fill($("connections").tBodies[0], items.map((c) => {
      const [pill, label] = connectionState(c);
      const actions = el("td", { class: "actions" });
      if (c.link_with === "token") {
        const input = el("input", { type: "password", spellcheck: "false", autocomplete: "off", maxlength: "8192",
                                    placeholder: "paste your token", "aria-label": `Token for ${c.upstream}`,
                                    dataset: { tokenFor: c.upstream } });
        actions.append(input, el("button", { type: "button", class: "small", dataset: { link: c.upstream } },
                                 c.linked && !c.needs_relink ? "Replace" : "Link"));
      } else if (c.link_with === "oauth") {
        actions.append(el("button", { type: "button", class: "small", dataset: { oauth: c.upstream } },
                          c.linked && !c.needs_relink ? "Sign in again" : "Sign in"));
      }
      if (c.linked && c.link_with !== "automatic") {
        actions.append(el("button", { type: "button", class: "small secondary", dataset: { unlink: c.upstream },
                                      "aria-label": `Unlink ${c.upstream}` }, "Unlink"));
      }
      return el("tr", { dataset: { connection: c.upstream, state: label } },
        el("td", {}, c.upstream), el("td", {}, c.link_with),
        el("td", {}, el("span", { class: `pill ${pill}` }, label)),
        el("td", { title: clock(c.linked_at) }, c.linked_at ? since(c.linked_at) : "–"),
        el("td", { title: clock(c.last_used_at) }, c.last_used_at ? since(c.last_used_at) : "never"),
        actions);
    }), null);
  }

  async function loadConnections() {
    renderConnections(await api("/api/credentials"));
  }

  async function onConnectionAction(event) {
    const button = event.target.closest("button");
    if (!button) return;
    $("connection-error").textContent = "";
    const upstream = button.dataset.link || button.dataset.unlink || button.dataset.oauth;
    if (!upstream) return;
    const path = `/api/credentials/${encodeURIComponent(upstream)}`;
    try {
      if (button.dataset.link) {
        const input = document.querySelector(`input[data-token-for="${CSS.escape(upstream)}"]`);
        const token = input ? input.value.trim() : "";
        if (!token) { $("connection-error").textContent = "paste the token first"; return; }
        await api(path, { method: "PUT", body: { token }, raw: true });
        input.value = "";
        $("status").textContent = `${upstream} linked`;
      } else if (button.dataset.unlink) {
        await api(path, { method: "DELETE", raw: true });
        $("status").textContent = `${upstream} unlinked`;
      } else {
        const started = await api(`${path}/oauth`, { method: "POST", body: {} });
        window.location.assign(started.authorization_url);
        return;
      }
    } catch (error) {
      if (error instanceof Unauthorized) { handleError(error); return; }
      $("connection-error").textContent = error.message;
    }
    lastConnections = "";
    await loadConnections().catch(handleError);
  }

  async function onTokenAction(event) {
    const button = event.target.closest("button[data-revoke]");
    if (!button) return;
    const id = button.dataset.revoke;
    $("token-error").textContent = "";
    if (armedRevoke !== id) {  // first press arms, second revokes: no accidental revocation
      armedRevoke = id;
      const key = rememberFocus();
      await loadTokens().catch(handleError);
      const again = document.querySelector(`[data-focus="${CSS.escape(key || "")}"]`);
      if (again) again.focus();
      return;
    }
    armedRevoke = null;
    try {
      await api(`/api/tokens/${encodeURIComponent(id)}`, { method: "DELETE" });
      $("status").textContent = "token revoked";
    } catch (error) {
      if (error instanceof Unauthorized) { handleError(error); return; }
      $("token-error").textContent = error.message;
    }
    await loadTokens().catch(handleError);
    $("tokens-title").focus();
  }

  async function createToken(event) {
    event.preventDefault();
    $("token-error").textContent = "";
    const body = { name: $("token-name").value.trim(), expires_in: $("token-expiry").value || null };
    if (me && me.role === "admin") body.role = $("token-role").value;
    try {
      const created = await api("/api/tokens", { method: "POST", body });
      $("token-value").value = created.token;
      $("token-secret").hidden = false;
      $("token-name").value = "";
      $("token-value").focus();
      $("token-value").select();
    } catch (error) {
      if (error instanceof Unauthorized) { handleError(error); return; }
      $("token-error").textContent = error.message;
      return;
    }
    await loadTokens().catch(handleError);
  }

  function applyRole() {
    const role = me ? me.role : "member";
    $("whoami").textContent = me ? `${me.user_id} · ${me.tenant_id} · ${role}` : "";
    $("token-form").hidden = role === "auditor";
    $("token-role").hidden = role !== "admin";
    $("token-role-label").hidden = role !== "admin";
    $("upstreams-card").hidden = !(role === "admin" || role === "auditor");
    $("tokens-note").textContent = {
      member: "Your tokens. Each works like a password for this gateway's MCP endpoint.",
      admin: `Tokens of tenant ${me ? me.tenant_id : ""}: you may revoke any of them, and create your own.`,
      auditor: "All tenants' tokens, read-only.",
    }[role];
  }

  // -- refresh loop ------------------------------------------------------------------------------

  async function refresh() {
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    if (inFlight) return inFlight;
    const p = period();
    const filter = userFilter();
    const range = `since=${encodeURIComponent(p.since)}`;
    const disconnectedDays = Math.min(30, Math.max(1, p.days));
    const focusKey = rememberFocus();
    $("status").textContent = "refreshing…";
    const jobs = [
      api(`/api/mcp/clients?live_window=${$("live-window").value}${filter}`).then(renderActive),
      api(`/api/reports/costs?${range}&group_by=user&format=json`).then((d) => renderCosts(d, p)),
      api(`/api/reports/daily?${range}&stack_by=${$("usage-stack").value}${filter}`).then((d) => renderUsage(d, p)),
      api(`/api/reports/tools?${range}${filter}`).then((d) => renderTools(d, p)),
      api(`/api/mcp/sessions/disconnected?days=${disconnectedDays}&limit=50${filter}`).then((d) => renderDisconnected(d, p)),
      loadTokens(),
      loadConnections(),
    ];
    if (me && (me.role === "admin" || me.role === "auditor")) jobs.push(api("/api/upstreams").then(renderUpstreams));
    inFlight = Promise.allSettled(jobs).then((results) => {
      const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
      if (failed.some((e) => e instanceof Unauthorized)) {
        signOut("The token was refused (expired or revoked?). Paste a valid one.");
        return;
      }
      placeExpanded();
      restoreFocus(focusKey);
      const banner = $("board-error");
      banner.hidden = failed.length === 0;
      banner.textContent = failed.map((e) => e.message).join("; ");
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    }).finally(() => { inFlight = null; });
    return inFlight;
  }

  async function refreshNow() {
    if (inFlight) await inFlight;
    return refresh();
  }

  function schedule() {
    clearTimeout(timer);
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    timer = setTimeout(async () => {
      await refresh();
      schedule();
    }, document.hidden ? HIDDEN_MS : VISIBLE_MS);
  }

  function handleError(error) {
    if (error instanceof Unauthorized) signOut("The token was refused (expired or revoked?). Paste a valid one.");
    else {
      $("board-error").hidden = false;
      $("board-error").textContent = error.message;
    }
  }

  // -- sign in / out -----------------------------------------------------------------------------

  async function showBoard() {
    try {
      me = await api("/api/me");
    } catch (error) {
      if (error instanceof Unauthorized) { signOut("The token was refused (expired or revoked?). Paste a valid one."); return; }
      me = null;
    }
    applyRole();
    $("login").hidden = true;
    $("board").hidden = false;
    $("controls").hidden = false;
    await refresh();
    schedule();
  }

  function signOut(message) {
    clearTimeout(timer);
    sessionStorage.removeItem(TOKEN_KEY);
    collapse();
    me = null;
    armedRevoke = null;
    $("token-secret").hidden = true;
    $("token-value").value = "";
    $("board").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    let token = $("token").value.trim();
    if (/^bearer\s+/i.test(token)) token = token.replace(/^bearer\s+/i, "");
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    try {
      await api("/api/me");
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("login-error").textContent = error instanceof Unauthorized
        ? "This token was refused. Check that it is complete, not expired and not revoked."
        : `The gateway did not answer as expected: ${error.message}`;
      return;
    }
    $("login-error").textContent = "";
    showBoard();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut(""));
    $("refresh").addEventListener("click", () => refreshNow());
    for (const id of ["period", "user-filter", "live-window", "usage-stack", "usage-measure"]) {
      $(id).addEventListener("change", () => refreshNow());
    }
    for (const id of ["active", "disconnected"]) $(id).addEventListener("click", onSessionClick);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && expanded && expanded.row.contains(document.activeElement)) {
        const id = expanded.id;
        collapse();
        const back = document.querySelector(`tr[data-session="${CSS.escape(id)}"] button.link`);
        if (back) back.focus();
      }
    });
    document.querySelectorAll("button[data-csv]").forEach((b) => {
      b.setAttribute("aria-label", `Download ${b.dataset.csv} as CSV`);
      b.addEventListener("click", () => download(b.dataset.csv));
    });
    $("token-form").addEventListener("submit", createToken);
    $("tokens").addEventListener("click", onTokenAction);
    $("connections").addEventListener("click", onConnectionAction);
    const linkProblem = new URLSearchParams(window.location.search).get("connection_error");
    if (linkProblem) $("connection-error").textContent = linkProblem;  // textContent: never markup
    $("token-copy").addEventListener("click", async () => {
      try { await navigator.clipboard.writeText($("token-value").value); $("status").textContent = "copied"; }
      catch (e) { $("token-value").select(); $("status").textContent = "press Ctrl+C to copy"; }
    });
    $("token-done").addEventListener("click", () => {
      $("token-value").value = "";
      $("token-secret").hidden = true;
      $("token-name").focus();
    });
    $("tokens-title").setAttribute("tabindex", "-1");
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (lastUsage) renderUsage(...lastUsage); }, 150);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
      schedule();
    });
    if (sessionStorage.getItem(TOKEN_KEY)) showBoard();
    else signOut("");
  });
})();
