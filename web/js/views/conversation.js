// One conversation: header (with the call button), message log with upward infinite
// scroll, typing indicator and composer. Rows are reconciled by key (day, message, or
// client_msg_id for my own messages, so a pending bubble turns into the sent one in place
// and never doubles). Call summaries are centered lines, not bubbles.

import { avatar, formatAgo, formatDay, formatFull, formatTime, h, icon } from "../dom.js";
import * as calls from "../calls.js";
import * as chat from "../chat.js";
import { navigate } from "../router.js";
import { conversationTitle, directPeer, on, store, username, windowFor } from "../store.js";
import { setTitle } from "../title.js";
import { confirmDialog, groupSettingsDialog } from "./dialogs.js";

const GROUP_GAP_MS = 5 * 60 * 1000; // consecutive messages closer than this are grouped
const NEAR_BOTTOM_PX = 120;
const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

export class ConversationView {
  constructor(id, { shell }) {
    this.id = id;
    this.shell = shell;
    this.rows = new Map(); // key → element
    this.editingKey = null;
    this.loadError = null;

    this.titleEl = h("h2", { id: "conv-title", class: "conv-head-title" });
    this.subEl = h("p", { class: "conv-head-sub" });
    this.headAvatar = h("span", { class: "avatar-slot" });
    this.settingsBtn = h(
      "button",
      { type: "button", class: "icon-btn", "aria-label": "Group settings", title: "Group settings", hidden: true },
      icon("more"),
    );
    this.settingsBtn.addEventListener("click", () => groupSettingsDialog(this.id, { shell }));
    this.callBtn = h(
      "button",
      { type: "button", class: "icon-btn call-start", "aria-label": "Start video call", title: "Start video call" },
      icon("video"),
    );
    this.callBtn.addEventListener("click", () => calls.startCall(this.id));
    // A group call running without this device (say it was declined here): join it.
    this.joinBtn = h("button", { type: "button", class: "btn primary sm call-join", hidden: true }, icon("video"), "Join call");
    this.joinBtn.addEventListener("click", () => {
      const call = calls.liveCallIn(this.id);
      if (call) calls.accept(call.id);
    });

    this.olderBtn = h("button", { type: "button", class: "load-older", hidden: true }, "Load earlier messages");
    this.olderBtn.addEventListener("click", () => this.loadOlder());
    this.start = h("div", { class: "log-start", hidden: true }, "This is the beginning of the conversation.");
    this.rowsEl = h("div", { class: "rows" });
    this.log = h(
      "div",
      { class: "log", role: "log", "aria-label": "Messages", "aria-live": "polite", tabindex: "0" },
      // Pushes a short conversation to the bottom, next to the composer, like chat apps do.
      h("div", { class: "log-spacer", "aria-hidden": "true" }),
      this.olderBtn,
      this.start,
      this.rowsEl,
    );
    this.log.addEventListener("scroll", () => this.onScroll(), { passive: true });

    this.jumpBtn = h("button", { type: "button", class: "jump", hidden: true }, icon("down"), "New messages");
    this.jumpBtn.addEventListener("click", () => this.scrollToBottom(true));
    this.typingEl = h("div", { class: "typing", "aria-live": "polite" });

    this.input = h("textarea", {
      class: "composer-input",
      rows: "1",
      "aria-label": "Message",
      placeholder: "Write a message…",
      enterkeyhint: "send",
    });
    this.sendBtn = h("button", { type: "submit", class: "send-btn", "aria-label": "Send", title: "Send (Enter)" }, icon("send"));
    this.composer = h("form", { class: "composer" }, this.input, this.sendBtn);
    this.composer.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (e) => {
      // Enter sends, Shift+Enter is a newline; never while an IME is composing.
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener("input", () => {
      this.autosize();
      if (this.input.value.trim()) chat.typing(this.id);
    });

    const back = h("button", { type: "button", class: "icon-btn back", "aria-label": "Back", title: "Back" }, icon("back"));
    back.addEventListener("click", () => navigate("/"));

    this.el = h(
      "section",
      { class: "conversation", "aria-labelledby": "conv-title" },
      h(
        "header",
        { class: "conv-head" },
        back,
        this.headAvatar,
        h("div", { class: "conv-head-text" }, this.titleEl, this.subEl),
        this.joinBtn,
        this.callBtn,
        this.settingsBtn,
      ),
      h("div", { class: "log-wrap" }, this.log, this.jumpBtn),
      this.typingEl,
      this.composer,
    );

    this.unsubscribe = [
      on("messages", (d) => d.id === this.id && this.schedule(d)),
      on("outbox", (cid) => cid === this.id && this.schedule({ reason: "outbox" })),
      on("reads", (cid) => cid === this.id && this.schedule({ reason: "reads" })),
      on("typing", (cid) => cid === this.id && this.renderTyping()),
      on("conversation", (cid) => cid === this.id && this.renderHeader()),
      on("presence", () => this.renderHeader()),
      on("call", () => this.renderCallButtons()),
    ];
    this.subTimer = setInterval(() => this.renderHeader(), 30_000);
    this.renderHeader();
    this.renderCallButtons();
    this.renderTyping();
  }

  mounted() {
    const w = windowFor(this.id);
    if (w.loaded) this.render({ reason: "reset" });
    else this.rowsEl.replaceChildren(h("p", { class: "log-loading muted" }, "Loading messages…"));
    chat.open(this.id).catch((err) => {
      this.rowsEl.replaceChildren(
        h("p", { class: "log-loading muted", role: "alert" }, `Could not load messages: ${chat.describeError(err)}`),
      );
    });
    // On phones the keyboard would cover the conversation: focus only on wide screens.
    if (window.matchMedia("(min-width: 761px)").matches) this.input.focus({ preventScroll: true });
  }

  destroy() {
    for (const off of this.unsubscribe) off();
    clearInterval(this.subTimer);
    clearTimeout(this.renderTimer);
  }

  /**
   * Coalesces renders: a replay after a reconnect can deliver hundreds of messages in a
   * row, and one render per message would redo the whole list each time.
   */
  schedule(detail) {
    const p = (this.pendingRender ||= { reasons: new Set(), mine: false });
    p.reasons.add(detail.reason);
    if (detail.mine) p.mine = true;
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = 0;
      const { reasons, mine } = this.pendingRender;
      this.pendingRender = null;
      // The most demanding scroll behaviour wins: reset > older > mine/outbox > new.
      const reason = ["reset", "older", "outbox", "new", "update", "reads"].find((r) => reasons.has(r));
      this.render({ reason, mine });
    }, 10);
  }

  get conv() {
    return store.conversations.get(this.id);
  }

  renderHeader() {
    const conv = this.conv;
    if (!conv) return;
    const title = conversationTitle(conv);
    setTitle(title);
    if (this.titleEl.textContent !== title) {
      this.titleEl.textContent = title;
      this.headAvatar.replaceChildren(avatar(title, { group: conv.kind === "group" }));
    }
    let sub = "";
    const peer = directPeer(conv);
    if (peer) {
      const p = store.presence.get(peer.id);
      sub = p?.online ? "online" : p?.last_seen_at ? `last seen ${formatAgo(p.last_seen_at)}` : "offline";
      this.subEl.classList.toggle("online", Boolean(p?.online));
    } else if (conv.kind === "group") {
      const names = conv.members.map((m) => (m.id === store.me.id ? "you" : m.username));
      const n = conv.members.length;
      sub = `${n} member${n === 1 ? "" : "s"} · ${names.join(", ")}`;
    }
    this.subEl.textContent = sub;
    this.settingsBtn.hidden = conv.kind !== "group";
  }

  renderCallButtons() {
    const mine = calls.currentCall() || calls.inCallElsewhere();
    const running = calls.liveCallIn(this.id);
    const joinable =
      !mine && running?.state === "active" && !running.participants.some((p) => p.user_id === store.me?.id);
    this.joinBtn.hidden = !joinable;
    this.callBtn.hidden = joinable;
    this.callBtn.disabled = Boolean(mine);
    this.callBtn.title = mine ? "You are in a call" : "Start video call";
  }

  renderTyping() {
    const names = chat.typingIn(this.id).map((uid) => username(uid));
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = "Several people are typing…";
    this.typingEl.textContent = text;
    this.typingEl.classList.toggle("active", Boolean(text));
  }

  // ------------------------------------------------------------ log rendering

  isNearBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < NEAR_BOTTOM_PX;
  }

  render(detail = {}) {
    const w = windowFor(this.id);
    if (!w.loaded) return;
    const conv = this.conv;
    if (!conv) return;
    const wasNearBottom = this.isNearBottom();
    const prevHeight = this.log.scrollHeight;
    const prevTop = this.log.scrollTop;

    const rows = this.buildRows(w, conv);
    const seen = new Set();
    rows.forEach((row, index) => {
      seen.add(row.key);
      let el = this.rows.get(row.key);
      if (!el) {
        el =
          row.kind === "day"
            ? h("div", { class: "day", role: "separator", "data-key": row.key }, h("span", {}, row.label))
            : h("div", { "data-key": row.key });
        this.rows.set(row.key, el);
      }
      if (row.kind !== "day" && row.key !== this.editingKey) this.updateMessage(el, row);
      if (this.rowsEl.children[index] !== el) this.rowsEl.insertBefore(el, this.rowsEl.children[index] || null);
    });
    for (const [key, el] of this.rows) {
      if (!seen.has(key)) {
        el.remove();
        this.rows.delete(key);
      }
    }
    // Leftovers such as the "Loading…" placeholder.
    for (const child of [...this.rowsEl.children]) if (!seen.has(child.dataset.key)) child.remove();

    this.olderBtn.hidden = !w.hasOlder;
    this.olderBtn.textContent = w.olderLoading ? "Loading…" : "Load earlier messages";
    this.start.hidden = w.hasOlder;
    this.start.textContent = rows.length
      ? "This is the beginning of the conversation."
      : "No messages yet. Say hello!";

    const reason = detail.reason;
    if (reason === "older") {
      // Keep what the user was looking at in place while older messages appear above.
      this.log.scrollTop = prevTop + (this.log.scrollHeight - prevHeight);
    } else if (reason === "reset" || reason === "outbox" || (reason === "new" && detail.mine) || wasNearBottom) {
      this.scrollToBottom();
    } else if (reason === "new") {
      this.jumpBtn.hidden = false;
    }
    if (reason === "reset") this.fillViewport();
  }

  /** The ordered rows: day separators, messages, then my pending messages. */
  buildRows(w, conv) {
    const rows = [];
    let prevDay = null;
    let prev = null;
    const addDay = (iso) => {
      const day = new Date(iso).toDateString();
      if (day !== prevDay) {
        rows.push({ key: `d:${day}`, kind: "day", label: formatDay(iso) });
        prevDay = day;
        prev = null;
      }
    };
    const others = conv.members.filter((m) => m.id !== store.me.id);
    for (const msg of w.sorted()) {
      addDay(msg.created_at);
      if (calls.isCallSummary(msg)) {
        rows.push({ key: `m:${msg.id}`, kind: "call", msg });
        prev = null;
        continue;
      }
      const mine = msg.sender_id === store.me.id;
      const cont =
        prev && prev.sender_id === msg.sender_id && Date.parse(msg.created_at) - Date.parse(prev.created_at) < GROUP_GAP_MS;
      let state = "received";
      let readers = [];
      if (mine) {
        readers = others.filter((m) => (w.readPositions.get(m.id) || 0) >= msg.seq);
        state = readers.length ? "read" : "sent";
      }
      rows.push({ key: mine && msg.client_msg_id ? `c:${msg.client_msg_id}` : `m:${msg.id}`, kind: "msg", msg, mine, cont, state, readers });
      prev = msg;
    }
    const pending = [...store.outbox.values()]
      .filter((e) => e.conversationId === this.id)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    for (const entry of pending) {
      addDay(entry.createdAt);
      const cont = prev && prev.sender_id === store.me.id;
      rows.push({ key: `c:${entry.clientMsgId}`, kind: "pending", entry, mine: true, cont, state: entry.status });
      prev = { sender_id: store.me.id, created_at: entry.createdAt };
    }
    // Only my newest message spells out its status; older ones show just the tick icon.
    for (let i = rows.length - 1; i >= 0; i--) {
      if (rows[i].mine) {
        rows[i].last = true;
        break;
      }
    }
    return rows;
  }

  updateMessage(el, row) {
    if (row.kind === "call") {
      this.updateCallLine(el, row.msg);
      return;
    }
    const conv = this.conv;
    const msg = row.msg;
    const data = row.kind === "pending" ? row.entry : msg;
    const sig = JSON.stringify([
      row.state,
      row.cont,
      row.last,
      row.readers?.map((r) => r.id),
      msg?.body ?? data.body,
      msg?.edited_at,
      msg?.deleted,
      row.entry?.error,
      conv.owner_id,
      conv.kind,
    ]);
    if (el._sig === sig) return;
    el._sig = sig;
    el.dataset.key = row.key;
    if (msg) el.dataset.seq = String(msg.seq);
    else delete el.dataset.seq;
    if (msg) el.dataset.messageId = msg.id;
    el.className = ["msg", row.mine ? "mine" : "theirs", row.state, row.cont ? "cont" : "", msg?.deleted ? "deleted" : ""]
      .filter(Boolean)
      .join(" ");
    // Focusable (not in the tab order) so a tap on touch screens reveals the actions.
    el.tabIndex = -1;

    const showSender = !row.mine && !row.cont && conv.kind === "group";
    const body = msg?.deleted
      ? h("p", { class: "body tombstone" }, "message deleted")
      : h("p", { class: "body" }, ...linkify(data.body));

    const meta = h("span", { class: "meta" });
    const when = msg?.created_at || data.createdAt;
    meta.append(h("time", { datetime: when, title: formatFull(when) }, formatTime(when)));
    if (msg?.edited_at && !msg.deleted) meta.append(h("span", { class: "edited", title: formatFull(msg.edited_at) }, "edited"));
    if (row.mine && !msg?.deleted) meta.append(statusBadge(row, conv));

    const bubble = h("div", { class: "bubble" }, body, meta);
    const parts = [];
    if (showSender) parts.push(h("span", { class: "sender" }, username(msg.sender_id)));
    const line = h("div", { class: "line" });
    if (!row.mine && conv.kind === "group") {
      line.append(row.cont ? h("span", { class: "avatar-spacer" }) : avatar(username(msg.sender_id), { size: "sm" }));
    }
    line.append(bubble);

    const actions = this.actionsFor(row, el);
    if (actions) line.append(actions);
    parts.push(line);

    if (row.kind === "pending" && row.entry.status === "failed") {
      const retry = h("button", { type: "button", class: "link-btn" }, "Retry");
      retry.addEventListener("click", () => chat.retry(row.entry.clientMsgId));
      const discard = h("button", { type: "button", class: "link-btn" }, "Discard");
      discard.addEventListener("click", () => chat.discard(row.entry.clientMsgId));
      parts.push(
        h("div", { class: "send-error", role: "alert" }, icon("alert"), h("span", {}, `Not sent: ${row.entry.error}`), retry, discard),
      );
    }
    el.replaceChildren(...parts);
  }

  /** A call summary: a centered line with an icon, the summary and the time. */
  updateCallLine(el, msg) {
    const sig = JSON.stringify(["call", msg.body, msg.created_at]);
    if (el._sig === sig) return;
    el._sig = sig;
    el.dataset.seq = String(msg.seq);
    el.dataset.messageId = msg.id;
    const missed = msg.body === "Missed call" && msg.sender_id !== store.me.id;
    el.className = `call-line${missed ? " missed" : ""}`;
    el.replaceChildren(
      h(
        "span",
        { class: "call-pill" },
        icon(msg.body.startsWith("Call —") ? "phone" : "phone-off"),
        h("span", { class: "call-text" }, msg.body),
        h("time", { datetime: msg.created_at, title: formatFull(msg.created_at) }, formatTime(msg.created_at)),
      ),
    );
  }

  actionsFor(row, el) {
    const msg = row.msg;
    if (!msg || msg.deleted) return null;
    const conv = this.conv;
    const canEdit = row.mine;
    const canDelete = row.mine || (conv.kind === "group" && conv.owner_id === store.me.id);
    if (!canEdit && !canDelete) return null;
    const box = h("div", { class: "actions" });
    if (canEdit) {
      const edit = h("button", { type: "button", class: "icon-btn sm", "aria-label": "Edit message", title: "Edit" }, icon("edit"));
      edit.addEventListener("click", () => this.startEdit(el, row));
      box.append(edit);
    }
    if (canDelete) {
      const del = h("button", { type: "button", class: "icon-btn sm", "aria-label": "Delete message", title: "Delete" }, icon("trash"));
      del.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: "Delete message?",
          text: "Everyone in the conversation will see “message deleted” instead.",
          confirm: "Delete",
          danger: true,
        });
        if (!ok) return;
        try {
          await chat.deleteMessage(msg);
        } catch (err) {
          this.shell.toast(`Could not delete: ${chat.describeError(err)}`, "error");
        }
      });
      box.append(del);
    }
    return box;
  }

  startEdit(el, row) {
    this.editingKey = row.key;
    const msg = row.msg;
    const input = h("textarea", { class: "edit-input", "aria-label": "Edited text", rows: "2" });
    input.value = msg.body;
    const save = h("button", { type: "submit", class: "btn primary sm" }, "Save");
    const cancel = h("button", { type: "button", class: "btn secondary sm" }, "Cancel");
    const error = h("p", { class: "form-error", role: "alert" });
    const form = h("form", { class: "edit-form" }, input, error, h("div", { class: "edit-actions" }, cancel, save));
    const finish = () => {
      this.editingKey = null;
      el._sig = null;
      this.render({ reason: "update" });
    };
    cancel.addEventListener("click", finish);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        finish();
      } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = input.value.trim();
      if (!body || body === msg.body) return finish();
      save.disabled = true;
      try {
        await chat.editMessage(msg, body);
        finish();
      } catch (err) {
        error.textContent = chat.describeError(err);
        save.disabled = false;
      }
    });
    el.querySelector(".bubble").replaceWith(h("div", { class: "bubble editing" }, form));
    el.querySelector(".actions")?.remove();
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  // ------------------------------------------------------------ scrolling

  scrollToBottom(smooth = false) {
    this.log.scrollTo({ top: this.log.scrollHeight, behavior: smooth ? "smooth" : "auto" });
    this.jumpBtn.hidden = true;
  }

  onScroll() {
    if (this.isNearBottom()) this.jumpBtn.hidden = true;
    if (this.log.scrollTop < 200) this.loadOlder();
  }

  async loadOlder() {
    const w = windowFor(this.id);
    if (!w.hasOlder || w.olderLoading) return;
    this.olderBtn.textContent = "Loading…";
    try {
      await chat.loadOlder(this.id);
    } catch (err) {
      this.shell.toast(`Could not load older messages: ${chat.describeError(err)}`, "error");
    }
    this.fillViewport();
  }

  /** If the newest page does not fill the screen, load older pages until it does. */
  fillViewport() {
    const w = windowFor(this.id);
    if (w.hasOlder && this.log.scrollHeight <= this.log.clientHeight + 40) this.loadOlder();
  }

  // ------------------------------------------------------------ composing

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 180)}px`;
  }

  submit() {
    const body = this.input.value.trim();
    if (!body) return;
    chat.send(this.id, body);
    this.input.value = "";
    this.autosize();
    this.input.focus();
  }
}

/** The tick next to my messages: pending clock, sent check, read double check. */
function statusBadge(row, conv) {
  let iconName = "check";
  let text = "Sent";
  if (row.state === "pending") {
    iconName = "clock";
    text = "Sending…";
  } else if (row.state === "failed") {
    iconName = "alert";
    text = "Not sent";
  } else if (row.state === "read") {
    iconName = "checks";
    const names = row.readers.map((m) => m.username);
    text = conv.kind === "group" ? `Read by ${names.length > 2 ? `${names.length} people` : names.join(", ")}` : "Read";
  }
  return h(
    "span",
    { class: "status", title: text },
    icon(iconName),
    h("span", { class: row.last ? "status-text" : "sr-only" }, text),
  );
}

/** Splits text into text nodes and safe http(s) links (never innerHTML). */
function linkify(text) {
  const out = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    out.push(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer nofollow" }, match[0]));
    last = match.index + match[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}
