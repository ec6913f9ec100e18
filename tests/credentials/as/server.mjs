// A real OAuth 2.0 authorization server on loopback (oauth2-mock-server) for the per_user_oauth tests.
//
//   node server.mjs PORT AUDIENCE ACCESS_TTL_SECONDS [honest]
//
// /authorize redirects at once (no login page); the `login_hint` query parameter names the user,
// who becomes the `sub` of the tokens issued for that code and for its refresh tokens.
// Access tokens expire after ACCESS_TTL_SECONDS, while the token response still says 3600:
// the gateway learns about the expiry only from the upstream's 401 (the refresh-on-401 path).
// With "honest", the response says the real lifetime (the refresh-before-the-call path).
// Prints one line per token issued: "issued <grant_type> <sub>".
import { OAuth2Server } from 'oauth2-mock-server';

const [port, audience, ttl] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const honest = process.argv[5] === 'honest';
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
const codeUser = new Map();
const refreshUser = new Map();

server.service.on('beforeAuthorizeRedirect', (redirect, req) => {
  const code = redirect.url.searchParams.get('code');
  if (code) codeUser.set(code, String(req.query.login_hint || 'nobody'));
});
server.service.on('beforeTokenSigning', (token, req) => {
  const body = req.body || {};
  const sub = body.grant_type === 'refresh_token' ? refreshUser.get(body.refresh_token) : codeUser.get(body.code);
  token.payload.sub = sub || 'nobody';
  token.payload.aud = audience;
  token.payload.exp = Math.floor(Date.now() / 1000) + ttl;
  req.mcpSub = token.payload.sub;
});
server.service.on('beforeResponse', (response, req) => {
  const body = req.body || {};
  if (response.body.refresh_token && req.mcpSub) refreshUser.set(response.body.refresh_token, req.mcpSub);
  if (body.grant_type === 'refresh_token' && !refreshUser.has(body.refresh_token)) {
    response.statusCode = 400;
    response.body = { error: 'invalid_grant' };
    return;
  }
  if (honest && response.body.access_token) response.body.expires_in = ttl;
  if (response.body.access_token) console.log(`issued ${body.grant_type} ${req.mcpSub}`);
});

await server.start(port, '127.0.0.1');
server.issuer.url = `http://127.0.0.1:${port}`;
console.log(`listening ${server.issuer.url}`);
