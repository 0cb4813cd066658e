// The passkey page: sign in (password and second step, or a passkey alone), then list, add,
// rename and remove passkeys through Twofold's JSON API. The access token lives only in the
// `session` variable below: never in storage or a cookie, so closing the page or signing out
// forgets it.
"use strict";

const API = "/api/v1";

// The signed-in user's access token, or the pre-2FA token of a login's second step.
let session = { access: null, preTfa: null };

const $ = (id) => document.getElementById(id);

// --- base64url <-> ArrayBuffer: WebAuthn's JSON form carries every binary as base64url
// without padding, the browser's API takes and gives ArrayBuffers.

function fromBase64url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes.buffer;
}

function toBase64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function withBinaryIds(descriptors) {
  return (descriptors || []).map((descriptor) => ({
    ...descriptor,
    id: fromBase64url(descriptor.id),
  }));
}

// The creation options of `registration/start`, as `navigator.credentials.create` takes them.
function creationOptions(publicKey) {
  return {
    ...publicKey,
    challenge: fromBase64url(publicKey.challenge),
    user: { ...publicKey.user, id: fromBase64url(publicKey.user.id) },
    excludeCredentials: withBinaryIds(publicKey.excludeCredentials),
  };
}

// The request options of a login's `start`, as `navigator.credentials.get` takes them.
function requestOptions(publicKey) {
  return {
    ...publicKey,
    challenge: fromBase64url(publicKey.challenge),
    allowCredentials: withBinaryIds(publicKey.allowCredentials),
  };
}

function registrationJson(credential) {
  const response = credential.response;
  return {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: toBase64url(response.attestationObject),
      clientDataJSON: toBase64url(response.clientDataJSON),
      transports: response.getTransports ? response.getTransports() : [],
    },
    extensions: credential.getClientExtensionResults(),
  };
}

function assertionJson(credential) {
  const response = credential.response;
  return {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: toBase64url(response.authenticatorData),
      clientDataJSON: toBase64url(response.clientDataJSON),
      signature: toBase64url(response.signature),
      userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
    },
    extensions: credential.getClientExtensionResults(),
  };
}

// --- Talking to the API.

// A failure to show on the page as it is.
class Problem extends Error {}

// An error answer of the API (problem+json: `title`, `detail`, `code`).
class ApiProblem extends Problem {
  constructor(status, body) {
    const text = (body && (body.detail || body.title)) || `The service answered ${status}.`;
    super(body && body.code ? `${text} (${body.code})` : text);
    this.status = status;
    this.code = body ? body.code : undefined;
  }
}

async function call(method, path, { token, json, form } = {}) {
  const headers = {};
  let body;
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  }
  let response;
  try {
    response = await fetch(API + path, { method, headers, body, credentials: "omit", cache: "no-store" });
  } catch (error) {
    throw new Problem("The service cannot be reached. Check your connection and try again.");
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    throw new ApiProblem(response.status, data);
  }
  return { status: response.status, data };
}

// What the browser's WebAuthn API threw, in words.
function webauthnProblem(error) {
  switch (error && error.name) {
    case "NotAllowedError":
      return new Problem("The passkey prompt was cancelled or timed out, or no passkey matched. Try again.");
    case "InvalidStateError":
      return new Problem("This authenticator already holds a passkey for your account.");
    case "SecurityError":
      return new Problem("This page's address is not one the service accepts passkeys for.");
    case "NotSupportedError":
      return new Problem("This authenticator cannot make the kind of passkey the service asks for.");
    default:
      return new Problem(`The browser refused: ${error && error.message ? error.message : error}`);
  }
}

async function createCredential(publicKey) {
  try {
    return await navigator.credentials.create({ publicKey: creationOptions(publicKey) });
  } catch (error) {
    throw webauthnProblem(error);
  }
}

async function getCredential(publicKey) {
  try {
    return await navigator.credentials.get({ publicKey: requestOptions(publicKey) });
  } catch (error) {
    throw webauthnProblem(error);
  }
}

// --- What the page shows.

function say(text) {
  $("problem").hidden = true;
  $("message").textContent = text;
  $("message").hidden = !text;
}

function complain(text) {
  $("message").hidden = true;
  $("problem").textContent = text;
  $("problem").hidden = false;
}

function show(section) {
  for (const id of ["signed-out", "second-step", "signed-in"]) {
    $(id).hidden = id !== section;
  }
}

