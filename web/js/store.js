// Client state: plain objects plus a tiny event emitter. Views subscribe to the events
// they render; chat.js is the only writer.
//
// Per conversation we keep a summary (from the REST list, kept current by events) and,
// once opened, a window of messages keyed by seq. Keying by seq is what makes delivery
// exactly-once on screen: a message replayed after a reconnect, fetched by a gap fill and
// received live all land on the same key.

const listeners = new Map();

export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type)?.delete(fn);
}

export function emit(type, detail) {
  for (const fn of listeners.get(type) || []) {
    try {
      fn(detail);
    } catch (err) {
      console.error(`listener for ${type} failed`, err);
    }
  }
}

export const store = {
  /** The signed-in user {id, username}. */
  me: null,
  /** id → conversation summary (the server's object, plus local bookkeeping). */
  conversations: new Map(),
  /** id → MessageWindow (only for conversations that were opened). */
  windows: new Map(),
  /** userId → username, from members and search results (for sender names). */
  users: new Map(),
  /** userId → {online, last_seen_at}. */
  presence: new Map(),
  /** client_msg_id → {clientMsgId, conversationId, body, status: "pending"|"failed", error}. */
  outbox: new Map(),
  /** conversationId → Map(userId → expiry ms) of who is typing. */
  typing: new Map(),
  /** "connecting" | "online" | "reconnecting". */
  status: "connecting",
  /** The conversation on screen, if any. */
  activeId: null,
};

export function resetStore() {
  store.me = null;
  store.conversations.clear();
  store.windows.clear();
  store.users.clear();
  store.presence.clear();
  store.outbox.clear();
  store.typing.clear();
  store.status = "connecting";
  store.activeId = null;
}

/** The loaded messages of one conversation: a contiguous run of seqs [low, high]. */
export class MessageWindow {
  messages = new Map(); // seq → message
  loaded = false;
  loading = null; // promise while the first page loads
  low = 0; // lowest seq held
  high = 0; // highest seq such that low..high are all held
  olderLoading = false;
  fillTarget = 0; // newest seq a heartbeat or event said exists
  /** userId → highest seq that member has read. */
  readPositions = new Map();

  get hasOlder() {
    return this.loaded && this.low > 1;
  }

  /** Inserts (or replaces) a message; returns true if it was new. */
  put(msg) {
    const had = this.messages.has(msg.seq);
    this.messages.set(msg.seq, msg);
    if (!this.low || msg.seq < this.low) this.low = msg.seq;
    while (this.messages.has(this.high + 1)) this.high += 1;
    return !had;
  }

  /** Newest seq held at all (may be above `high` while a gap is being filled). */
  get newest() {
    let max = 0;
    for (const seq of this.messages.keys()) if (seq > max) max = seq;
    return max;
  }

  sorted() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }
}

export function windowFor(id) {
  let w = store.windows.get(id);
  if (!w) {
    w = new MessageWindow();
    store.windows.set(id, w);
  }
  return w;
}

/** Display name of a conversation: the group title, or the other member's name. */
export function conversationTitle(conv) {
  if (!conv) return "";
  if (conv.kind === "group") return conv.title || "Untitled group";
  const other = conv.members.find((m) => m.id !== store.me?.id);
  return other ? other.username : store.me?.username || "Direct conversation";
}

/** The other member of a direct conversation. */
export function directPeer(conv) {
  if (!conv || conv.kind !== "direct") return null;
  return conv.members.find((m) => m.id !== store.me?.id) || null;
}

export function username(userId) {
  if (userId === store.me?.id) return "You";
  return store.users.get(userId) || "Former member";
}

/** Time used to sort the conversation list by activity. */
export function activityTime(conv) {
  return Date.parse(conv.last_message?.created_at || conv.created_at || "") || 0;
}

export function sortedConversations() {
  return [...store.conversations.values()].sort((a, b) => activityTime(b) - activityTime(a));
}
