// Sign in / create account: one form, two submit buttons (the one pressed decides).

import { api } from "../api.js";
import { h, icon } from "../dom.js";
import { setTitle, setUnread } from "../title.js";

const ERRORS = {
  invalid_credentials: "Wrong username or password.",
  username_taken: "That username is already taken.",
  invalid_username: "Usernames are 3–32 characters: a–z, 0–9, _ . -",
  invalid_password: "Passwords need at least 8 characters.",
  network: "Cannot reach the server. Check your connection and try again.",
};

/**
 * Renders the auth screen into `root`.
 * @param {{message?: string, onAuthenticated: (res: object) => void}} opts
 */
export function renderAuth(root, { message, onAuthenticated }) {
  const username = h("input", {
    id: "auth-username",
    name: "username",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    required: true,
    minlength: "3",
    maxlength: "32",
  });
  const password = h("input", {
    id: "auth-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    minlength: "8",
  });
  const error = h("p", { class: "form-error", role: "alert" });
  const signIn = h("button", { type: "submit", class: "btn primary", value: "login" }, "Sign in");
  const create = h("button", { type: "submit", class: "btn secondary", value: "signup" }, "Create account");

  const form = h(
    "form",
    { class: "auth-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "auth-username" }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: "auth-password" }, "Password"), password),
    error,
    h("div", { class: "auth-actions" }, signIn, create),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const mode = event.submitter?.value === "signup" ? "signup" : "login";
    const name = username.value.trim().toLowerCase();
    error.textContent = "";
    if (name.length < 3) {
      error.textContent = "Enter a username (at least 3 characters).";
      username.focus();
      return;
    }
    if (password.value.length < 8) {
      error.textContent = "Passwords have at least 8 characters.";
      password.focus();
      return;
    }
    password.setAttribute("autocomplete", mode === "signup" ? "new-password" : "current-password");
    signIn.disabled = create.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const res = mode === "signup" ? await api.signup(name, password.value) : await api.login(name, password.value);
      onAuthenticated(res);
    } catch (err) {
      let text = ERRORS[err.code] || err.message || "Something went wrong.";
      if (err.code === "rate_limited") {
        text = err.retryAfter
          ? `Too many attempts. Try again in ${err.retryAfter} second${err.retryAfter === 1 ? "" : "s"}.`
          : "Too many attempts. Wait a minute and try again.";
      }
      error.textContent = text;
      signIn.disabled = create.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });

  const card = h(
    "section",
    { class: "auth-card", "aria-labelledby": "auth-title" },
    h("div", { class: "brand" }, h("span", { class: "brand-mark" }, icon("chat")), h("span", { class: "brand-name" }, "Chattr")),
    h("h1", { id: "auth-title" }, "Welcome back"),
    h("p", { class: "muted" }, "Sign in, or create an account with a new username."),
    message ? h("p", { class: "notice", role: "status" }, message) : null,
    form,
  );
  root.replaceChildren(h("main", { class: "auth" }, card));
  setUnread(0);
  setTitle("Sign in");
  username.focus();
}

/** Shown while a saved session cannot be restored because the server is unreachable. */
export function renderConnecting(root, text) {
  root.replaceChildren(
    h(
      "main",
      { class: "auth" },
      h(
        "section",
        { class: "auth-card center" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark" }, icon("chat")), h("span", { class: "brand-name" }, "Chattr")),
        h("p", { class: "muted", role: "status" }, text),
      ),
    ),
  );
}
