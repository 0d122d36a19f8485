// Modal dialogs built on <dialog> (focus trapping, Escape to close and the backdrop come
// from the browser): confirm, new group, group settings.

import { avatar, debounce, h, icon } from "../dom.js";
import * as chat from "../chat.js";
import { navigate } from "../router.js";
import { on, store } from "../store.js";

let nextId = 1;

/** Opens a dialog element; resolves with its returnValue once it closes, then removes it. */
function openDialog(dialog) {
  document.body.append(dialog);
  // Escape always closes (a search input would otherwise swallow it to clear itself).
  dialog.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      dialog.close("");
    }
  });
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        dialog.remove();
        resolve(dialog.returnValue);
      },
      { once: true },
    );
  });
}

function dialogHead(titleId, title, dialog) {
  const close = h("button", { type: "button", class: "icon-btn", "aria-label": "Close", title: "Close" }, icon("close"));
  close.addEventListener("click", () => dialog.close(""));
  return h("header", { class: "dialog-head" }, h("h2", { id: titleId }, title), close);
}

/** Yes/no question. Resolves true when confirmed. */
export async function confirmDialog({ title, text, confirm = "OK", danger = false }) {
  const id = `dlg-${nextId++}`;
  const dialog = h("dialog", { class: "dialog small", "aria-labelledby": id });
  const yes = h("button", { type: "button", class: `btn ${danger ? "danger" : "primary"}` }, confirm);
  const no = h("button", { type: "button", class: "btn secondary" }, "Cancel");
  yes.addEventListener("click", () => dialog.close("yes"));
  no.addEventListener("click", () => dialog.close("no"));
  dialog.append(
    h("h2", { id, class: "dialog-title" }, title),
    text ? h("p", { class: "muted" }, text) : null,
    h("div", { class: "dialog-actions" }, no, yes),
  );
  const result = openDialog(dialog);
  no.focus();
  return (await result) === "yes";
}

/**
 * A username search whose results are buttons. `exclude()` returns ids not to offer;
 * `onPick(user)` is called on click.
 */
function userPicker({ label, id, exclude, onPick, actionLabel }) {
  const input = h("input", { id, type: "search", autocomplete: "off", spellcheck: "false", autocapitalize: "none", placeholder: "Type a username" });
  const results = h("ul", { class: "picker-results", "aria-label": "People to add" });
  const search = debounce(async () => {
    const prefix = input.value.trim().toLowerCase();
    if (!prefix) {
      results.replaceChildren();
      return;
    }
    let users = [];
    try {
      users = await chat.searchUsers(prefix);
    } catch {
      return;
    }
    if (input.value.trim().toLowerCase() !== prefix) return;
    const skip = exclude();
    const shown = users.filter((u) => !skip.has(u.id));
    results.replaceChildren(
      ...(shown.length
        ? shown.map((u) => {
            const b = h(
              "button",
              { type: "button", class: "search-result", "aria-label": actionLabel ? `${actionLabel} ${u.username}` : u.username },
              avatar(u.username, { size: "sm" }),
              h("span", {}, u.username),
            );
            b.addEventListener("click", () => {
              onPick(u);
              input.value = "";
              results.replaceChildren();
              input.focus();
            });
            return h("li", {}, b);
          })
        : [h("li", { class: "search-empty muted" }, `No one found for “${prefix}”`)]),
    );
  }, 200);
  input.addEventListener("input", search);
  input.addEventListener("keydown", (e) => {
    // Enter in the search box must not submit the surrounding form.
    if (e.key === "Enter") {
      e.preventDefault();
      results.querySelector("button")?.click();
    }
  });
  return h("div", { class: "field" }, h("label", { for: id }, label), h("div", { class: "search-box" }, icon("search"), input), results);
}

/** Create a group: title plus members picked by username. */
export function newGroupDialog({ onCreated }) {
  const titleId = `dlg-${nextId++}`;
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": titleId });
  const selected = new Map(); // id → user
  const title = h("input", { id: `${titleId}-title`, maxlength: "100", autocomplete: "off", placeholder: "e.g. Weekend trip" });
  const chips = h("ul", { class: "chips", "aria-label": "Selected people" });
  const error = h("p", { class: "form-error", role: "alert" });
  const create = h("button", { type: "submit", class: "btn primary" }, "Create group");
  const cancel = h("button", { type: "button", class: "btn secondary" }, "Cancel");
  cancel.addEventListener("click", () => dialog.close(""));

  const renderChips = () => {
    chips.replaceChildren(
      ...[...selected.values()].map((u) => {
        const remove = h("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${u.username}` }, icon("close"));
        remove.addEventListener("click", () => {
          selected.delete(u.id);
          renderChips();
        });
        return h("li", { class: "chip" }, avatar(u.username, { size: "xs" }), h("span", {}, u.username), remove);
      }),
    );
    chips.hidden = selected.size === 0;
  };

  const picker = userPicker({
    label: "Add people",
    id: `${titleId}-people`,
    actionLabel: "Add",
    exclude: () => new Set([store.me.id, ...selected.keys()]),
    onPick: (u) => {
      selected.set(u.id, u);
      renderChips();
    },
  });

  const form = h(
    "form",
    { class: "dialog-body" },
    h("div", { class: "field" }, h("label", { for: `${titleId}-title` }, "Group title"), title),
    picker,
    chips,
    error,
    h("div", { class: "dialog-actions" }, cancel, create),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = title.value.trim();
    if (!name) {
      error.textContent = "Give the group a title.";
      title.focus();
      return;
    }
    create.disabled = true;
    try {
      const conv = await chat.createGroup(name, [...selected.keys()]);
      dialog.close("created");
      onCreated?.(conv);
    } catch (err) {
      error.textContent = chat.describeError(err);
      create.disabled = false;
    }
  });
  dialog.append(dialogHead(titleId, "New group", dialog), form);
  renderChips();
  openDialog(dialog);
  title.focus();
}

