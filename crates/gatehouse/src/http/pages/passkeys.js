// gatehouse's hosted pages: the WebAuthn calls behind their passkey
// buttons (add a passkey on /account, sign in with a passkey on /login, a
// passkey as the second step). Everything else on the pages works without
// it; the buttons stay hidden where it cannot run. It talks to the JSON API
// of the same origin (Content-Security-Policy: script-src 'self';
// connect-src 'self').
(() => {
  'use strict';
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseCreationOptionsFromJSON) return;

  async function post(path, body) {
    const res = await fetch(path, {
      method: 'POST',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await res.json(); } catch (_) { /* no body */ }
    return { ok: res.ok, status: res.status, json };
  }

  function fail(box, message) {
    const p = box.querySelector('[data-passkey-error]');
    p.textContent = message;
    p.hidden = false;
  }

  async function assertion(publicKey) {
    const cred = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey),
    });
    return cred.toJSON();
  }

  function wire(kind, run) {
    const box = document.querySelector(`[data-passkey="${kind}"]`);
    if (!box) return;
    box.hidden = false;
    const button = box.querySelector('button');
    button.addEventListener('click', async () => {
      button.disabled = true;
      box.querySelector('[data-passkey-error]').hidden = true;
      try {
        await run(box);
      } catch (e) {
        fail(box, e && e.name === 'NotAllowedError'
          ? 'The passkey was not used. Try again.'
          : 'The passkey could not be used. Try again.');
      } finally {
        button.disabled = false;
      }
    });
  }

  wire('register', async (box) => {
    const options = await post('/v1/me/passkeys/options');
    if (!options.ok) return fail(box, options.status === 401
      ? 'Sign in with your second factor first, then add a passkey.'
      : 'A passkey cannot be added now.');
    const cred = await navigator.credentials.create({
      publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options.json.publicKey),
    });
    const name = box.querySelector('input').value;
    const done = await post('/v1/me/passkeys', {
      challenge_id: options.json.challenge_id, name, credential: cred.toJSON(),
    });
    if (!done.ok) return fail(box, 'The passkey was not added. Try again.');
    const codes = done.json.recovery_codes;
    if (!codes) { window.location.assign('/account?notice=passkey-added'); return; }
    const shown = box.querySelector('[data-passkey-codes]');
    const list = shown.querySelector('ul');
    for (const code of codes) {
      const li = document.createElement('li');
      const c = document.createElement('code');
      c.textContent = code;
      li.append(c);
      list.append(li);
    }
    shown.hidden = false;
    box.querySelector('button').hidden = true;
  });

  wire('sign-in', async (box) => {
    const options = await post('/v1/login/passkey/options');
    if (!options.ok) return fail(box, 'Signing in with a passkey is not possible now.');
    const credential = await assertion(options.json.publicKey);
    const done = await post('/v1/login/passkey', { challenge_id: options.json.challenge_id, credential });
    if (!done.ok) return fail(box, 'That passkey did not sign you in.');
    window.location.assign(box.dataset.returnTo || '/account');
  });

  wire('second-step', async (box) => {
    const mfaToken = box.dataset.mfaToken;
    const options = await post('/v1/login/mfa/passkey-options', { mfa_token: mfaToken });
    if (!options.ok) return fail(box, 'No passkey can finish this sign-in.');
    const credential = await assertion(options.json.publicKey);
    const done = await post('/v1/login/mfa', {
      mfa_token: mfaToken, challenge_id: options.json.challenge_id, credential,
    });
    if (!done.ok) return fail(box, 'That passkey did not finish the sign-in.');
    window.location.assign(box.dataset.returnTo || '/account');
  });
})();
