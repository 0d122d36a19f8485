// Entry point: restores a saved session (refresh token) or shows the sign-in screen, and
// tears everything down when the session ends.
//
// Modules: api.js (REST + tokens), socket.js (WebSocket with reconnect/resume), chat.js
// (applies events to the store: dedupe, gaps, outbox), calls.js (video calls: ringing,
// the WebRTC mesh, signaling) with peer.js (one connection of the mesh), store.js (state +
// events), router.js (URLs), views/*.js (one per screen or dialog), dom.js (safe DOM
// helpers).
// Plain ES modules served as they are: no build step, no dependencies.

import { api } from "./api.js";
import * as chat from "./chat.js";
import { resetStore } from "./store.js";
import { renderAuth, renderConnecting } from "./views/auth.js";
import { Shell } from "./views/shell.js";

const root = document.getElementById("app");
let shell = null;

// The server ended the session (revoked elsewhere, refresh token refused, socket 4003).
api.onSignedOut = (message) => {
  endApp();
  showAuth(message);
};

function showAuth(message) {
  renderAuth(root, {
    message,
    onAuthenticated: (res) => startApp(res.user),
  });
}

async function startApp(user) {
  endApp();
  shell = new Shell(root, { onSignOut: signOut });
  shell.mount();
  try {
    await chat.start(user);
  } catch (err) {
    if (err.code === "signed_out") return;
    shell?.toast("Could not load your conversations. Retrying…", "error");
    setTimeout(() => shell && chat.loadConversations().catch(() => {}), 3000);
  }
  shell?.route();
}

function endApp() {
  chat.stop();
  shell?.destroy();
  shell = null;
  resetStore();
}

async function signOut() {
  chat.stop();
  await api.logout();
  endApp();
  history.replaceState(null, "", "/");
  showAuth();
}

async function boot(attempt = 0) {
  if (!api.hasStoredSession()) {
    showAuth();
    return;
  }
  try {
    await api.refresh();
    startApp(api.user);
  } catch (err) {
    if (err.code === "signed_out") return; // onSignedOut already showed the login screen
    // The server is unreachable: keep the saved session and try again.
    renderConnecting(root, "Connecting to Chattr…");
    setTimeout(() => boot(attempt + 1), Math.min(10_000, 1000 * 2 ** attempt));
  }
}

boot();
