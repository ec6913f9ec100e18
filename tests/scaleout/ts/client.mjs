// One handshake-era MCP session with the TypeScript SDK: N echo calls, then DELETE (terminateSession).
// usage: node client.mjs URL TOKEN CALLS NAME  -> prints one JSON line {ok, errors, sessionId}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, calls, name] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: name ?? "ts-sdk-client", version: "1.32.2" });
const result = { ok: 0, errors: [], sessionId: null };
try {
  await client.connect(transport);
  result.sessionId = transport.sessionId ?? null;
  for (let i = 0; i < Number(calls); i++) {
    try {
      const answer = await client.callTool({ name: "echo", arguments: { text: `${name}-${i}` } });
      const text = answer.content?.[0]?.text;
      if (!answer.isError && text === `${name}-${i}`) result.ok += 1;
      else result.errors.push(`call ${i}: ${JSON.stringify(answer).slice(0, 200)}`);
    } catch (err) {
      result.errors.push(`call ${i}: ${String(err).slice(0, 200)}`);
    }
  }
  await transport.terminateSession();
} catch (err) {
  result.errors.push(`session: ${String(err).slice(0, 300)}`);
} finally {
  await client.close().catch(() => {});
}
console.log(JSON.stringify(result));