// Runs `work` for a button or form, with the buttons disabled meanwhile and any failure shown.
async function act(work) {
  $("problem").hidden = true;
  const buttons = document.querySelectorAll("button");
  for (const button of buttons) {
    button.disabled = true;
  }
  try {
    await work();
  } catch (error) {
    if (error instanceof ApiProblem && error.status === 401 && session.access) {
      forget();
      complain(`Your sign-in is no longer valid; sign in again. ${error.message}`);
    } else if (error instanceof Problem) {
      complain(error.message);
    } else {
      complain(`Something went wrong: ${error}`);
    }
  } finally {
    for (const button of buttons) {
      button.disabled = false;
    }
  }
}

function required(id, what) {
  const value = $(id).value.trim();
  if (!value) {
    $(id).focus();
    throw new Problem(`Enter ${what}.`);
  }
  return value;
}

function forget() {
  session = { access: null, preTfa: null };
  for (const id of ["password", "code", "proof-password", "proof-code", "new-name"]) {
    $(id).value = "";
  }
  $("who").textContent = "";
  $("passkeys").replaceChildren();
  show("signed-out");
}

function formatTime(text) {
  return new Date(text).toLocaleString();
}

function passkeyItem(passkey) {
  const item = document.createElement("li");
  item.dataset.id = passkey.id;

  const name = document.createElement("div");
  name.className = "passkey-name";
  name.textContent = passkey.name;

  const meta = document.createElement("div");
  meta.className = "passkey-meta";
  const used = passkey.last_used_at ? `last used ${formatTime(passkey.last_used_at)}` : "never used";
  const synced = passkey.backed_up ? ", synced" : "";
  meta.textContent = `Added ${formatTime(passkey.created_at)}, ${used}${synced}`;

  const newName = document.createElement("input");
  newName.maxLength = 64;
  newName.value = passkey.name;
  newName.setAttribute("aria-label", `New name for ${passkey.name}`);
  const rename = document.createElement("button");
  rename.type = "button";
  rename.className = "secondary";
  rename.textContent = "Rename";
  rename.addEventListener("click", () => act(() => renamePasskey(passkey, newName.value)));
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "danger";
  remove.textContent = "Remove";
  remove.addEventListener("click", () => act(() => removePasskey(passkey)));

  const actions = document.createElement("div");
  actions.className = "passkey-actions";
  actions.append(newName, rename, remove);
  item.append(name, meta, actions);
  return item;
}

async function showPasskeys() {
  const { data } = await call("GET", "/passkeys", { token: session.access });
  $("passkeys").replaceChildren(...data.map(passkeyItem));
  $("no-passkeys").hidden = data.length > 0;
}

// --- Signing in and out.

async function signedIn(tokens) {
  session = { access: tokens.access_token, preTfa: null };
  $("password").value = "";
  $("code").value = "";
  const { data: user } = await call("GET", "/auth/test-token", { token: session.access });
  $("who").textContent = user.full_name ? `${user.full_name} <${user.email}>` : user.email;
  await showPasskeys();
  show("signed-in");
}

async function signInWithPassword(event) {
  event.preventDefault();
  await act(async () => {
    const email = required("email", "your email");
    const password = $("password").value;
    if (!password) {
      $("password").focus();
      throw new Problem("Enter your password.");
    }
    const { status, data } = await call("POST", "/auth/login", { form: { username: email, password } });
    if (status === 202) {
      session = { access: null, preTfa: data.access_token };
      $("password").value = "";
      show("second-step");
      say("Password accepted. One more step.");
      return;
    }
    await signedIn(data);
    say("Signed in.");
  });
}

async function signInWithPasskey() {
  await act(async () => {
    const { data: start } = await call("POST", "/auth/passkey/start");
    const credential = await getCredential(start.publicKey);
    const { data } = await call("POST", "/auth/passkey/finish", {
      json: { challenge_id: start.challenge_id, credential: assertionJson(credential) },
    });
    await signedIn(data);
    say("Signed in with a passkey.");
  });
}

async function secondStepWithPasskey() {
  await act(async () => {
    const token = session.preTfa;
    const { data: start } = await call("POST", "/tfa/passkey/start", { token });
    const credential = await getCredential(start.publicKey);
    const { data } = await call("POST", "/tfa/passkey/finish", {
      token,
      json: { challenge_id: start.challenge_id, credential: assertionJson(credential) },
    });
    await signedIn(data);
    say("Signed in.");
  });
}

