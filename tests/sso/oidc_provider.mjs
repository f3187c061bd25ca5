// A real OpenID Connect provider for the SSO tests: the certified `oidc-provider` package,
// with its built-in login and consent pages, one confidential client, and a user store the
// test controls through a JSON file (re-read at every login, so a test can change a user's
// groups between two logins).
//
//   OIDC_TEST_ISSUER      http://127.0.0.1:PORT (the port to listen on is taken from it)
//   OIDC_TEST_CLIENT      JSON: {client_id, client_secret, redirect_uris, post_logout_redirect_uris}
//   OIDC_TEST_USERS_FILE  JSON: {"<login>": {"preferred_username": ..., "email": ...,
//                               "email_verified": true, "groups": [...]}, ...}; the login is the `sub`
//
// Prints "oidc-provider listening on <issuer>" once it accepts connections.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const issuer = process.env.OIDC_TEST_ISSUER;
const client = JSON.parse(process.env.OIDC_TEST_CLIENT);
const usersFile = process.env.OIDC_TEST_USERS_FILE;

function users() {
  return JSON.parse(readFileSync(usersFile, 'utf8'));
}

// A fresh RS256 signing key per run: the portal must fetch it from the JWKS endpoint.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-signing-key', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['sso-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: true }, // the provider's own login and consent pages
    rpInitiatedLogout: {
      enabled: true,
      // The default page imports a web font; this one loads nothing from outside the machine.
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><title>Logout Request</title></head><body>
          <h1>Do you want to sign-out from ${ctx.host}?</h1>${form}
          <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
          <button type="submit" form="op.logoutForm">No, stay signed in</button></body></html>`;
      },
    },
  },
  async findAccount(ctx, login) {
    const user = users()[login];
    if (!user) return undefined;
    return {
      accountId: login,
      async claims() {
        // Re-read so the groups are the ones in the file at the time of this login.
        const current = users()[login] || user;
        return { ...current, sub: login };
      },
    };
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});
provider.proxy = false;

const port = Number(new URL(issuer).port);
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
