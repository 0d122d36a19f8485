// Calls: this device's side of video calls. Keeps the live calls of my conversations (from
// `call` events), says which ones ring here, and runs the call this device is in: camera
// and microphone, and a mesh with one connection (peer.js) per other participant,
// signalled over the chat WebSocket (offers, answers and trickled ICE candidates, see
// docs/protocol.md).
//
// Who offers: the device that joined later sends the offers to everyone already in the
// call; the others wait for them. Renegotiation and offer collisions are handled the
// "perfect negotiation" way, the device with the lower session id being the polite one.
//
// Views read `currentCall()`, `incomingCalls()`, `liveCallIn()` and `inCallElsewhere()`,
// and re-render on the store event "call"; "call_notice" carries one-off messages for a
// toast.
//
// Debug flag, for tests and for checking a TURN setup by hand: `?ice=relay` in the URL
// forces iceTransportPolicy "relay" (media must flow through the TURN server); it is
// remembered in localStorage as `chattr.debug.ice` until `?ice=all`.
//
// Test/debug hook: `window.__chattrCall` shows the call this device is in: `callId`,
// `sessionId` and `peers` (remote session id → RTCPeerConnection), so browser tests can
// read getStats(). The app never reads it back.

import { api } from "./api.js";
import { Peer } from "./peer.js";
import { emit } from "./store.js";

/** Extra time a ringing call is shown past its ring time, should its end event be lost. */
const RING_SLACK_MS = 2_000;
/** After joining, an event without this device may be an older one overtaken by the answer. */
const STALE_EVENT_MS = 2_000;
const ICE_FLAG = "chattr.debug.ice";

export const CONNECT_FAILED = "Could not connect the call (network/TURN)";
export const NO_TURN_NOTICE =
  "No TURN server configured: calls only work between devices that can reach each other directly.";

let socket = null;
let sessionId = null;
let userId = null;
/** call id → the latest call object seen, for calls not ended (mine or not). */
const live = new Map();
/** call id → local time (ms) after which it no longer rings here. */
const ringDeadlines = new Map();
/** Calls declined on this device: stop showing them before the server confirms. */
const declined = new Set();
let ringTimer = 0;
/** The call this device is in, or is starting/joining (see `newCall`). */
let current = null;
/** remote session id → signals that came before the offer or event announcing it. */
const early = new Map();
const EARLY_MAX = 50;

const debug = { callId: null, sessionId: null, peers: new Map() };
window.__chattrCall = debug;

readIceFlag();

function readIceFlag() {
  const flag = new URLSearchParams(location.search).get("ice");
  try {
    if (flag === "relay") localStorage.setItem(ICE_FLAG, "relay");
    else if (flag === "all") localStorage.removeItem(ICE_FLAG);
  } catch {
    // Storage disabled: the flag simply does not apply.
  }
}

function relayOnly() {
  try {
    return localStorage.getItem(ICE_FLAG) === "relay";
  } catch {
    return false;
  }
}

function changed() {
  emit("call");
}

// ---------------------------------------------------------------- lifecycle (chat.js)

/** Called by chat.js with the socket it opened. */
export function attach(realtime, me) {
  socket = realtime;
  userId = me.id;
  window.addEventListener("pagehide", hangUp);
}

/** Signing out: hang up and forget everything. */
export function detach() {
  window.removeEventListener("pagehide", hangUp);
  hangUp();
  socket = null;
  sessionId = null;
  live.clear();
  ringDeadlines.clear();
  declined.clear();
  clearTimeout(ringTimer);
  changed();
}

export function onReady(frame) {
  sessionId = frame.session_id;
  userId = frame.user.id;
  debug.sessionId = sessionId;
}

/** After a reconnect, a device in a call answers again to keep its place (grace period). */
export function onSynced(first) {
  const c = current;
  if (first || !c?.joined || !socket) return;
  socket.request({ type: "call_answer", call_id: c.id }).then(
    ({ call }) => {
      if (current === c) update(c, call);
    },
    (err) => {
      if (current !== c || err.code === "disconnected" || err.code === "timeout") return;
      finish("The call ended while you were offline");
    },
  );
}

// ---------------------------------------------------------------- what views read

/** The call this device is in (or joining), or null. Views must not change it. */
export function currentCall() {
  return current;
}

