// The signed-in layout: sidebar (conversation list) and main pane (a conversation or the
// sessions page), the call view (views/call.js) over the main pane, the connection banner
// and toasts. On narrow screens only one of the two panes is shown at a time
// (`data-screen` on the root, see styles.css).

import { h, icon } from "../dom.js";
import { currentRoute, navigate, onRoute } from "../router.js";
import { on, store } from "../store.js";
import { setTitle, setUnread } from "../title.js";
import { CallView } from "./call.js";
import { ConversationView } from "./conversation.js";
import { SessionsView } from "./sessions.js";
import { Sidebar } from "./sidebar.js";

export class Shell {
  constructor(root, { onSignOut }) {
    this.root = root;
    this.onSignOut = onSignOut;
    this.view = null;
    this.viewKey = null;
    this.unsubscribe = [];
  }

  mount() {
    this.banner = h("div", { class: "banner", role: "status", "aria-live": "polite" });
    this.toasts = h("div", { class: "toasts", "aria-live": "assertive" });
    this.sidebar = new Sidebar({ onSignOut: this.onSignOut, shell: this });
    this.main = h("main", { class: "main", id: "main" });
    this.el = h("div", { class: "app", "data-screen": "list" }, this.banner, this.sidebar.el, this.main, this.toasts);
    this.root.replaceChildren(this.el);
    this.callView = new CallView({ shell: this });
    this.callView.mount(this.el);
    this.showEmpty();
    this.unsubscribe.push(
      on("status", () => this.renderStatus()),
      on("removed", (id) => {
        if (this.viewKey === `c:${id}`) {
          this.toast("You are no longer a member of that conversation.");
          navigate("/", { replace: true });
        }
      }),
      on("conversations", () => {
        let unread = 0;
        for (const c of store.conversations.values()) unread += c.unread || 0;
        setUnread(unread);
        // A deep link opened before the list arrived: show it now.
        const r = currentRoute();
        if (r.name === "conversation" && this.viewKey !== `c:${r.id}` && store.conversations.has(r.id)) this.route();
      }),
      onRoute(() => this.route()),
    );
    this.renderStatus();
  }

  destroy() {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    this.view?.destroy();
    this.sidebar?.destroy();
    this.callView?.destroy();
    this.view = null;
    this.root.replaceChildren();
  }

  /** Shows the screen for the current URL. */
  route() {
    const r = currentRoute();
    let key = "home";
    if (r.name === "conversation" && store.conversations.has(r.id)) key = `c:${r.id}`;
    else if (r.name === "sessions") key = "sessions";
    else if (r.name === "conversation" && store.conversations.size) {
      // Unknown or no longer ours.
      navigate("/", { replace: true });
      return;
    }
    store.activeId = key.startsWith("c:") ? r.id : null;
    this.sidebar.setActive(store.activeId);
    this.el.dataset.screen = key === "home" ? "list" : "main";
    if (key === this.viewKey) return;
    this.view?.destroy();
    this.view = null;
    this.viewKey = key;
    if (key === "home") {
      this.showEmpty();
      setTitle("");
      return;
    }
    this.view = key === "sessions" ? new SessionsView({ shell: this }) : new ConversationView(r.id, { shell: this });
    this.main.replaceChildren(this.view.el);
    this.view.mounted?.();
  }

  showEmpty() {
    this.main.replaceChildren(
      h(
        "div",
        { class: "empty-state" },
        h("span", { class: "empty-icon" }, icon("chat")),
        h("h2", {}, "Your conversations"),
        h("p", { class: "muted" }, "Pick a conversation on the left, or search for someone by username to start a new one."),
      ),
    );
  }

  renderStatus() {
    const reconnecting = store.status === "reconnecting";
    this.banner.classList.toggle("visible", reconnecting);
    this.banner.replaceChildren(...(reconnecting ? [h("span", { class: "spinner", "aria-hidden": "true" }), "Reconnecting…"] : []));
    this.el.classList.toggle("offline", reconnecting);
    this.sidebar.renderStatus();
  }

  /** A short notice at the bottom of the screen. */
  toast(text, kind = "info") {
    const el = h("div", { class: `toast ${kind}` }, kind === "error" ? icon("alert") : null, h("span", {}, text));
    this.toasts.append(el);
    setTimeout(() => el.classList.add("leaving"), 4500);
    setTimeout(() => el.remove(), 5000);
  }
}
