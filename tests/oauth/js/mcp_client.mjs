// The official MCP TypeScript SDK as an OAuth-only client of the gateway: it starts from the MCP
// URL alone, discovers the authorization server (RFC 9728 -> RFC 8414), registers (CIMD or DCR),
// and a headless Chromium (Playwright, system browser) does what a person does on the sign-in and
// consent pages. Then it calls a tool. Prints one JSON line: {"ok": true, "tool": ..., "client_id": ...}.
//
// Usage: node mcp_client.mjs '{"url": ..., "mode": "cimd"|"dcr", "metadataUrl": ..., "callbackPort": N,
//                             "pat": ..., "idpLogin": ..., "browser": "/usr/bin/chromium"}'
import http from 'node:http';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2]);
const redirectUrl = `http://127.0.0.1:${opts.callbackPort}/callback`;

class Provider {
  constructor() { this.info = undefined; this.saved = undefined; this.verifier = undefined; this.authUrl = undefined; }
  get redirectUrl() { return redirectUrl; }
  get clientMetadataUrl() { return opts.mode === 'cimd' ? opts.metadataUrl : undefined; }
  get clientMetadata() {
    return { client_name: `SDK test client (${opts.mode})`, redirect_uris: [redirectUrl],
             grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
             token_endpoint_auth_method: 'none' };
  }
  clientInformation() { return this.info; }
  saveClientInformation(info) { this.info = info; }
  tokens() { return this.saved; }
  saveTokens(tokens) { this.saved = tokens; }
  redirectToAuthorization(url) { this.authUrl = url; }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
}

function waitForCallback() {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      const url = new URL(req.url, redirectUrl);
      if (url.pathname !== '/callback') { res.writeHead(404).end(); return; }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('done');
      server.close();
      resolve(Object.fromEntries(url.searchParams));
    });
    server.on('error', reject);
    server.listen(opts.callbackPort, '127.0.0.1');
  });
}

async function signIn(authUrl) {
  const callback = waitForCallback();
  const browser = await chromium.launch({ executablePath: opts.browser, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    await page.goto(String(authUrl));
    let params;
    const done = callback.then((p) => { params = p; });
    for (let step = 0; step < 12 && params === undefined; step += 1) {
      await Promise.race([page.waitForLoadState('load'), done]);
      if (params !== undefined) break;
      const url = new URL(page.url());
      if (url.pathname === '/oauth/login') {
        await page.fill('input[name=token]', opts.pat);
        await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      } else if (url.pathname === '/oauth/consent') {
        await Promise.all([page.waitForNavigation().catch(() => {}), page.click('button[value=approve]')]);
        await done;
      } else if (url.pathname.startsWith('/interaction/')) {  // the IdP's pages
        if (await page.locator('input[name=login]').count()) {
          await page.fill('input[name=login]', opts.idpLogin);
          await page.fill('input[name=password]', 'any');
        }
        await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      } else {
        throw new Error(`unexpected page ${url.href}: ${(await page.content()).slice(0, 500)}`);
      }
    }
    await done;
    return params;
  } finally {
    await browser.close();
  }
}

async function connect(provider) {
  const client = new Client({ name: 'sdk-oauth-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), { authProvider: provider });
  await client.connect(transport);
  return client;
}

const provider = new Provider();
try {
  let client;
  try {
    client = await connect(provider);
  } catch (error) {
    if (!(error instanceof UnauthorizedError) || !provider.authUrl) throw error;
    const params = await signIn(provider.authUrl);
    if (!params.code) throw new Error(`authorization failed: ${JSON.stringify(params)}`);
    const transport = new StreamableHTTPClientTransport(new URL(opts.url), { authProvider: provider });
    await transport.finishAuth(params.code);
    client = await connect(provider);
    var iss = params.iss;
  }
  const result = await client.callTool({ name: 'echo', arguments: { text: `sdk ${opts.mode}` } });
  const who = await client.callTool({ name: 'whoami', arguments: {} });
  await client.close();
  console.log(JSON.stringify({ ok: true, tool: result.content?.[0]?.text, whoami: who.structuredContent ?? who.content,
                               client_id: provider.info?.client_id, iss, refresh: Boolean(provider.saved?.refresh_token) }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }));
  process.exitCode = 1;
}
