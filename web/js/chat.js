// The chat controller: applies server events and REST answers to the store, keeps the
// outbox of unacknowledged sends, fills gaps. Views call these functions and listen to
// store events; they never talk to the socket themselves. Call frames are handed to
// calls.js, which shares this socket.

import { api } from "./api.js";
import * as calls from "./calls.js";
import { Realtime } from "./socket.js";
import { emit, store, windowFor, directPeer } from "./store.js";

const PAGE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
const REST_FALLBACK_MS = 10_000;

let socket = null;
let firstSync = true;
const lastTypingSent = new Map(); // conversationId → ms
const gapFills = new Map(); // conversationId → promise (one fill at a time per conversation)

// ---------------------------------------------------------------- lifecycle

/** Loads the conversation list, then opens the socket with cursors from it. */
export async function start(me) {
  store.me = me;
  store.users.set(me.id, me.username);
  firstSync = true;
  await loadConversations();
  socket = new Realtime({
    cursors,
    onFrame: handleFrame,
    onStatus: (status) => {
      store.status = status;
      emit("status", status);
    },
  });
  calls.attach(socket, me);
  socket.start();
  document.addEventListener("visibilitychange", onVisible);
}

export function stop() {
  calls.detach();
  socket?.stop();
  socket = null;
  clearTimeout(readTimer);
  readTimer = 0;
  pendingReads.clear();
  document.removeEventListener("visibilitychange", onVisible);
  for (const timers of typingTimers.values()) for (const t of timers.values()) clearTimeout(t);
  typingTimers.clear();
}

function onVisible() {
  if (document.visibilityState === "visible" && store.activeId) markRead(store.activeId);
}

/** The last seq held per conversation: what the server replays from on reconnect. */
function cursors() {
  const out = {};
  for (const conv of store.conversations.values()) out[conv.id] = conv.last_seq;
  return out;
}

// ---------------------------------------------------------------- conversations

export async function loadConversations() {
  const { conversations } = await api.get("/v1/conversations");
  const seen = new Set();
  for (const conv of conversations) {
    seen.add(conv.id);
    upsertConversation(conv, { fromSnapshot: true });
  }
  for (const id of [...store.conversations.keys()]) {
    if (!seen.has(id)) removeConversation(id);
  }
  emit("conversations");
  refreshPresence();
}

/**
 * Merges a server conversation object. Titles and members always win; counters only if
 * the server's copy is at least as new as ours (an event may have overtaken the answer).
 */
function upsertConversation(conv, { fromSnapshot = false } = {}) {
  for (const m of conv.members) store.users.set(m.id, m.username);
  const existing = store.conversations.get(conv.id);
  if (!existing) {
    store.conversations.set(conv.id, { ...conv });
  } else {
    existing.kind = conv.kind;
    existing.title = conv.title;
    existing.owner_id = conv.owner_id;
    existing.members = conv.members;
    existing.created_at = conv.created_at;
    if (conv.last_seq >= existing.last_seq) {
      existing.last_seq = conv.last_seq;
      existing.last_message = conv.last_message;
      existing.unread = conv.unread;
      existing.read_seq = Math.max(existing.read_seq, conv.read_seq);
      // Our own read may not have reached the server when it answered.
      if (existing.read_seq >= existing.last_seq) existing.unread = 0;
    }
  }
  if (conv.read_positions?.length) {
    const w = windowFor(conv.id);
    for (const rp of conv.read_positions) {
      if (rp.seq > (w.readPositions.get(rp.user_id) || 0)) w.readPositions.set(rp.user_id, rp.seq);
    }
    emit("reads", conv.id);
  }
  if (!fromSnapshot) emit("conversations");
  emit("conversation", conv.id);
  return store.conversations.get(conv.id);
}

function removeConversation(id) {
  store.conversations.delete(id);
  store.windows.delete(id);
  for (const [cid, entry] of store.outbox) if (entry.conversationId === id) store.outbox.delete(cid);
  emit("conversations");
  emit("removed", id);
}

const fetches = new Map(); // conversationId → promise, so a burst of events fetches once

function fetchConversation(id) {
  if (fetches.has(id)) return fetches.get(id);
  const p = api
    .get(`/v1/conversations/${id}`)
    .then(
      (conv) => upsertConversation(conv),
      (err) => {
        if (err.status === 404) removeConversation(id);
        return null;
      },
    )
    .finally(() => fetches.delete(id));
  fetches.set(id, p);
  return p;
}

