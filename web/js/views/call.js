// The call UI over the app: incoming calls (Accept / Decline) in a corner, and the call this
// device is in as a panel over the conversation pane (the whole screen on phones): one
// tile per remote participant (video, name, muted and camera-off marks, connection state),
// my own preview, and the controls (microphone, camera, hang up). State and actions are
// calls.js's; this view re-renders on the store event "call".

import * as calls from "../calls.js";
import { avatar, h, icon } from "../dom.js";
import { conversationTitle, on, store, username } from "../store.js";

export class CallView {
  constructor({ shell }) {
    this.shell = shell;
    this.incomingEl = h("div", { class: "call-incoming-stack" });
    this.cards = new Map(); // call id → incoming card
    this.panel = null; // the in-call panel, built per call
    this.panelFor = null;
    this.tiles = new Map(); // remote session id → tile parts
    this.unsubscribe = [
      on("call", () => this.render()),
      on("call_notice", (text) => shell.toast(text)),
      // Names and titles may arrive after the call does.
      on("conversations", () => this.render()),
    ];
    this.clock = setInterval(() => this.renderStatus(), 1000);
  }

  /** Adds the view's elements to the app root (the panel is a cell of its grid). */
  mount(root) {
    this.root = root;
    root.append(this.incomingEl);
    this.render();
  }

  destroy() {
    for (const off of this.unsubscribe) off();
    clearInterval(this.clock);
    this.panel?.el.remove();
    this.incomingEl.remove();
  }

  render() {
    this.renderIncoming();
    this.renderPanel();
  }

  // ------------------------------------------------------------ incoming

  renderIncoming() {
    const ringing = calls.incomingCalls();
    const seen = new Set();
    for (const call of ringing) {
      seen.add(call.id);
      const conv = store.conversations.get(call.conversation_id);
      const caller = username(call.caller_id);
      const title = conv ? conversationTitle(conv) : caller;
      const key = JSON.stringify([title, caller]);
      let card = this.cards.get(call.id);
      if (card?.key !== key) {
        card?.el.remove();
        card = { key, el: incomingCard(call, title, caller, call.group) };
        this.cards.set(call.id, card);
      }
      if (card.el.parentNode !== this.incomingEl) this.incomingEl.append(card.el);
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.el.remove();
        this.cards.delete(id);
      }
    }
  }

  // ------------------------------------------------------------ in call

  renderPanel() {
    const c = calls.currentCall();
    if (!c) {
      this.panel?.el.remove();
      this.panel = null;
      this.panelFor = null;
      this.tiles.clear();
      return;
    }
    if (this.panelFor !== c) {
      this.panel?.el.remove();
      this.tiles.clear();
      this.panel = buildPanel();
      this.panelFor = c;
      this.root.append(this.panel.el);
      this.panel.hangUp.focus({ preventScroll: true });
    }
    const p = this.panel;
    const conv = store.conversations.get(c.conversationId);
    const title = conv ? conversationTitle(conv) : "Call";
    p.el.setAttribute("aria-label", `Call: ${title}`);
    p.title.textContent = title;
    p.notice.textContent = c.notice;
    p.notice.hidden = !c.notice || c.phase === "failed";
    const failed = calls.connectionFailed(c);
    const error = c.error || (failed ? calls.CONNECT_FAILED : "");
    if (p.error.textContent !== error) p.error.replaceChildren(...(error ? [icon("alert"), h("span", {}, error)] : []));
    p.error.hidden = !error;
    p.el.classList.toggle("failed", Boolean(error));

    this.renderTiles(c, conv);
    this.renderSelf(c);

    // Controls: nothing to mute before the camera is on; Cancel while it rings, Close after
    // a failure to start.
    const started = Boolean(c.local);
    setToggle(p.mic, {
      on: c.audio,
      show: started,
      label: c.audio ? "Mute" : "Unmute",
      iconName: c.audio ? "mic" : "mic-off",
    });
    setToggle(p.cam, {
      on: c.video,
      show: started && c.hasCamera,
      label: c.video ? "Camera off" : "Camera on",
      iconName: c.video ? "video" : "video-off",
    });
    const ringingOut = c.phase !== "failed" && (!c.joined || c.call?.state === "ringing") && c.outgoing;
    const hangLabel = c.phase === "failed" ? "Close" : ringingOut ? "Cancel" : "Hang up";
    if (p.hangUpText.textContent !== hangLabel) p.hangUpText.textContent = hangLabel;
    this.renderStatus();
  }

  renderStatus() {
    const c = calls.currentCall();
    if (!c || !this.panel) return;
    const text = statusText(c);
    if (this.panel.status.textContent !== text) this.panel.status.textContent = text;
  }

  renderTiles(c, conv) {
    const grid = this.panel.grid;
    const seen = new Set();
    for (const peer of c.peers.values()) {
      seen.add(peer.sessionId);
      let tile = this.tiles.get(peer.sessionId);
      if (!tile) {
        tile = remoteTile(peer);
        this.tiles.set(peer.sessionId, tile);
        grid.append(tile.el);
      }
      updateTile(tile, peer);
    }
    for (const [session, tile] of this.tiles) {
      if (!seen.has(session)) {
        tile.video.srcObject = null;
        tile.el.remove();
        this.tiles.delete(session);
      }
    }
    // Nobody else connected yet: show who is being called.
    const waiting = seen.size === 0 && c.phase !== "failed";
    if (waiting) {
      const others = (conv?.members || []).filter((m) => m.id !== store.me?.id);
      const name = conv ? conversationTitle(conv) : "";
      const key = JSON.stringify([name, others.length]);
      if (this.panel.waitingKey !== key) {
        this.panel.waitingKey = key;
        this.panel.waiting.replaceChildren(
          avatar(name, { group: conv?.kind === "group", size: "xl" }),
          h("span", { class: "call-waiting-name" }, name),
        );
      }
    }
    this.panel.waiting.hidden = !waiting;
    grid.dataset.count = String(Math.max(1, seen.size));
  }

  renderSelf(c) {
    const self = this.panel.self;
    if (c.local && self.video.srcObject !== c.local) self.video.srcObject = c.local;
    self.el.hidden = !c.local;
    self.el.classList.toggle("camera-off", !c.video);
    self.muted.hidden = c.audio;
  }
}