/** Rename, members (add/remove) and leave, for a group conversation. */
export function groupSettingsDialog(convId, { shell }) {
  const titleId = `dlg-${nextId++}`;
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": titleId });
  const body = h("div", { class: "dialog-body" });
  const error = h("p", { class: "form-error", role: "alert" });
  dialog.append(dialogHead(titleId, "Group settings", dialog), body);

  const fail = (err) => {
    error.textContent = chat.describeError(err);
  };

  const render = () => {
    const conv = store.conversations.get(convId);
    if (!conv) {
      dialog.close("");
      return;
    }
    const owner = conv.owner_id === store.me.id;
    const focusedLabel = document.activeElement?.getAttribute?.("aria-label");
    const focusedId = body.contains(document.activeElement) ? document.activeElement.id : "";

    const titleInput = h("input", { id: `${titleId}-title`, maxlength: "100", autocomplete: "off", disabled: !owner });
    titleInput.value = conv.title || "";
    const rename = h("button", { type: "submit", class: "btn secondary", hidden: !owner }, "Rename");
    const renameForm = h(
      "form",
      { class: "field" },
      h("label", { for: `${titleId}-title` }, "Group title"),
      h("div", { class: "row" }, titleInput, rename),
      owner ? null : h("p", { class: "hint muted" }, "Only the owner can rename the group."),
    );
    renameForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const t = titleInput.value.trim();
      if (!t || t === conv.title) return;
      rename.disabled = true;
      try {
        await chat.renameGroup(convId, t);
        error.textContent = "";
        shell.toast("Group renamed");
      } catch (err) {
        fail(err);
      }
      rename.disabled = false;
    });

    const members = h(
      "ul",
      { class: "member-list", "aria-label": "Members" },
      ...conv.members.map((m) => {
        const isOwner = m.id === conv.owner_id;
        const isMe = m.id === store.me.id;
        let remove = null;
        if (owner && !isMe) {
          remove = h("button", { type: "button", class: "btn ghost sm", "aria-label": `Remove ${m.username}` }, "Remove");
          remove.addEventListener("click", async () => {
            remove.disabled = true;
            try {
              await chat.removeMember(convId, m.id);
              error.textContent = "";
            } catch (err) {
              fail(err);
              remove.disabled = false;
            }
          });
        }
        return h(
          "li",
          { class: "member" },
          avatar(m.username, { size: "sm" }),
          h("span", { class: "member-name" }, m.username, isMe ? h("span", { class: "muted" }, " (you)") : null),
          isOwner ? h("span", { class: "tag" }, "owner") : null,
          remove,
        );
      }),
    );

    const parts = [renameForm, h("h3", { class: "section-title" }, `Members (${conv.members.length})`), members];
    if (owner) {
      parts.push(
        userPicker({
          label: "Add people",
          id: `${titleId}-add`,
          actionLabel: "Add",
          exclude: () => new Set(store.conversations.get(convId)?.members.map((m) => m.id) || []),
          onPick: async (u) => {
            try {
              await chat.addMember(convId, u.id);
              error.textContent = "";
            } catch (err) {
              fail(err);
            }
          },
        }),
      );
    }
    parts.push(error);
    if (owner) {
      parts.push(h("p", { class: "hint muted" }, "You own this group, so you can't leave it."));
    } else {
      const leave = h("button", { type: "button", class: "btn danger" }, "Leave group");
      leave.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: "Leave this group?",
          text: "You will stop receiving its messages.",
          confirm: "Leave",
          danger: true,
        });
        if (!ok) return;
        try {
          await chat.removeMember(convId, store.me.id);
          dialog.close("left");
          navigate("/");
        } catch (err) {
          fail(err);
        }
      });
      parts.push(h("div", { class: "dialog-actions" }, leave));
    }
    // Keep the picker's typed text when re-rendering after a member change.
    const oldAdd = body.querySelector(`#${titleId}-add`);
    body.replaceChildren(...parts);
    if (oldAdd?.value) {
      const fresh = body.querySelector(`#${titleId}-add`);
      if (fresh) fresh.value = oldAdd.value;
    }
    if (focusedId) document.getElementById(focusedId)?.focus();
    else if (focusedLabel) body.querySelector(`[aria-label="${CSS.escape(focusedLabel)}"]`)?.focus();
  };

  const off = on("conversation", (id) => id === convId && render());
  const offRemoved = on("removed", (id) => id === convId && dialog.open && dialog.close(""));
  render();
  openDialog(dialog).then(() => {
    off();
    offRemoved();
  });
}
