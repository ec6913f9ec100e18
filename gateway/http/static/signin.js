// mcp-gateway dashboard: sign in through the gateway's own OAuth authorization server (the same flow
// as any MCP client: PKCE S256, state, the sign-in and consent pages), instead of pasting a token.
// The access token lands in the tab's sessionStorage where dashboard.js expects a pasted one.
(() => {
  "use strict";
  const TOKEN_KEY = "mcp-gateway.token";
  const FLOW_KEY = "mcp-gateway.oauth-flow";
  const CLIENT_ID = "mcp-gateway-dashboard";
  const redirectUri = `${location.origin}/dashboard`;

  function b64url(bytes) {
    return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_")
      .replace(/=+$/, "");
  }

  function random(n) {
    return b64url(crypto.getRandomValues(new Uint8Array(n)));
  }

  async function metadata() {
    const response = await fetch("/.well-known/oauth-authorization-server", { headers: { Accept: "application/json" } });
    return response.ok ? response.json() : null;
  }

  async function start(meta) {
    const verifier = random(48);
    const state = random(24);
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    sessionStorage.setItem(FLOW_KEY, JSON.stringify({ verifier, state, token: meta.token_endpoint }));
    const query = new URLSearchParams({
      response_type: "code", client_id: CLIENT_ID, redirect_uri: redirectUri, state, scope: "mcp",
      code_challenge: challenge, code_challenge_method: "S256", resource: `${location.origin}/mcp`,
    });
    location.assign(`${meta.authorization_endpoint}?${query}`);
  }

  function showError(message) {
    // after dashboard.js has shown (and cleared) the sign-in form
    setTimeout(() => { document.getElementById("login-error").textContent = message; }, 0);
  }

  async function finish(params) {
    const flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) || "null");
    sessionStorage.removeItem(FLOW_KEY);
    if (!flow || params.get("state") !== flow.state) {
      showError("Sign-in answer did not match this tab's request; try again.");
      return false;
    }
    if (!params.get("code")) {
      showError(`Sign-in did not complete (${params.get("error") || "no code"}).`);
      return false;
    }
    const response = await fetch(flow.token, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: new URLSearchParams({
        grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri,
        client_id: CLIENT_ID, code_verifier: flow.verifier, resource: `${location.origin}/mcp`,
      }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.access_token) {
      showError(`Sign-in failed: ${body.error_description || body.error || response.status}`);
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, body.access_token);
    return true;
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const params = new URLSearchParams(location.search);
    if (params.has("state") && (params.has("code") || params.has("error"))) {
      history.replaceState(null, "", "/dashboard");  // the code never stays in the address bar
      if (await finish(params)) {
        location.replace("/dashboard");  // dashboard.js starts again and finds the token
        return;
      }
    }
    const button = document.getElementById("oauth-signin");
    const meta = await metadata().catch(() => null);
    if (!button || !meta || !meta.authorization_endpoint) return;
    button.hidden = false;
    button.addEventListener("click", () => start(meta));
  });
})();