function incomingCard(call, title, caller, group) {
  const accept = h("button", { type: "button", class: "btn call-accept" }, icon("phone"), "Accept");
  accept.addEventListener("click", () => calls.accept(call.id));
  const decline = h("button", { type: "button", class: "btn danger call-decline" }, icon("phone-off"), "Decline");
  decline.addEventListener("click", () => calls.decline(call.id));
  const sub = group ? `${caller} is calling the group` : "Incoming video call";
  return h(
    "section",
    { class: "call-incoming", role: "alertdialog", "aria-label": `Incoming call from ${title}`, "data-call-id": call.id },
    h(
      "div",
      { class: "call-incoming-who" },
      h("span", { class: "call-ring" }, avatar(title, { group })),
      h("div", { class: "call-incoming-text" }, h("h2", {}, title), h("p", { class: "muted" }, sub)),
    ),
    h("div", { class: "call-incoming-actions" }, decline, accept),
  );
}

function buildPanel() {
  const title = h("h2", { class: "call-title" });
  const status = h("p", { class: "call-status", "aria-live": "polite" });
  const notice = h("p", { class: "call-notice", hidden: true });
  const error = h("p", { class: "call-error", role: "alert", hidden: true });
  const waiting = h("div", { class: "call-waiting", hidden: true });
  const grid = h("div", { class: "call-grid" }, waiting);

  const selfVideo = h("video", { autoplay: true, playsinline: true, "aria-hidden": "true" });
  selfVideo.muted = true; // never play my own microphone back
  const selfMuted = mark("mic-off", "microphone off");
  const self = {
    video: selfVideo,
    muted: selfMuted,
    el: h(
      "div",
      { class: "call-self", role: "group", "aria-label": "You" },
      selfVideo,
      h("span", { class: "call-self-off" }, icon("video-off")),
      h("div", { class: "call-tile-label" }, h("span", { class: "call-name" }, "You"), selfMuted),
    ),
  };

  const mic = controlButton(() => calls.toggleAudio());
  const cam = controlButton(() => calls.toggleVideo());
  const hangUpText = h("span", { class: "call-btn-text" }, "Hang up");
  const hangUp = h(
    "button",
    { type: "button", class: "call-btn hang-up" },
    h("span", { class: "call-btn-icon" }, icon("phone-off")),
    hangUpText,
  );
  hangUp.addEventListener("click", () => calls.hangUp());

  const el = h(
    "section",
    { class: "call-panel", role: "region", "aria-label": "Call" },
    h("header", { class: "call-head" }, h("div", { class: "call-head-text" }, title, status)),
    notice,
    error,
    h("div", { class: "call-stage" }, grid, self.el),
    h("div", { class: "call-controls" }, mic.el, cam.el, hangUp),
  );
  return { el, title, status, notice, error, waiting, waitingKey: null, grid, self, mic, cam, hangUp, hangUpText };
}