/** Opens (or finds) the direct conversation with a user. */
export async function openDirect(userId) {
  const conv = await api.post("/v1/conversations", { kind: "direct", members: [userId] });
  upsertConversation(conv);
  refreshPresence();
  return conv;
}

export async function createGroup(title, memberIds) {
  const conv = await api.post("/v1/conversations", { kind: "group", title, members: memberIds });
  return upsertConversation(conv);
}

export async function renameGroup(id, title) {
  return upsertConversation(await api.patch(`/v1/conversations/${id}`, { title }));
}

export async function addMember(id, userId) {
  return upsertConversation(await api.post(`/v1/conversations/${id}/members`, { user_id: userId }));
}

export async function removeMember(id, userId) {
  await api.del(`/v1/conversations/${id}/members/${userId}`);
  if (userId === store.me.id) removeConversation(id);
  else await fetchConversation(id);
}

export function searchUsers(prefix) {
  return api.get(`/v1/users?prefix=${encodeURIComponent(prefix)}&limit=20`).then((r) => {
    for (const u of r.users) store.users.set(u.id, u.username);
    return r.users;
  });
}

async function refreshPresence() {
  const ids = new Set();
  for (const conv of store.conversations.values()) {
    const peer = directPeer(conv);
    if (peer) ids.add(peer.id);
  }
  if (!ids.size) return;
  try {
    const { presence } = await api.get(`/v1/presence?user_ids=${[...ids].join(",")}`);
    for (const p of presence) store.presence.set(p.user_id, p);
    emit("presence");
  } catch {
    // Presence is decoration; the next event or reconnect refreshes it.
  }
}

// ---------------------------------------------------------------- opening a conversation

/** Makes a conversation the active one: loads its newest page, read positions, marks read. */
export async function open(id) {
  store.activeId = id;
  const w = windowFor(id);
  if (!w.loaded) {
    if (!w.loading) {
      w.loading = loadLatest(id).finally(() => {
        w.loading = null;
      });
    }
    await w.loading;
  }
  if (store.activeId !== id) return; // the user moved on meanwhile
  // Fresh members and read positions (read_positions is optional in older servers).
  fetchConversation(id);
  markRead(id);
}

async function loadLatest(id) {
  const { messages } = await api.get(`/v1/conversations/${id}/messages?limit=${PAGE}`);
  const w = windowFor(id);
  w.messages.clear();
  w.low = 0;
  w.high = messages.length ? messages[0].seq - 1 : 0;
  for (const m of messages) w.put(m);
  if (!messages.length) {
    w.low = 1;
  }
  w.loaded = true;
  const conv = store.conversations.get(id);
  if (conv && messages.length) noteLatest(conv, messages[messages.length - 1]);
  emit("messages", { id, reason: "reset" });
  // Messages that arrived while the page loaded may be past it.
  if (conv && conv.last_seq > w.high) fillGap(id);
}

/** Upward infinite scroll: the page before the oldest held message. */
export async function loadOlder(id) {
  const w = windowFor(id);
  if (!w.hasOlder || w.olderLoading) return false;
  w.olderLoading = true;
  try {
    const { messages } = await api.get(`/v1/conversations/${id}/messages?before_seq=${w.low}&limit=${PAGE}`);
    for (const m of messages) {
      if (!w.messages.has(m.seq)) w.messages.set(m.seq, m);
    }
    w.low = messages.length ? Math.min(w.low, messages[0].seq) : 1;
    emit("messages", { id, reason: "older" });
    return messages.length > 0;
  } finally {
    w.olderLoading = false;
  }
}

/**
 * Fetches everything after the contiguous part of an opened window, up to the newest seq
 * known (from events, heartbeats or `target`). One fill at a time per conversation.
 */
function fillGap(id, target = 0) {
  const w = store.windows.get(id);
  if (w) w.fillTarget = Math.max(w.fillTarget || 0, target);
  if (gapFills.has(id)) return gapFills.get(id);
  const run = async () => {
    for (let rounds = 0; rounds < 50; rounds++) {
      const conv = store.conversations.get(id);
      const win = store.windows.get(id);
      if (!conv || !win?.loaded) return;
      const goal = Math.max(conv.last_seq, win.newest, win.fillTarget || 0);
      if (win.high >= goal) return;
      const { messages } = await api.get(`/v1/conversations/${id}/messages?after_seq=${win.high}&limit=100`);
      if (!messages.length) return;
      for (const m of messages) ingestMessage(m);
    }
  };
  const p = run()
    .catch(() => {})
    .finally(() => gapFills.delete(id));
  gapFills.set(id, p);
  return p;
}

