// A real OpenID Provider for Warden's tests: the certified `oidc-provider` package on loopback,
// with a one-step login page, users and groups the tests choose, and a way to tamper with the
// next ID token a client receives (to prove Warden refuses it).
//
//   node end2end/oidc/provider.mjs [--port N] [--host 127.0.0.1] [--config FILE]
//
// Prints `listening http://HOST:PORT` on its first line of stdout once it serves. The issuer is
// that URL. FILE (JSON) may hold `{"clients": [client metadata...], "users": {"sub": {...}}}`.
//
// Clients: static ones from FILE, or registered at run time with Dynamic Client Registration
// (`POST /reg`, RFC 7591, open: no initial access token). Test-only endpoints, loopback only:
//   PUT  /__admin/users/SUB   {"email", "name", "groups": [..], "email_verified", "amr": [..]}: a
//        user; `amr` (RFC 8176 values, e.g. ["pwd", "otp"]) is what their sign-in says was used,
//        carried into the ID token's `amr` claim
//   POST /__admin/tamper      {"client_id", "claims": {..}, "drop_claims": [..], "unknown_key": bool}
//        the next ID token issued to that client carries these claims (null deletes one), lacks
//        the dropped ones (userinfo still has them), or is signed by a key the JWKS does not have.
// Any login name is accepted (no password): the account is the user registered under that name,
// or `NAME@example.com` with no groups.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';
import * as jose from 'jose';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', '0'));
const configFile = arg('config', null);
const fileConfig = configFile ? JSON.parse(readFileSync(configFile, 'utf8')) : {};

const users = new Map(Object.entries(fileConfig.users ?? {}));
const tampering = new Map();

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: 'warden-test-key', alg: 'RS256', use: 'sig' };
// A key nobody publishes, for the "unknown kid" case.
const { privateKey: strayKey } = await jose.generateKeyPair('RS256');

function userClaims(sub) {
  const u = users.get(sub) ?? {};
  return {
    sub,
    email: u.email ?? `${sub}@example.com`,
    email_verified: u.email_verified ?? true,
    name: u.name ?? sub,
    groups: u.groups ?? [],
  };
}

const escapeHtml = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const configuration = {
  clients: fileConfig.clients ?? [],
  jwks: { keys: [signingJwk] },
  async findAccount(ctx, sub) {
    return { accountId: sub, claims: async () => userClaims(sub) };
  },
  claims: {
    // `amr` (from the login's result) in the ID token whenever the sign-in set it.
    openid: ['sub', 'amr'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  // Scope claims in the ID token too (a provider that keeps them for userinfo is simulated
  // with `drop_claims`).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
  },
  pkce: { required: () => true },
  cookies: { keys: ['warden-test-provider-cookies'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>Provider error</title><h1>Provider error</h1><p>${escapeHtml(out.error)}: ${escapeHtml(out.error_description)}</p>`;
  },
};

let handler = () => {};
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve) => server.listen(port, host, resolve));
const issuer = `http://${host}:${server.address().port}`;
const provider = new Provider(issuer, configuration);

async function readBody(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function loginPage(uid, client) {
  return `<!DOCTYPE html><html><head><title>Test provider: sign in</title></head><body>
<h1>Sign in to the test provider</h1>
<p>for ${escapeHtml(client)}</p>
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>Username <input name="login" autofocus required></label>
  <button type="submit">Sign in</button>
  <button type="submit" formaction="/interaction/${escapeHtml(uid)}/abort" formnovalidate>Cancel</button>
</form></body></html>`;
}

// Grant what the client asked for (the test provider never asks for consent).
async function grantAll(interaction, accountId) {
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId, clientId: interaction.params.client_id });
  grant.addOIDCScope(String(interaction.params.scope ?? 'openid'));
  return grant.save();
}

provider.use(async (ctx, next) => {
  const path = ctx.path;
  if (path.startsWith('/__admin/')) {
    const body = ctx.method === 'GET' ? {} : JSON.parse((await readBody(ctx)) || '{}');
    const user = path.match(/^\/__admin\/users\/([^/]+)$/);
    if (user && ctx.method === 'PUT') {
      users.set(decodeURIComponent(user[1]), body);
      ctx.status = 204;
      return;
    }
    if (path === '/__admin/tamper' && ctx.method === 'POST') {
      tampering.set(body.client_id, body);
      ctx.status = 204;
      return;
    }
    ctx.status = 404;
    return;
  }
  const interaction = path.match(/^\/interaction\/([^/]+)(\/login|\/abort)?$/);
  if (interaction) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (ctx.method === 'GET' && !interaction[2]) {
      if (details.prompt.name === 'login') {
        ctx.type = 'html';
        ctx.body = loginPage(details.uid, details.params.client_id);
        return;
      }
      const grantId = await grantAll(details, details.session.accountId);
      await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      ctx.respond = false;
      return;
    }
    if (ctx.method === 'POST' && interaction[2] === '/abort') {
      await provider.interactionFinished(ctx.req, ctx.res, { error: 'access_denied', error_description: 'the user cancelled the sign-in' }, { mergeWithLastSubmission: false });
      ctx.respond = false;
      return;
    }
    if (ctx.method === 'POST' && interaction[2] === '/login') {
      const form = new URLSearchParams(await readBody(ctx));
      const accountId = (form.get('login') ?? '').trim();
      if (!accountId) {
        ctx.type = 'html';
        ctx.body = loginPage(details.uid, details.params.client_id);
        return;
      }
      const grantId = await grantAll(details, accountId);
      const amr = users.get(accountId)?.amr;
      const login = Array.isArray(amr) ? { accountId, amr } : { accountId };
      await provider.interactionFinished(ctx.req, ctx.res, { login, consent: { grantId } }, { mergeWithLastSubmission: false });
      ctx.respond = false;
      return;
    }
  }
  await next();
  // Tampering: rewrite (and re-sign) the ID token of a token response.
  if (path === '/token' && ctx.body && ctx.body.id_token && ctx.oidc?.client) {
    const t = tampering.get(ctx.oidc.client.clientId);
    if (t) {
      tampering.delete(ctx.oidc.client.clientId);
      const claims = { ...jose.decodeJwt(ctx.body.id_token) };
      for (const [k, v] of Object.entries(t.claims ?? {})) {
        if (v === null) delete claims[k];
        else claims[k] = v;
      }
      for (const k of t.drop_claims ?? []) delete claims[k];
      const kid = t.unknown_key ? 'a-key-nobody-published' : signingJwk.kid;
      ctx.body = {
        ...ctx.body,
        id_token: await new jose.SignJWT(claims)
          .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
          .sign(t.unknown_key ? strayKey : privateKey),
      };
    }
  }
});

handler = provider.callback();
process.stdout.write(`listening ${issuer}\n`);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