/** Calls ringing on this device now, newest first. */
export function incomingCalls() {
  const now = Date.now();
  return [...live.values()]
    .filter(
      (call) =>
        call.ringing.includes(userId) &&
        !call.participants.some((p) => p.user_id === userId) &&
        !declined.has(call.id) &&
        call.id !== current?.id &&
        (ringDeadlines.get(call.id) || 0) > now,
    )
    .sort((a, b) => b.started_at.localeCompare(a.started_at));
}

/** The live call of a conversation, if the server told us of one. */
export function liveCallIn(conversationId) {
  for (const call of live.values()) if (call.conversation_id === conversationId) return call;
  return null;
}

/**
 * A call this device's session is in without this page running it: another tab of this
 * browser (tabs share the session), or a page that went away without hanging up. Starting
 * or joining a call here would fight over the same session, so the app refuses.
 */
export function inCallElsewhere() {
  for (const call of live.values()) if (call.id !== current?.id && hasSession(call, sessionId)) return call;
  return null;
}

/** Whether all of the current call's connections failed (none works, at least one tried). */
export function connectionFailed(c = current) {
  const peers = [...(c?.peers.values() || [])];
  return peers.length > 0 && peers.every((p) => p.state === "failed");
}

// ---------------------------------------------------------------- server events

export function onCall(call) {
  if (call.state === "ended") {
    live.delete(call.id);
    ringDeadlines.delete(call.id);
    declined.delete(call.id);
    if (current?.id === call.id) finish(current.joined ? endedText(call) : "");
    changed();
    return;
  }
  live.set(call.id, call);
  if (!ringDeadlines.has(call.id)) {
    // Measured on this device's clock: the server's may differ from ours.
    const ringMs = Date.parse(call.ring_until) - Date.parse(call.started_at);
    ringDeadlines.set(call.id, Date.now() + Math.max(0, ringMs) + RING_SLACK_MS);
  }
  const c = current;
  if (c && !c.id && c.outgoing && call.conversation_id === c.conversationId && hasSession(call, sessionId)) {
    c.id = call.id; // our own call_start, announced before its answer arrived
  }
  if (c?.id === call.id) {
    c.call = call;
    if (c.joined) update(c, call);
  }
  scheduleRingCheck();
  changed();
}

/** A signal from another participant's device. */
export function onSignal({ call_id, from_user_id, from_session_id, signal }) {
  const c = current;
  if (!c?.local || c.id !== call_id || !signal) return;
  let peer = c.peers.get(from_session_id);
  if (!peer && signal.kind !== "offer") {
    // Before the event or offer that announces its sender (kept for when the peer comes),
    // or a leftover of a device that left (dropped with the call).
    const held = early.get(from_session_id) || [];
    if (held.length < EARLY_MAX) early.set(from_session_id, [...held, signal]);
    return;
  }
  // An offer may overtake the event that announces its sender.
  peer ||= createPeer(c, from_session_id, from_user_id, false);
  peer.receive(signal);
}

/** Whether a timeline message is a call summary ("Missed call", "Call — 4 min", …). */
export function isCallSummary(msg) {
  return Boolean(msg && !msg.deleted && msg.client_msg_id?.startsWith("call:"));
}

/** What to say when the call this device is in ends. */
function endedText(call) {
  switch (call.outcome) {
    case "declined":
      return call.duration_ms ? "Call ended" : "Call declined";
    case "missed":
      return "No answer";
    default:
      return "Call ended";
  }
}

function hasSession(call, session) {
  return call.participants.some((p) => p.session_id === session);
}

function scheduleRingCheck() {
  clearTimeout(ringTimer);
  const now = Date.now();
  const next = Math.min(...[...ringDeadlines.values()].filter((t) => t > now));
  if (Number.isFinite(next)) ringTimer = setTimeout(changed, next - now + 50);
}

// ---------------------------------------------------------------- user actions

/** Starts a call in a conversation (or joins the one it already has). */
export async function startCall(conversationId) {
  if (current?.phase === "failed") finish();
  if (current || !socket || refuseSecondTab()) return;
  const c = newCall({ conversationId, outgoing: true });
  if (!(await prepare(c))) return;
  try {
    const { call } = await socket.request({ type: "call_start", conversation_id: conversationId });
    joined(c, call);
  } catch (err) {
    failToStart(c, err);
  }
}

