// The devices signed in to this account, with revoke. Revoking closes that device's
// sockets within a second (it sees the login screen); this device is marked and kept.

import { api } from "../api.js";
import { formatAgo, formatFull, h, icon } from "../dom.js";
import * as chat from "../chat.js";
import { navigate } from "../router.js";
import { setTitle } from "../title.js";
import { confirmDialog } from "./dialogs.js";

export class SessionsView {
  constructor({ shell }) {
    this.shell = shell;
    this.list = h("ul", { class: "session-list", "aria-label": "Signed-in devices" });
    this.error = h("p", { class: "form-error", role: "alert" });
    this.revokeOthers = h("button", { type: "button", class: "btn secondary", hidden: true }, "Sign out other sessions");
    this.revokeOthers.addEventListener("click", () => this.revokeAllOthers());
    const back = h("button", { type: "button", class: "icon-btn back", "aria-label": "Back", title: "Back" }, icon("back"));
    back.addEventListener("click", () => navigate("/"));
    this.el = h(
      "section",
      { class: "page", "aria-labelledby": "sessions-title" },
      h("header", { class: "conv-head" }, back, h("div", { class: "conv-head-text" }, h("h2", { id: "sessions-title", class: "conv-head-title" }, "Sessions"))),
      h(
        "div",
        { class: "page-body" },
        h("p", { class: "muted" }, "These devices are signed in to your account. Revoke any you don't recognise: they are signed out at once."),
        this.list,
        this.error,
        h("div", { class: "page-actions" }, this.revokeOthers),
      ),
    );
  }

  mounted() {
    setTitle("Sessions");
    this.load();
  }

  destroy() {}

  async load() {
    try {
      const { sessions } = await api.get("/v1/auth/sessions");
      sessions.sort((a, b) => Number(b.current) - Number(a.current) || b.last_seen_at.localeCompare(a.last_seen_at));
      this.render(sessions);
    } catch (err) {
      this.error.textContent = `Could not load sessions: ${chat.describeError(err)}`;
    }
  }

  render(sessions) {
    this.error.textContent = "";
    this.revokeOthers.hidden = sessions.filter((s) => !s.current).length === 0;
    this.list.replaceChildren(
      ...sessions.map((s) => {
        const device = describeAgent(s.user_agent);
        const since = `Signed in ${formatFull(s.created_at)}`;
        const action = s.current
          ? h("span", { class: "tag accent" }, "This device")
          : h("button", { type: "button", class: "btn ghost sm", "aria-label": `Revoke ${device}, ${since}` }, "Revoke");
        if (!s.current) action.addEventListener("click", () => this.revoke(s, action));
        return h(
          "li",
          { class: "session", "data-session-id": s.id },
          h("span", { class: "session-icon" }, icon("devices")),
          h(
            "div",
            { class: "session-text" },
            h("strong", {}, device),
            h("span", { class: "muted" }, `${since} · active ${formatAgo(s.last_seen_at)}`),
          ),
          action,
        );
      }),
    );
  }

  async revoke(session, button) {
    button.disabled = true;
    try {
      await api.del(`/v1/auth/sessions/${session.id}`);
      this.shell.toast("Session revoked");
    } catch (err) {
      if (err.status !== 404) this.error.textContent = `Could not revoke: ${chat.describeError(err)}`;
    }
    this.load();
  }

  async revokeAllOthers() {
    const ok = await confirmDialog({
      title: "Sign out other sessions?",
      text: "Every other device is signed out at once. This one stays signed in.",
      confirm: "Sign out others",
      danger: true,
    });
    if (!ok) return;
    try {
      const { revoked } = await api.del("/v1/auth/sessions");
      this.shell.toast(`${revoked} session${revoked === 1 ? "" : "s"} signed out`);
    } catch (err) {
      this.error.textContent = chat.describeError(err);
    }
    this.load();
  }
}

/** "Chrome on Linux" from a User-Agent string (best effort). */
export function describeAgent(ua) {
  if (!ua) return "Unknown device";
  const browser =
    (/Edg\//.test(ua) && "Edge") ||
    (/OPR\//.test(ua) && "Opera") ||
    (/Firefox\//.test(ua) && "Firefox") ||
    (/(Headless)?Chrom(e|ium)\//.test(ua) && "Chrome") ||
    (/Safari\//.test(ua) && "Safari") ||
    (/chattr/i.test(ua) && "Chattr CLI") ||
    (/curl/i.test(ua) && "curl") ||
    "Browser";
  const os =
    (/Android/.test(ua) && "Android") ||
    (/(iPhone|iPad|iPod)/.test(ua) && "iOS") ||
    (/Windows/.test(ua) && "Windows") ||
    (/Mac OS X|Macintosh/.test(ua) && "macOS") ||
    (/CrOS/.test(ua) && "ChromeOS") ||
    (/Linux/.test(ua) && "Linux") ||
    "";
  return os ? `${browser} on ${os}` : browser;
}