async function secondStepWithCode(event) {
  event.preventDefault();
  const backup = event.submitter && event.submitter.value === "backup";
  await act(async () => {
    const code = encodeURIComponent(required("code", backup ? "a backup code" : "the code"));
    const path = backup ? `/tfa/recover_tfa?tfa_backup_token=${code}` : `/tfa/login_tfa?tfa_token=${code}`;
    const { data } = await call("POST", path, { token: session.preTfa });
    await signedIn(data);
    say("Signed in.");
  });
}

function signOut() {
  const token = session.access;
  forget();
  say("Signed out.");
  // Ends the session on the service too, so its refresh token dies. The page has forgotten the
  // tokens whatever the answer, and does not wait for it: the sign-in form it shows works at
  // once (inside `act`, its buttons stayed disabled until the answer came).
  call("POST", "/auth/logout", { token }).catch(() => undefined);
}

// --- Managing passkeys.

// The proofs typed under “Confirm it is you”, or none: then the service counts the sign-in,
// if it was recent enough.
function proofs() {
  const password = $("proof-password").value;
  const code = $("proof-code").value.trim();
  if (!password) {
    return {};
  }
  return code ? { password, code } : { password };
}

function forgetProofs() {
  $("proof-password").value = "";
  $("proof-code").value = "";
}

// What to do when the service wants a fresher proof than the page sent, in the page's words;
// any other error as it is.
function reauthenticationProblem(error, button) {
  if (!(error instanceof ApiProblem)) {
    return error;
  }
  if (error.code === "reauthentication.required") {
    $("proof-password").focus();
    return new Problem(`You signed in a while ago: enter your password (and a code, if asked) under “Confirm it is you”, then press ${button} again.`);
  }
  if (error.code === "reauthentication.passkey_required") {
    forgetProofs();
    return new Problem(`Your second factor is a passkey, and a password cannot stand in for it: sign out, sign in again with the passkey, then press ${button} within a few minutes.`);
  }
  return error;
}

async function addPasskey(event) {
  event.preventDefault();
  await act(async () => {
    const name = required("new-name", "a name for the new passkey");
    const { data: start } = await call("POST", "/passkeys/registration/start", {
      token: session.access,
      json: proofs(),
    }).catch((error) => {
      throw reauthenticationProblem(error, "Add a passkey");
    });
    forgetProofs();
    const credential = await createCredential(start.publicKey);
    const { data: added } = await call("POST", "/passkeys/registration/finish", {
      token: session.access,
      json: { challenge_id: start.challenge_id, name, credential: registrationJson(credential) },
    });
    $("new-name").value = "";
    await showPasskeys();
    say(`Passkey “${added.name}” added.`);
  });
}

async function renamePasskey(passkey, newName) {
  const name = newName.trim();
  if (!name) {
    throw new Problem("Enter the new name.");
  }
  const { data } = await call("PATCH", `/passkeys/${encodeURIComponent(passkey.id)}`, {
    token: session.access,
    json: { name },
  });
  await showPasskeys();
  say(`Passkey “${passkey.name}” renamed to “${data.name}”.`);
}

async function removePasskey(passkey) {
  const path = `/passkeys/${encodeURIComponent(passkey.id)}`;
  const removal = $("proof-password").value
    ? call("POST", `${path}/remove`, { token: session.access, json: proofs() })
    : call("DELETE", path, { token: session.access });
  await removal.catch((error) => {
    throw reauthenticationProblem(error, "Remove");
  });
  forgetProofs();
  await showPasskeys();
  say(`Passkey “${passkey.name}” removed.`);
}

function start() {
  $("password-form").addEventListener("submit", signInWithPassword);
  $("passkey-sign-in").addEventListener("click", signInWithPasskey);
  $("second-step-passkey").addEventListener("click", secondStepWithPasskey);
  $("code-form").addEventListener("submit", secondStepWithCode);
  $("second-step-cancel").addEventListener("click", () => {
    forget();
    say("");
  });
  $("sign-out").addEventListener("click", signOut);
  $("register-form").addEventListener("submit", addPasskey);
  if (!window.PublicKeyCredential) {
    for (const id of ["passkey-sign-in", "second-step-passkey"]) {
      $(id).hidden = true;
    }
    $("register-form").hidden = true;
    complain("This browser does not support passkeys; you can still sign in with your password.");
  }
  document.documentElement.dataset.ready = "true";
}

start();