/** Answers a ringing call (or joins a running group call) on this device. */
export async function accept(callId) {
  const call = live.get(callId);
  if (current?.phase === "failed") finish();
  if (current || !socket || !call || refuseSecondTab()) return;
  const c = newCall({ conversationId: call.conversation_id, outgoing: false, id: callId });
  c.call = call;
  if (!(await prepare(c))) return;
  try {
    const answer = await socket.request({ type: "call_answer", call_id: callId });
    joined(c, answer.call);
  } catch (err) {
    failToStart(c, err);
  }
}

function refuseSecondTab() {
  if (!inCallElsewhere()) return false;
  emit("call_notice", "You are in a call in another tab of this browser.");
  return true;
}

/** Declines a ringing call (on all my devices). */
export function decline(callId) {
  declined.add(callId);
  changed();
  socket?.request({ type: "call_decline", call_id: callId }).catch(() => {});
}

/** Hangs up (or cancels, or closes an error that stopped the call from starting). */
export function hangUp() {
  const c = current;
  if (!c) return;
  finish();
  // Still waiting for call_start/call_answer: `joined` leaves once the answer is in.
  if (c.joined) socket?.request({ type: "call_leave", call_id: c.id }).catch(() => {});
}

export function toggleAudio() {
  setMedia({ audio: !current?.audio });
}

export function toggleVideo() {
  setMedia({ video: !current?.video });
}

function setMedia(change) {
  const c = current;
  if (!c) return;
  Object.assign(c, change);
  for (const track of c.local?.getAudioTracks() || []) track.enabled = c.audio;
  for (const track of c.local?.getVideoTracks() || []) track.enabled = c.video;
  sendMedia(c);
  changed();
}

function sendMedia(c) {
  if (c.joined) socket?.send({ type: "call_media", call_id: c.id, audio: c.audio, video: c.video && c.hasCamera });
}

// ---------------------------------------------------------------- joining

function newCall({ conversationId, outgoing, id = null }) {
  current = {
    id,
    conversationId,
    outgoing,
    call: null,
    phase: "preparing", // → "joining" → "joined"; or "failed" (never got into the call)
    joined: false,
    joinedAt: 0,
    connectedAt: 0,
    local: null,
    hasCamera: true,
    audio: true,
    video: true,
    iceServers: [],
    notice: "",
    error: "",
    peers: new Map(), // remote session id → peer (see createPeer)
  };
  changed();
  return current;
}

/** Camera, microphone and ICE servers; false (with the reason shown) if the call cannot go on. */
async function prepare(c) {
  const [media, ice] = await Promise.all([openMedia(), iceServers()]);
  if (current !== c) {
    media.stream?.getTracks().forEach((t) => t.stop());
    return false;
  }
  if (media.error) {
    c.phase = "failed";
    c.error = media.error;
    c.id = null; // not in it: a call that still rings here shows again
    changed();
    return false;
  }
  c.local = media.stream;
  c.hasCamera = media.stream.getVideoTracks().length > 0;
  c.video = c.hasCamera;
  c.iceServers = ice.servers;
  c.notice = ice.notice;
  c.phase = "joining";
  changed();
  return true;
}

async function openMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { error: "Calls need a secure connection (https) and a browser with camera support." };
  }
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video: true }) };
  } catch (err) {
    if (err?.name === "NotFoundError" || err?.name === "OverconstrainedError") {
      // No camera: a call with the microphone alone still works.
      try {
        return { stream: await navigator.mediaDevices.getUserMedia({ audio: true }) };
      } catch (second) {
        return { error: describeMediaError(second) };
      }
    }
    return { error: describeMediaError(err) };
  }
}

function describeMediaError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera and microphone access was denied. Allow them for this site in your browser's settings, then try again.";
    case "NotFoundError":
      return "No camera or microphone was found.";
    case "NotReadableError":
    case "AbortError":
      return "Your camera or microphone is in use by another app, or could not be started.";
    default:
      return "Could not start your camera and microphone.";
  }
}

/** The ICE servers for this call (TURN credentials are minted per call). */
async function iceServers() {
  try {
    const { ice_servers } = await api.get("/v1/calls/ice-servers");
    return { servers: ice_servers, notice: ice_servers.length ? "" : NO_TURN_NOTICE };
  } catch {
    return { servers: [], notice: "Could not load the TURN servers: calls may only work on the same network." };
  }
}

