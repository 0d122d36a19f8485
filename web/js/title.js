// The tab title: the current screen plus the number of unread messages, e.g. "(3) bob · Chattr".

let base = "Chattr";
let unread = 0;

function apply() {
  document.title = unread ? `(${unread > 99 ? "99+" : unread}) ${base}` : base;
}

export function setTitle(text) {
  base = text ? `${text} · Chattr` : "Chattr";
  apply();
}

export function setUnread(n) {
  unread = n;
  apply();
}
