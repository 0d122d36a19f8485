// Client-side routes with the History API: "/", "/c/<conversation id>", "/sessions".
// The server answers any unknown non-API path with index.html, so deep links and reloads
// work. Only ids go into URLs, never tokens.

const listeners = new Set();

export function currentRoute() {
  const path = location.pathname;
  const conv = path.match(/^\/c\/([0-9a-fA-F-]{36})\/?$/);
  if (conv) return { name: "conversation", id: conv[1].toLowerCase() };
  if (path === "/sessions") return { name: "sessions" };
  return { name: "home" };
}

export function navigate(path, { replace = false } = {}) {
  if (path !== location.pathname) {
    if (replace) history.replaceState(null, "", path);
    else history.pushState(null, "", path);
  }
  for (const fn of listeners) fn(currentRoute());
}

export function onRoute(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

window.addEventListener("popstate", () => {
  for (const fn of listeners) fn(currentRoute());
});