/** The answer to call_start/call_answer: this device is in the call. */
function joined(c, call) {
  if (current !== c) {
    // Hung up while the request was on its way.
    if (call.state !== "ended") socket?.request({ type: "call_leave", call_id: call.id }).catch(() => {});
    return;
  }
  if (call.state === "ended") {
    // Over as soon as it started: everyone called is busy in another call.
    finish(call.outcome === "declined" ? "Busy: already in another call" : "The call has ended");
    return;
  }
  c.id = call.id;
  c.call = call;
  c.joined = true;
  c.joinedAt = Date.now();
  c.phase = "joined";
  debug.callId = call.id;
  live.set(call.id, call);
  // Everyone already here waits for this device's offer.
  for (const p of call.participants) {
    if (p.session_id !== sessionId && !c.peers.has(p.session_id)) createPeer(c, p.session_id, p.user_id, true);
  }
  update(c, call);
  if (!c.audio || !c.video || !c.hasCamera) sendMedia(c);
  changed();
}

function failToStart(c, err) {
  if (current !== c) return;
  // Over while we were not looking (say it ended while this device was offline).
  if (c.id && (err?.code === "not_found" || err?.code === "forbidden")) live.delete(c.id);
  const messages = {
    busy: "You are already in a call on another device.",
    call_full: "This call is full.",
    not_found: "This call is no longer available.",
    forbidden: "This call has ended.",
    rate_limited: "Too many calls started: wait a minute, then try again.",
    disconnected: "Not connected to the server. Try again in a moment.",
    timeout: "The server did not answer. Try again in a moment.",
  };
  finish(messages[err?.code] || err?.message || "Could not join the call.");
}

/** Applies a call event to the call this device is in: who is in it, their mute state. */
function update(c, call) {
  c.call = call;
  if (!hasSession(call, sessionId)) {
    // Moved to another of my devices. (While offline, the answer on reconnect decides.)
    const elsewhere = call.participants.some((p) => p.user_id === userId);
    if (elsewhere && Date.now() - c.joinedAt > STALE_EVENT_MS) finish("The call continues on another of your devices");
    return;
  }
  const present = new Map(call.participants.map((p) => [p.session_id, p]));
  for (const [session, peer] of c.peers) {
    if (!present.has(session)) {
      peer.close();
      c.peers.delete(session);
      debug.peers.delete(session);
    }
  }
  for (const p of call.participants) {
    if (p.session_id === sessionId) continue;
    // Joined after this device: its offer is on the way.
    const peer = c.peers.get(p.session_id) || createPeer(c, p.session_id, p.user_id, false);
    peer.audio = p.audio;
    peer.video = p.video;
  }
}

/** Leaves the call locally: connections closed, camera and microphone released. */
function finish(message = "") {
  const c = current;
  if (!c) return;
  current = null;
  for (const peer of c.peers.values()) peer.close();
  c.peers.clear();
  early.clear();
  c.local?.getTracks().forEach((t) => t.stop());
  debug.callId = null;
  debug.peers.clear();
  if (message) emit("call_notice", message);
  changed();
}

// ---------------------------------------------------------------- peer connections

/** A connection to another participant's device (see peer.js for `initiator`). */
function createPeer(c, remoteSession, remoteUser, initiator) {
  const peer = new Peer({
    sessionId: remoteSession,
    userId: remoteUser,
    polite: String(sessionId) < String(remoteSession),
    initiator,
    local: c.local,
    config: {
      iceServers: c.iceServers,
      iceTransportPolicy: relayOnly() ? "relay" : "all",
      bundlePolicy: "max-bundle",
    },
    send: (signal) => {
      if (current === c) socket?.send({ type: "call_signal", call_id: c.id, to_session_id: remoteSession, signal });
    },
    onChange: () => {
      if (peer.state === "connected" && !c.connectedAt) c.connectedAt = Date.now();
      changed();
    },
  });
  c.peers.set(remoteSession, peer);
  debug.peers.set(remoteSession, peer.pc);
  for (const signal of early.get(remoteSession) || []) peer.receive(signal);
  early.delete(remoteSession);
  changed();
  return peer;
}