// ---------------------------------------------------------------- incoming events

function handleFrame(frame) {
  switch (frame.type) {
    case "ready":
      onReady(frame);
      calls.onReady(frame);
      break;
    case "synced":
      calls.onSynced(firstSync);
      onSynced();
      break;
    case "call":
      calls.onCall(frame.call);
      break;
    case "call_signal":
      calls.onSignal(frame);
      break;
    case "message":
      ingestMessage(frame.message);
      break;
    case "message_edited":
    case "message_deleted":
      applyChange(frame.message);
      break;
    case "read":
      onRead(frame);
      break;
    case "typing":
      onTyping(frame);
      break;
    case "presence":
      store.presence.set(frame.user_id, frame);
      emit("presence");
      break;
    case "conversation":
      upsertConversation(frame.conversation);
      if (frame.conversation.kind === "direct") refreshPresence();
      break;
    case "conversation_removed":
      removeConversation(frame.conversation_id);
      break;
    case "resync":
      onResync(frame);
      break;
    case "heartbeat":
      onHeartbeat(frame.latest);
      break;
    case "session_revoked":
      stop();
      api.sessionRevoked();
      break;
    case "error":
      // An error without a waiting request (e.g. rate limited typing); nothing to undo.
      console.warn("server error frame", frame.code, frame.message);
      break;
    default:
      break;
  }
}

function onReady(frame) {
  store.me = frame.user;
  // A conversation we do not know yet (created while we were away): reload the list.
  if (frame.conversations.some((c) => !store.conversations.has(c.id))) loadConversations().catch(() => {});
}

function onSynced() {
  // Unacknowledged sends go out again with the same client_msg_id: the server answers
  // with the original message if the first attempt was committed, so nothing doubles.
  for (const entry of store.outbox.values()) {
    if (entry.status === "pending") transmit(entry);
  }
  // Reads are only sent while online (not during the replay): catch up now.
  if (pendingReads.size) flushReads();
  if (store.activeId) markRead(store.activeId);
  if (firstSync) {
    firstSync = false;
    return;
  }
  // Edits, deletes, read positions and membership changes are not replayed: refresh them.
  loadConversations().catch(() => {});
  // Windows in the background are dropped and reloaded when opened again.
  for (const [id, w] of store.windows) {
    if (id !== store.activeId && w.loaded) {
      w.loaded = false;
      w.messages.clear();
      w.low = w.high = 0;
    }
  }
  if (store.activeId) {
    refreshWindow(store.activeId);
    fetchConversation(store.activeId);
  }
}

/** After a reconnect: re-read the newest page of the open conversation for edits/deletes. */
async function refreshWindow(id) {
  const w = store.windows.get(id);
  if (!w?.loaded) return;
  try {
    const { messages } = await api.get(`/v1/conversations/${id}/messages?limit=100`);
    for (const m of messages) {
      if (m.seq >= w.low) w.put(m);
    }
    emit("messages", { id, reason: "update" });
    fillGap(id);
  } catch {
    // The next reconnect or heartbeat tries again.
  }
}

/** A new message: summary, unread count, window, outbox, typing. Idempotent per seq. */
function ingestMessage(msg) {
  const conv = store.conversations.get(msg.conversation_id);
  if (!conv) {
    fetchConversation(msg.conversation_id);
    return;
  }
  const mine = msg.sender_id === store.me.id;
  if (msg.seq > conv.last_seq) {
    noteLatest(conv, msg);
    if (mine) conv.read_seq = Math.max(conv.read_seq, msg.seq);
    else if (!msg.deleted) conv.unread += 1;
    emit("conversations");
  } else if (conv.last_message?.seq === msg.seq) {
    conv.last_message = msg;
  }
  if (mine && store.outbox.delete(msg.client_msg_id)) emit("outbox", conv.id);
  if (!mine) clearTyping(conv.id, msg.sender_id);
  const w = store.windows.get(conv.id);
  if (w?.loaded && msg.seq >= w.low) {
    const existing = w.messages.get(msg.seq);
    // Keep an edited or deleted copy we already have over the original.
    if (!existing) w.put(msg);
    emit("messages", { id: conv.id, reason: "new", seq: msg.seq, mine });
    if (msg.seq > w.high + 1 || w.newest > w.high) fillGap(conv.id);
    if (conv.id === store.activeId) markRead(conv.id);
  }
}

function noteLatest(conv, msg) {
  if (msg.seq >= conv.last_seq || !conv.last_message) {
    conv.last_seq = Math.max(conv.last_seq, msg.seq);
    conv.last_message = msg;
  }
}