function controlButton(onClick) {
  const iconSlot = h("span", { class: "call-btn-icon" });
  const text = h("span", { class: "call-btn-text" });
  const el = h("button", { type: "button", class: "call-btn" }, iconSlot, text);
  el.addEventListener("click", onClick);
  return { el, iconSlot, text, iconName: null };
}

function setToggle(btn, { on: isOn, show, label, iconName }) {
  btn.el.hidden = !show;
  btn.el.classList.toggle("off", !isOn);
  if (btn.text.textContent !== label) btn.text.textContent = label;
  if (btn.iconName !== iconName) {
    btn.iconName = iconName;
    btn.iconSlot.replaceChildren(icon(iconName));
  }
}

function remoteTile(peer) {
  const name = username(peer.userId);
  const video = h("video", { autoplay: true, playsinline: true });
  const muted = mark("mic-off", "microphone off");
  const cameraOff = mark("video-off", "camera off");
  const state = h("p", { class: "call-tile-state" });
  const el = h(
    "div",
    {
      class: "call-tile",
      role: "group",
      "aria-label": name,
      "data-user-id": peer.userId,
      "data-session-id": peer.sessionId,
    },
    video,
    h("div", { class: "call-tile-avatar" }, avatar(name, { size: "xl" })),
    state,
    h("div", { class: "call-tile-label" }, h("span", { class: "call-name" }, name), muted, cameraOff),
  );
  return { el, video, muted, cameraOff, state };
}

/** A muted / camera-off mark: an icon, with words for screen readers. */
function mark(iconName, text) {
  const title = text[0].toUpperCase() + text.slice(1);
  return h("span", { class: "call-mark", title }, icon(iconName), h("span", { class: "sr-only" }, text));
}

function updateTile(tile, peer) {
  if (peer.stream && tile.video.srcObject !== peer.stream) tile.video.srcObject = peer.stream;
  const showVideo = Boolean(peer.stream) && peer.video && peer.state !== "failed";
  tile.el.classList.toggle("camera-off", !showVideo);
  tile.el.dataset.state = peer.state;
  tile.muted.hidden = peer.audio;
  tile.cameraOff.hidden = peer.video;
  const states = { connecting: "Connecting…", reconnecting: "Reconnecting…", failed: "Could not connect" };
  const text = states[peer.state] || "";
  if (tile.state.textContent !== text) tile.state.textContent = text;
  tile.state.hidden = !text;
}

function statusText(c) {
  if (c.phase === "preparing") return "Starting camera…";
  if (c.phase === "failed") return "Call not started";
  if (!c.joined) return c.outgoing ? "Calling…" : "Joining…";
  if (c.call?.state === "ringing") return "Calling…";
  if (calls.connectionFailed(c)) return "Connection failed";
  if (!c.peers.size) return "Waiting for others…";
  if (!c.connectedAt) return "Connecting…";
  const secs = Math.max(0, Math.floor((Date.now() - c.connectedAt) / 1000));
  const mm = Math.floor(secs / 60);
  const ss = String(secs % 60).padStart(2, "0");
  return mm >= 60 ? `${Math.floor(mm / 60)}:${String(mm % 60).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}
