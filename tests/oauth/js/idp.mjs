// A real OpenID Connect provider on loopback for the gateway's delegated sign-in
// (node-oidc-provider with its development login/consent pages; any login name signs in).
// Usage: node idp.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI   -> prints "ready <issuer>"
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

// Claims per login name; unknown names are members of tenant "acme".
const people = {
  alice: { tenant: 'acme', roles: ['member'], email: 'alice@acme.example', name: 'Alice' },
  carol: { tenant: 'globex', roles: ['admin'], email: 'carol@globex.example', name: 'Carol' },
  notenant: { email: 'nobody@example.com' },
  dora: { email: 'dora@mapped.example', email_verified: true, name: 'Dora' },  // tenant by email domain
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub', 'tenant', 'roles'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false, // claims in the ID token itself (the gateway reads only the ID token)
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, ...(people[id] ?? { tenant: 'acme', email: `${id}@acme.example` }) }),
  }),
  cookies: { keys: ['mcp-gateway-test-cookie-key'] },
  features: { devInteractions: { enabled: true } },
});
provider.proxy = false;
const server = provider.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
