// REST client and token keeper.
//
// The access token lives only in memory (a script on another page cannot read it after a
// reload, and it is short-lived); the refresh token is in localStorage so a reload keeps
// the user signed in. Tokens only ever travel in headers or bodies, never in URLs.
//
// Refresh tokens are single-use and presenting a used one revokes the whole session, so
// refreshing is single-flight: one promise per tab, and a Web Lock across tabs of the same
// origin (each tab re-reads the newest refresh token from localStorage inside the lock).

const REFRESH_KEY = "chattr.refresh_token";
export const SIGNED_OUT_MESSAGE = "This session was signed out";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429
  }
}

class Api {
  accessToken = null;
  expiresAt = 0; // ms since epoch
  lifetime = 0; // ms an access token lives
  user = null;
  sessionId = null;
  /** Called with a reason when the session ends without the user asking (revoked, expired). */
  onSignedOut = null;
  #refreshing = null;
  #refreshTimer = 0;
  #refreshFailures = 0;

  hasStoredSession() {
    return Boolean(localStorage.getItem(REFRESH_KEY));
  }

  get signedIn() {
    return Boolean(this.accessToken);
  }

  signup(username, password) {
    return this.#authenticate("/v1/auth/signup", { username, password });
  }

  login(username, password) {
    return this.#authenticate("/v1/auth/login", { username, password });
  }

  async #authenticate(path, body) {
    const res = await rawFetch(path, { method: "POST", body });
    this.#accept(res);
    return res;
  }

  #accept(res) {
    this.accessToken = res.access_token;
    this.expiresAt = Date.now() + res.expires_in * 1000;
    this.lifetime = res.expires_in * 1000;
    this.user = res.user;
    this.sessionId = res.session_id;
    localStorage.setItem(REFRESH_KEY, res.refresh_token);
    this.#refreshFailures = 0;
    // Refresh a minute before expiry (or at 80% of short lifetimes) so the socket and REST
    // calls never have to wait for a 401 first.
    const lifetime = res.expires_in * 1000;
    const lead = Math.min(60_000, lifetime * 0.2);
    this.#schedule(Math.max(1000, lifetime - lead));
  }

  #schedule(ms) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => {
      this.refresh().catch(() => {
        // Network trouble (e.g. the server restarting): try again soon; a 401 has already
        // signed us out inside refresh().
        if (!this.signedIn && !this.hasStoredSession()) return;
        this.#refreshFailures += 1;
        this.#schedule(Math.min(30_000, 1000 * 2 ** this.#refreshFailures));
      });
    }, ms);
  }

  /** Gets a new token pair. Concurrent callers share one request. */
  refresh() {
    if (this.#refreshing) return this.#refreshing;
    const run = async () => {
      const token = localStorage.getItem(REFRESH_KEY);
      if (!token) {
        this.#signedOut();
        throw new ApiError(401, "signed_out", SIGNED_OUT_MESSAGE);
      }
      const before = this.user?.id;
      try {
        this.#accept(await rawFetch("/v1/auth/refresh", { method: "POST", body: { refresh_token: token } }));
        // Another tab signed in as someone else (the stored token is shared): start over
        // rather than mix two accounts' state.
        if (before && this.user.id !== before) location.reload();
      } catch (err) {
        if (err.status === 401) {
          this.#signedOut();
          throw new ApiError(401, "signed_out", SIGNED_OUT_MESSAGE);
        }
        throw err;
      }
    };
    const locked = navigator.locks ? () => navigator.locks.request("chattr-refresh", run) : run;
    this.#refreshing = locked().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  /** A valid access token, refreshing first if it is about to expire. */
  async token() {
    const margin = Math.min(10_000, (this.lifetime || 0) * 0.2);
    if (!this.accessToken || Date.now() > this.expiresAt - margin) await this.refresh();
    return this.accessToken;
  }

  /** An authenticated JSON request; on 401 it refreshes once and retries. */
  async request(method, path, body) {
    let token = await this.token();
    try {
      return await rawFetch(path, { method, body, token });
    } catch (err) {
      if (err.status !== 401 || err.code === "signed_out") throw err;
      // Another call may have refreshed meanwhile; only refresh if our token is still current.
      if (token === this.accessToken) await this.refresh();
      token = this.accessToken;
      return rawFetch(path, { method, body, token });
    }
  }

  get(path) {
    return this.request("GET", path);
  }
  post(path, body = {}) {
    return this.request("POST", path, body);
  }
  patch(path, body) {
    return this.request("PATCH", path, body);
  }
  del(path) {
    return this.request("DELETE", path);
  }

  /** The user asked to sign out: revoke the session on the server, then forget it. */
  async logout() {
    try {
      if (this.accessToken) await rawFetch("/v1/auth/logout", { method: "POST", token: this.accessToken });
    } catch {
      // Signing out locally matters more than telling the server.
    }
    this.clear();
  }

  /** Forgets every token (memory and storage). */
  clear() {
    clearTimeout(this.#refreshTimer);
    this.accessToken = null;
    this.expiresAt = 0;
    this.user = null;
    this.sessionId = null;
    localStorage.removeItem(REFRESH_KEY);
  }

  /** The server no longer accepts this session (revoked, reused refresh token, expired). */
  #signedOut() {
    const wasKnown = this.signedIn || this.hasStoredSession();
    this.clear();
    if (wasKnown && this.onSignedOut) this.onSignedOut(SIGNED_OUT_MESSAGE);
  }

  /** For the socket: the server revoked this session. */
  sessionRevoked() {
    this.#signedOut();
  }
}

/** fetch with JSON in and out; errors become ApiError (status 0 for network failures). */
async function rawFetch(path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server");
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    // Non-JSON answer (e.g. a proxy error page).
  }
  if (!res.ok) {
    const retryAfter = Number(res.headers.get("retry-after")) || 0;
    throw new ApiError(res.status, data?.code || "http_" + res.status, data?.message || res.statusText, retryAfter);
  }
  return data;
}

export const api = new Api();