/** An edit or delete: replace the message wherever it is shown. */
function applyChange(msg) {
  const conv = store.conversations.get(msg.conversation_id);
  if (!conv) return;
  if (conv.last_message?.seq === msg.seq) {
    conv.last_message = msg;
    emit("conversations");
  }
  const w = store.windows.get(conv.id);
  if (w?.loaded && w.messages.has(msg.seq)) {
    w.messages.set(msg.seq, msg);
    emit("messages", { id: conv.id, reason: "update", seq: msg.seq });
  }
}

function onRead({ conversation_id, user_id, seq }) {
  const conv = store.conversations.get(conversation_id);
  if (!conv) return;
  if (user_id === store.me.id) {
    // Another of my devices (or this one) read up to seq.
    if (seq > conv.read_seq) {
      conv.read_seq = seq;
      conv.unread = seq >= conv.last_seq ? 0 : countUnread(conv);
      emit("conversations");
    }
    return;
  }
  const w = windowFor(conversation_id);
  if (seq > (w.readPositions.get(user_id) || 0)) {
    w.readPositions.set(user_id, seq);
    emit("reads", conversation_id);
  }
}

function countUnread(conv) {
  const w = store.windows.get(conv.id);
  if (!w?.loaded) return conv.unread;
  let n = 0;
  for (const m of w.messages.values()) {
    if (m.seq > conv.read_seq && m.sender_id !== store.me.id && !m.deleted) n += 1;
  }
  return n;
}

async function onResync({ conversation_id, last_seq }) {
  // Too much was missed to replay: start the window over from the newest page. Rarely the
  // server is behind us instead (its database was restored from a backup): its position
  // wins, so the seqs it hands out again are taken as new messages, not as old ones.
  const conv = store.conversations.get(conversation_id);
  if (conv && typeof last_seq === "number" && last_seq < conv.last_seq) {
    conv.last_seq = last_seq;
    conv.read_seq = Math.min(conv.read_seq ?? 0, last_seq);
    conv.last_message = null;
  }
  const w = store.windows.get(conversation_id);
  await fetchConversation(conversation_id);
  if (w?.loaded) {
    w.loaded = false;
    await loadLatest(conversation_id).catch(() => {});
  }
}

/** Heartbeats carry every conversation's latest seq: a higher one means a lost event. */
function onHeartbeat(latest) {
  let unknown = false;
  for (const [id, seq] of Object.entries(latest || {})) {
    const conv = store.conversations.get(id);
    if (!conv) unknown = true;
    else if (seq > conv.last_seq) {
      const w = store.windows.get(id);
      if (w?.loaded) {
        fillGap(id, seq);
      } else {
        fetchConversation(id);
      }
    }
  }
  if (unknown) loadConversations().catch(() => {});
}

// ---------------------------------------------------------------- typing

const typingTimers = new Map(); // conversationId → Map(userId → timeout)

function onTyping({ conversation_id, user_id }) {
  if (user_id === store.me.id) return;
  let timers = typingTimers.get(conversation_id);
  if (!timers) typingTimers.set(conversation_id, (timers = new Map()));
  clearTimeout(timers.get(user_id));
  timers.set(
    user_id,
    setTimeout(() => clearTyping(conversation_id, user_id), TYPING_SHOW_MS),
  );
  emit("typing", conversation_id);
}

function clearTyping(conversationId, userId) {
  const timers = typingTimers.get(conversationId);
  if (!timers?.has(userId)) return;
  clearTimeout(timers.get(userId));
  timers.delete(userId);
  emit("typing", conversationId);
}

/** Who is typing in a conversation right now (user ids). */
export function typingIn(conversationId) {
  return [...(typingTimers.get(conversationId)?.keys() || [])];
}

/** Called on every keystroke in the composer; sends at most one event per 3 s. */
export function typing(conversationId) {
  const now = Date.now();
  if (now - (lastTypingSent.get(conversationId) || 0) < TYPING_SEND_EVERY_MS) return;
  if (socket?.send({ type: "typing", conversation_id: conversationId })) lastTypingSent.set(conversationId, now);
}

// ---------------------------------------------------------------- sending

/** Queues a message: shown at once as pending, sent over the socket, resent after reconnects. */
export function send(conversationId, body) {
  const entry = {
    clientMsgId: uuid(),
    conversationId,
    body,
    status: "pending",
    error: null,
    createdAt: new Date().toISOString(),
  };
  store.outbox.set(entry.clientMsgId, entry);
  lastTypingSent.delete(conversationId);
  emit("outbox", conversationId);
  transmit(entry);
  return entry;
}

