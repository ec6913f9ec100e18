// mcp-gateway dashboard: calls /api/* with the pasted bearer token; row-level security decides
// what comes back. No framework, no build step, nothing from another origin.
"use strict";

(function () {
  const TOKEN_KEY = "mcp-gateway.token";
  const VISIBLE_MS = 10000;
  const HIDDEN_MS = 60000;
  // The API lives next to /dashboard (also behind a proxy that adds a path prefix).
  const BASE = window.location.pathname.replace(/\/dashboard\/?$/, "");
  const $ = (id) => document.getElementById(id);

  let timer = null;
  let inFlight = null;
  let selectedSession = null;

  // -- helpers --------------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "title") node.title = value;
      else node.setAttribute(key, value);
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

  function pick(obj, ...keys) {
    for (const key of keys) {
      if (obj && obj[key] !== undefined && obj[key] !== null) return obj[key];
    }
    return undefined;
  }

  function listOf(data, ...keys) {
    if (Array.isArray(data)) return data;
    for (const key of keys) {
      if (data && Array.isArray(data[key])) return data[key];
    }
    return [];
  }

  function num(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  // USD with 8 places, as the API, CSV and CLI show it (docs/reports.md): the same figure everywhere.
  function money(value) {
    return num(value).toFixed(8);
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

  function who(row) {
    return pick(row, "user_id", "user") || "?";
  }

  function clientName(row) {
    const type = pick(row, "client_type", "client") || "unknown";
    const version = pick(row, "client_version");
    return version ? `${type} ${version}` : type;
  }

  function fill(tbody, rows, empty) {
    tbody.replaceChildren(...rows);
    if (empty) empty.hidden = rows.length > 0;
  }

  // -- API --------------------------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(BASE + path, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new Unauthorized("the token was refused (expired or revoked?)");
    if (!response.ok) {
      let detail = "";
      try { detail = (await response.json()).detail || ""; } catch (e) { /* not JSON */ }
      throw new Error(`${path.split("?")[0]}: HTTP ${response.status}${detail ? ` (${detail})` : ""}`);
    }
    return response.json();
  }

  function period() {
    // Cost reports count whole UTC days, `until` (default today) included: N days = today and N-1 before.
    const days = Number($("period").value) || 7;
    return { days, since: days === 1 ? "today" : `${days - 1}d` };
  }

  // -- sections ---------------------------------------------------------------------------------

  function renderActive(data) {
    // /api/mcp/clients also lists sessions that ended recently: this table is the open ones.
    const sessions = listOf(data, "clients", "sessions", "items").filter((s) => s.status !== "disconnected");
    $("active-count").textContent = String(sessions.length);
    const rows = sessions.map((s) => {
      const id = pick(s, "session_id", "id");
      const connected = pick(s, "connected_at");
      const tr = el("tr", { class: "clickable", dataset: { session: id, user: who(s) }, tabindex: "0" },
        el("td", { class: "user" }, who(s), pick(s, "user_email") ? el("div", { class: "sub" }, s.user_email) : null),
        el("td", {}, clientName(s)),
        el("td", {}, pick(s, "transport") || "–"),
        el("td", { class: "num" }, num(pick(s, "request_count", "requests", "calls"))),
        el("td", {}, connected ? duration((Date.now() - Date.parse(connected)) / 1000) : "–"),
        el("td", { title: clock(pick(s, "last_activity")) }, since(pick(s, "last_activity"))));
      if (id === selectedSession) tr.classList.add("selected");
      return tr;
    });
    fill($("active").tBodies[0], rows, $("active-empty"));
  }

  function renderCosts(data, p) {
    const rows = listOf(data, "rows", "items", "data", "costs");
    const tenants = new Set(rows.map((r) => r.tenant_id));
    const users = rows.map((r) => ({
      user: String(pick(r, "user_id", "user", "key", "group") ?? "?"),
      label: tenants.size > 1 ? `${r.tenant_id}/${pick(r, "user_id", "user")}` : String(pick(r, "user_id", "user") ?? "?"),
      calls: num(pick(r, "calls", "request_count", "requests", "total_requests")),
      tokens: num(pick(r, "total_tokens", "tokens")) ||
        num(pick(r, "prompt_tokens")) + num(pick(r, "completion_tokens")),
      cost: num(pick(r, "estimated_cost_usd", "cost_usd", "estimated_cost", "total_cost", "cost")),
    })).sort((a, b) => b.cost - a.cost || b.calls - a.calls || a.user.localeCompare(b.user));
    $("cost-period").textContent = `last ${p.days} day${p.days > 1 ? "s" : ""}`;
    fill($("costs").tBodies[0], users.map((u) => el("tr", { dataset: { user: u.user } },
      el("td", { class: "user" }, u.label), el("td", { class: "num" }, u.calls),
      el("td", { class: "num" }, u.tokens), el("td", { class: "num" }, money(u.cost)))), $("costs-empty"));
    renderChart(users.slice(0, 12));
  }

  function renderChart(users) {
    const box = $("cost-chart");
    if (!users.length) { box.replaceChildren(); return; }
    const rowHeight = 22, labelWidth = 120, valueWidth = 80, width = 560;
    const barSpace = width - labelWidth - valueWidth;
    const max = Math.max(...users.map((u) => u.cost), 1e-9);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${users.length * rowHeight + 4}`,
                               "aria-hidden": "true" });
    users.forEach((u, i) => {
      const y = i * rowHeight + 2;
      const label = u.label.length > 18 ? `${u.label.slice(0, 17)}…` : u.label;
      chart.append(svg("text", { x: labelWidth - 6, y: y + 14, "text-anchor": "end" }, label));
      const bar = svg("rect", { class: "bar-rect", x: labelWidth, y: y + 3,
                                width: Math.max(1, (u.cost / max) * barSpace), height: rowHeight - 8, rx: 2 });
      bar.append(svg("title", {}, `${u.label}: $${money(u.cost)} (${u.calls} calls)`));
      chart.append(bar);
      chart.append(svg("text", { class: "value", x: labelWidth + Math.max(1, (u.cost / max) * barSpace) + 6,
                                 y: y + 14 }, `$${money(u.cost)}`));
    });
    box.replaceChildren(chart);
  }

  function renderTools(data, p) {
    const rows = listOf(data, "rows", "items", "data", "costs");
    const tools = rows.map((r) => {
      const calls = num(pick(r, "calls", "request_count", "requests", "total_requests"));
      const errors = num(pick(r, "errors", "error_count"));
      return { tool: String(pick(r, "tool_name", "tool", "key", "group") || "(no tool)"), calls, errors,
               denied: num(pick(r, "denied", "denied_count")), rate: calls ? errors / calls : 0 };
    }).sort((a, b) => b.calls - a.calls || a.tool.localeCompare(b.tool));
    $("tools-period").textContent = `last ${p.days} day${p.days > 1 ? "s" : ""}`;
    fill($("tools").tBodies[0], tools.map((t) => {
      const fillBar = el("div", { class: "fill" });
      fillBar.style.width = `${Math.round(t.rate * 100)}%`;
      return el("tr", { dataset: { tool: t.tool } },
        el("td", {}, t.tool), el("td", { class: "num" }, t.calls), el("td", { class: "num" }, t.errors),
        el("td", { class: "num" }, t.denied),
        el("td", {}, el("span", { class: "rate" }, el("span", { class: "track" }, fillBar),
                        `${(t.rate * 100).toFixed(1)}%`)));
    }), $("tools-empty"));
  }

  function renderDisconnected(data) {
    const sessions = listOf(data, "sessions");
    const stats = (data && data.statistics) || {};
    const days = data && data.period && data.period.days;
    $("disconnected-period").textContent = days ? `last ${days} day${days > 1 ? "s" : ""}` : "";
    const figures = [
      [num(stats.total_disconnected), "disconnected"],
      [duration(stats.avg_duration_seconds), "average duration"],
      [duration(stats.max_duration_seconds), "longest"],
    ];
    $("disconnected-stats").replaceChildren(...figures.map(([value, label]) =>
      el("div", {}, el("strong", {}, value), el("span", {}, label))));
    const reasons = Object.entries(stats.disconnect_reasons || {}).sort((a, b) => b[1] - a[1]);
    $("reasons").replaceChildren(...reasons.map(([reason, count]) =>
      el("span", { class: "reason", dataset: { reason } }, reason, el("b", {}, count))));
    fill($("disconnected").tBodies[0], sessions.map((s) => {
      const id = pick(s, "session_id", "id");
      const tr = el("tr", { class: "clickable", dataset: { session: id, user: who(s) }, tabindex: "0" },
        el("td", { class: "user" }, who(s)), el("td", {}, clientName(s)),
        el("td", {}, el("span", { class: "pill" }, pick(s, "disconnect_reason") || "–")),
        el("td", {}, duration(pick(s, "total_duration"))),
        el("td", { title: clock(pick(s, "disconnected_at")) }, since(pick(s, "disconnected_at"))));
      if (id === selectedSession) tr.classList.add("selected");
      return tr;
    }), $("disconnected-empty"));
  }

  async function showSession(id) {
    selectedSession = id;
    document.querySelectorAll("tr.selected").forEach((tr) => tr.classList.remove("selected"));
    document.querySelectorAll(`tr[data-session="${CSS.escape(id)}"]`).forEach((tr) => tr.classList.add("selected"));
    $("detail-card").hidden = false;
    $("detail-id").textContent = id;
    try {
      const data = await api(`/api/mcp/sessions/${encodeURIComponent(id)}`);
      if (selectedSession !== id) return;
      const session = data.session || data;
      const requests = listOf(data, "requests").length ? listOf(data, "requests") : listOf(session, "requests");
      $("detail-meta").textContent = [
        `${who(session)}${session.tenant_id ? ` (${session.tenant_id})` : ""}`, clientName(session),
        pick(session, "transport"), pick(session, "status"),
        `connected ${clock(pick(session, "connected_at"))}`,
        pick(session, "disconnect_reason") ? `ended: ${session.disconnect_reason}` : null,
      ].filter(Boolean).join(" · ");
      fill($("requests").tBodies[0], requests.map((r) => {
        const status = pick(r, "status") || "?";
        return el("tr", { dataset: { tool: pick(r, "tool_name", "tool") || "" } },
          el("td", {}, clock(pick(r, "timestamp", "at"))), el("td", {}, pick(r, "tool_name", "tool") || pick(r, "method")),
          el("td", {}, el("span", { class: `pill ${status}` }, status)),
          el("td", { class: "num" }, `${num(pick(r, "duration_ms")).toFixed(1)} ms`),
          el("td", { class: "num" }, num(pick(r, "prompt_tokens")) + num(pick(r, "completion_tokens"))),
          el("td", { class: "num" }, money(pick(r, "estimated_cost", "cost"))),
          el("td", { class: "error-text" }, pick(r, "error_message") || ""));
      }), $("requests-empty"));
    } catch (error) {
      handleError(error);
    }
  }

  // -- refresh loop ------------------------------------------------------------------------------

  async function refresh() {
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    if (inFlight) return inFlight;
    const p = period();
    const query = `since=${encodeURIComponent(p.since)}&format=json`;
    const disconnectedDays = Math.min(30, Math.max(1, p.days));
    $("status").textContent = "refreshing…";
    inFlight = Promise.allSettled([
      api("/api/mcp/clients").then(renderActive),
      api(`/api/reports/costs?${query}&group_by=user`).then((d) => renderCosts(d, p)),
      api(`/api/reports/costs?${query}&group_by=tool`).then((d) => renderTools(d, p)),
      api(`/api/mcp/sessions/disconnected?days=${disconnectedDays}&limit=50`).then(renderDisconnected),
    ]).then((results) => {
      const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
      if (failed.some((e) => e instanceof Unauthorized)) {
        signOut("The token was refused (expired or revoked?). Paste a valid one.");
        return;
      }
      const banner = $("board-error");
      banner.hidden = failed.length === 0;
      banner.textContent = failed.map((e) => e.message).join("; ");
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    }).finally(() => { inFlight = null; });
    if (selectedSession) showSession(selectedSession);
    return inFlight;
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

  function showBoard() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("controls").hidden = false;
    refresh().then(schedule);
  }

  function signOut(message) {
    clearTimeout(timer);
    sessionStorage.removeItem(TOKEN_KEY);
    selectedSession = null;
    $("board").hidden = true;
    $("controls").hidden = true;
    $("detail-card").hidden = true;
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
      await api("/api/mcp/clients");
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

  function onRowActivate(event) {
    const row = event.target.closest("tr[data-session]");
    if (!row || (event.type === "keydown" && event.key !== "Enter")) return;
    showSession(row.dataset.session);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut(""));
    $("refresh").addEventListener("click", () => refresh());
    $("period").addEventListener("change", () => refresh());
    $("detail-close").addEventListener("click", () => {
      selectedSession = null;
      $("detail-card").hidden = true;
      document.querySelectorAll("tr.selected").forEach((tr) => tr.classList.remove("selected"));
    });
    for (const id of ["active", "disconnected"]) {
      $(id).addEventListener("click", onRowActivate);
      $(id).addEventListener("keydown", onRowActivate);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
      schedule();
    });
    if (sessionStorage.getItem(TOKEN_KEY)) showBoard();
    else signOut("");
  });
})();
