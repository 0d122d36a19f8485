// The sidebar: who I am, actions (new group, sessions, sign out), user search to start a
// direct conversation, and the conversation list sorted by activity.

import { avatar, debounce, formatListTime, h, icon } from "../dom.js";
import { isCallSummary } from "../calls.js";
import * as chat from "../chat.js";
import { navigate } from "../router.js";
import { conversationTitle, directPeer, on, sortedConversations, store, username } from "../store.js";
import { newGroupDialog } from "./dialogs.js";

export class Sidebar {
  constructor({ onSignOut, shell }) {
    this.shell = shell;
    this.items = new Map(); // conversation id → {li, link, ...parts}
    this.activeId = null;

    this.connText = h("span", { class: "conn-text" });
    const me = store.me || { username: "" };
    this.meName = h("span", { class: "me-name" }, me.username);
    this.meAvatar = h("span", { class: "avatar-slot" }, avatar(me.username));

    const button = (label, iconName, onclick) =>
      h("button", { type: "button", class: "icon-btn", "aria-label": label, title: label, onclick }, icon(iconName));

    this.search = h("input", {
      id: "user-search",
      type: "search",
      placeholder: "Search people by username",
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "none",
    });
    this.results = h("ul", { class: "search-results", "aria-label": "Search results", hidden: true });
    this.list = h("ul", { class: "conv-list", "aria-label": "Conversations" });
    this.empty = h(
      "p",
      { class: "list-empty muted", hidden: true },
      "No conversations yet. Search for someone above to start chatting.",
    );

    this.el = h(
      "aside",
      { class: "sidebar", "aria-label": "Conversations sidebar" },
      h(
        "header",
        { class: "sidebar-head" },
        this.meAvatar,
        h("div", { class: "me" }, this.meName, this.connText),
        h(
          "div",
          { class: "head-actions" },
          button("New group", "group", () => newGroupDialog({ onCreated: (conv) => navigate(`/c/${conv.id}`) })),
          button("Sessions", "devices", () => navigate("/sessions")),
          button("Sign out", "logout", onSignOut),
        ),
      ),
      h(
        "div",
        { class: "search" },
        h("label", { for: "user-search", class: "sr-only" }, "Search users"),
        h("div", { class: "search-box" }, icon("search"), this.search),
        this.results,
      ),
      h("nav", { class: "conv-nav", "aria-label": "Conversation list" }, this.list, this.empty),
    );

    const runSearch = debounce(() => this.runSearch(), 200);
    this.search.addEventListener("input", runSearch);
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.clearSearch();
      if (e.key === "ArrowDown") {
        e.preventDefault();
        this.results.querySelector("button")?.focus();
      }
    });
    this.results.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        this.clearSearch();
        this.search.focus();
      }
    });

    // Many events can arrive at once (a replay): render at most once per tick.
    const schedule = () => {
      if (this.renderTimer) return;
      this.renderTimer = setTimeout(() => {
        this.renderTimer = 0;
        this.renderList();
      }, 10);
    };
    this.unsubscribe = [on("conversations", schedule), on("conversation", schedule), on("presence", schedule)];
    this.renderList();
    this.renderStatus();
  }

  destroy() {
    for (const off of this.unsubscribe) off();
    clearTimeout(this.renderTimer);
  }

  renderStatus() {
    const text = { online: "Online", connecting: "Connecting…", reconnecting: "Offline — reconnecting" }[store.status];
    this.connText.textContent = text || "";
    this.connText.dataset.status = store.status;
    if (store.me && this.meName.textContent !== store.me.username) {
      this.meName.textContent = store.me.username;
      this.meAvatar.replaceChildren(avatar(store.me.username));
    }
  }

  setActive(id) {
    this.activeId = id;
    for (const [cid, item] of this.items) {
      if (cid === id) item.link.setAttribute("aria-current", "page");
      else item.link.removeAttribute("aria-current");
    }
  }

  async runSearch() {
    const prefix = this.search.value.trim().toLowerCase();
    if (!prefix) {
      this.clearResults();
      return;
    }
    let users;
    try {
      users = await chat.searchUsers(prefix);
    } catch {
      return;
    }
    if (this.search.value.trim().toLowerCase() !== prefix) return; // a newer search is running
    const others = users.filter((u) => u.id !== store.me.id);
    this.results.hidden = false;
    if (!others.length) {
      this.results.replaceChildren(h("li", { class: "search-empty muted" }, `No one found for “${prefix}”`));
      return;
    }
    this.results.replaceChildren(
      ...others.map((u) =>
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "search-result", onclick: () => this.startDirect(u) },
            avatar(u.username, { size: "sm" }),
            h("span", {}, u.username),
          ),
        ),
      ),
    );
  }

  async startDirect(user) {
    try {
      const conv = await chat.openDirect(user.id);
      this.clearSearch();
      navigate(`/c/${conv.id}`);
    } catch (err) {
      this.shell.toast(chat.describeError(err), "error");
    }
  }

  clearResults() {
    this.results.hidden = true;
    this.results.replaceChildren();
  }

  clearSearch() {
    this.search.value = "";
    this.clearResults();
  }

  /** Keyed update: list items are reused and only reordered when the order changed. */
  renderList() {
    const convs = sortedConversations();
    const seen = new Set();
    convs.forEach((conv, index) => {
      seen.add(conv.id);
      let item = this.items.get(conv.id);
      if (!item) {
        item = this.createItem(conv);
        this.items.set(conv.id, item);
      }
      this.updateItem(item, conv);
      if (this.list.children[index] !== item.li) this.list.insertBefore(item.li, this.list.children[index] || null);
    });
    for (const [id, item] of this.items) {
      if (!seen.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }
    this.empty.hidden = convs.length > 0;
  }

  createItem(conv) {
    const parts = {
      avatarSlot: h("span", { class: "avatar-wrap" }),
      title: h("span", { class: "conv-title" }),
      time: h("time", { class: "conv-time" }),
      preview: h("span", { class: "conv-preview" }),
      badge: h("span", { class: "badge" }),
      presence: h("span", { class: "sr-only" }),
    };
    const link = h(
      "a",
      { class: "conv-item", href: `/c/${conv.id}` },
      parts.avatarSlot,
      h(
        "span",
        { class: "conv-main" },
        h("span", { class: "conv-top" }, parts.title, parts.presence, parts.time),
        h("span", { class: "conv-bottom" }, parts.preview, parts.badge),
      ),
    );
    link.addEventListener("click", (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      navigate(`/c/${conv.id}`);
    });
    const li = h("li", { "data-conversation-id": conv.id }, link);
    return { li, link, ...parts, key: "" };
  }

  updateItem(item, conv) {
    const title = conversationTitle(conv);
    const peer = directPeer(conv);
    const online = peer ? Boolean(store.presence.get(peer.id)?.online) : false;
    const last = conv.last_message;
    let preview = "No messages yet";
    if (last) {
      const who = last.sender_id === store.me.id ? "You: " : conv.kind === "group" ? `${username(last.sender_id)}: ` : "";
      if (isCallSummary(last)) preview = last.body;
      else preview = last.deleted ? `${who}message deleted` : who + last.body.replace(/\s+/g, " ");
    }
    const key = JSON.stringify([title, online, preview, conv.unread, last?.created_at, conv.kind, Boolean(peer)]);
    if (key === item.key) return;
    item.key = key;
    item.avatarSlot.replaceChildren(avatar(title, { group: conv.kind === "group" }));
    if (peer) item.avatarSlot.append(h("span", { class: `presence-dot${online ? " online" : ""}`, "aria-hidden": "true" }));
    item.title.textContent = title;
    item.presence.textContent = peer ? (online ? ", online" : ", offline") : "";
    item.time.textContent = formatListTime(last?.created_at || conv.created_at);
    if (last?.created_at) item.time.setAttribute("datetime", last.created_at);
    item.preview.textContent = preview;
    item.preview.classList.toggle("deleted", Boolean(last?.deleted));
    item.badge.hidden = !conv.unread;
    item.badge.replaceChildren(
      h("span", { "aria-hidden": "true" }, conv.unread > 99 ? "99+" : String(conv.unread)),
      h("span", { class: "sr-only" }, `, ${conv.unread} unread`),
    );
    item.link.classList.toggle("unread", conv.unread > 0);
  }
}