function transmit(entry) {
  if (!socket?.online) {
    // Sent when the socket is back (onSynced). If it stays down for long while REST still
    // works (say a proxy that blocks WebSockets), post it instead: same client_msg_id, so
    // a later socket resend cannot double it.
    clearTimeout(entry.fallbackTimer);
    entry.fallbackTimer = setTimeout(() => sendOverRest(entry), REST_FALLBACK_MS);
    return;
  }
  clearTimeout(entry.fallbackTimer);
  socket
    .request({
      type: "send",
      conversation_id: entry.conversationId,
      client_msg_id: entry.clientMsgId,
      body: entry.body,
    })
    .then(
      (ack) => ingestMessage(ack.message),
      (err) => {
        if (!store.outbox.has(entry.clientMsgId)) return;
        // Lost connection or no answer: stay pending and go again (same client_msg_id).
        if (err.code === "disconnected" || err.code === "timeout") {
          transmit(entry);
          return;
        }
        entry.status = "failed";
        entry.error = describeError(err);
        emit("outbox", entry.conversationId);
      },
    );
}

async function sendOverRest(entry) {
  if (store.outbox.get(entry.clientMsgId) !== entry || entry.status !== "pending" || socket?.online) return;
  try {
    const msg = await api.post(`/v1/conversations/${entry.conversationId}/messages`, {
      client_msg_id: entry.clientMsgId,
      body: entry.body,
    });
    ingestMessage(msg);
  } catch (err) {
    if (!store.outbox.has(entry.clientMsgId)) return;
    if (err.status === 0 || err.status >= 500 || err.status === 429) {
      // Still unreachable: try again later unless the socket takes over first.
      entry.fallbackTimer = setTimeout(() => sendOverRest(entry), REST_FALLBACK_MS);
      return;
    }
    if (err.code === "signed_out") return;
    entry.status = "failed";
    entry.error = describeError(err);
    emit("outbox", entry.conversationId);
  }
}

/** Tries a refused message again (the user may have fixed the cause). */
export function retry(clientMsgId) {
  const entry = store.outbox.get(clientMsgId);
  if (!entry) return;
  entry.status = "pending";
  entry.error = null;
  emit("outbox", entry.conversationId);
  transmit(entry);
}

export function discard(clientMsgId) {
  const entry = store.outbox.get(clientMsgId);
  if (!entry) return;
  store.outbox.delete(clientMsgId);
  emit("outbox", entry.conversationId);
}

export async function editMessage(msg, body) {
  applyChange(await api.patch(`/v1/conversations/${msg.conversation_id}/messages/${msg.id}`, { body }));
}

export async function deleteMessage(msg) {
  applyChange(await api.del(`/v1/conversations/${msg.conversation_id}/messages/${msg.id}`));
}

/** Moves my read position to the newest message on screen (only while the tab is visible). */
export function markRead(id) {
  const conv = store.conversations.get(id);
  const w = store.windows.get(id);
  // While offline or replaying, onSynced marks the open conversation read afterwards.
  if (!conv || !w?.loaded || document.visibilityState !== "visible" || !socket?.online) return;
  const seq = w.high;
  if (seq <= conv.read_seq && !conv.unread) return;
  conv.read_seq = Math.max(conv.read_seq, seq);
  if (conv.read_seq >= conv.last_seq) conv.unread = 0;
  emit("conversations");
  // One read frame per conversation per 300 ms at most: a busy conversation must not push
  // the socket over the server's frame rate limit.
  pendingReads.set(id, Math.max(pendingReads.get(id) || 0, seq));
  if (!readTimer) readTimer = setTimeout(flushReads, 300);
}

const pendingReads = new Map(); // conversationId → seq not yet sent
let readTimer = 0;

function flushReads() {
  readTimer = 0;
  for (const [id, seq] of pendingReads) {
    if (!socket?.send({ type: "read", conversation_id: id, seq })) break; // resent by onSynced
    pendingReads.delete(id);
  }
}

/**
 * A random UUID for client_msg_id. crypto.randomUUID only exists in secure contexts
 * (https or localhost); a server reached over plain http on a LAN still needs one.
 */
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function describeError(err) {
  const messages = {
    invalid_body: "The message is empty or too long",
    rate_limited: "You are sending too fast; wait a moment",
    not_found: "This conversation is no longer available",
    forbidden: "You are not allowed to do this",
    network: "Cannot reach the server",
  };
  return messages[err?.code] || err?.message || "Something went wrong";
}
