// The realtime connection: one WebSocket at a time, re-opened by itself with exponential
// backoff. Every (re)connect authenticates with a fresh access token and the cursors (last
// seq held per conversation), so the server replays exactly what was missed.
//
// Close codes decide what happens next (docs/protocol.md): 4003 = session revoked, sign
// out; 4001 = the token was refused, refresh it first; anything else = reconnect.

import { api } from "./api.js";

const BACKOFF_BASE_MS = 400;
const BACKOFF_MAX_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;

export class Realtime {
  /**
   * @param {object} hooks
   * @param {() => object} hooks.cursors   conversation id → last seq held
   * @param {(frame: object) => void} hooks.onFrame   every server event (not answers)
   * @param {(status: string) => void} hooks.onStatus "connecting" | "online" | "reconnecting"
   */
  constructor({ cursors, onFrame, onStatus }) {
    this.hooks = { cursors, onFrame, onStatus };
    this.ws = null;
    this.stopped = true;
    this.attempts = 0;
    this.retryTimer = 0;
    this.watchdog = 0;
    this.lastHeard = 0;
    this.heartbeatMs = 25_000;
    this.nextReqId = 1;
    this.pending = new Map(); // req_id → {resolve, reject, timer}
    this.synced = false;
    this.everOnline = false;
    this.connecting = false;
    this.onOnline = () => this.reconnectNow();
  }

  get online() {
    return this.synced && this.ws?.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.#connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    this.#failPending();
  }

  /** Skips the backoff wait (the browser says the network is back). */
  reconnectNow() {
    if (this.stopped || this.ws || this.connecting) return;
    clearTimeout(this.retryTimer);
    this.#connect();
  }

  /** Sends a frame without waiting for an answer; false when not connected. */
  send(frame) {
    if (!this.online) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a frame with a req_id and resolves with its answer (`ack`, `ok` or `call`), or
   * rejects with the `error` frame ({code, message}). Rejects with code "disconnected" if
   * the socket drops first: the caller decides whether to retry (sends do, with the same
   * client_msg_id).
   */
  request(frame) {
    if (!this.online) return Promise.reject({ code: "disconnected", message: "Not connected" });
    const req_id = String(this.nextReqId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req_id);
        reject({ code: "timeout", message: "No answer from the server" });
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(req_id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, req_id }));
    });
  }

  async #connect() {
    if (this.stopped || this.connecting) return;
    this.synced = false;
    this.hooks.onStatus(this.everOnline || this.attempts > 0 ? "reconnecting" : "connecting");
    let token;
    // Only one connection attempt at a time (the "online" event may fire mid-attempt).
    this.connecting = true;
    try {
      token = await api.token();
    } catch (err) {
      if (err.code === "signed_out" || this.stopped) return; // api already signed us out
      this.#scheduleRetry();
      return;
    } finally {
      this.connecting = false;
    }
    if (this.stopped || this.ws) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      ws.send(JSON.stringify({ type: "auth", token, cursors: this.hooks.cursors() }));
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#frame(frame);
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this.#closed(event.code);
    };
  }

  #frame(frame) {
    switch (frame.type) {
      case "ready":
        this.heartbeatMs = (frame.heartbeat_interval_secs || 25) * 1000;
        this.#startWatchdog();
        break;
      case "synced":
        // Replay is complete: from here on the connection counts as healthy.
        this.synced = true;
        this.attempts = 0;
        this.everOnline = true;
        this.hooks.onFrame(frame);
        this.hooks.onStatus("online");
        return;
      case "call":
        // The answer to call_start/call_answer carries the call; the same call also comes
        // as an event (without req_id) to every member's devices.
        if (frame.req_id && this.pending.has(frame.req_id)) {
          const waiter = this.pending.get(frame.req_id);
          this.pending.delete(frame.req_id);
          clearTimeout(waiter.timer);
          waiter.resolve(frame);
          return;
        }
        break;
      case "ack":
      case "ok":
      case "pong":
      case "error": {
        const waiter = frame.req_id && this.pending.get(frame.req_id);
        if (waiter) {
          this.pending.delete(frame.req_id);
          clearTimeout(waiter.timer);
          if (frame.type === "error") waiter.reject(frame);
          else waiter.resolve(frame);
          return;
        }
        if (frame.type !== "error") return;
        break;
      }
      default:
        break;
    }
    this.hooks.onFrame(frame);
  }

  #closed(code) {
    const ws = this.ws;
    this.ws = null;
    if (ws) detach(ws);
    this.synced = false;
    clearInterval(this.watchdog);
    this.#failPending();
    if (this.stopped) return;
    if (code === 4003) {
      // Revoked: never reconnect. api tells the app to show the login screen.
      this.stop();
      api.sessionRevoked();
      return;
    }
    this.hooks.onStatus("reconnecting");
    if (code === 4001) {
      // The server refused the token (expired or the session ended): refresh, then retry.
      api.refresh().then(
        () => this.#scheduleRetry(),
        (err) => {
          if (err.code !== "signed_out") this.#scheduleRetry();
        },
      );
      return;
    }
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempts);
    // Jitter spreads the reconnects of many clients after a server restart.
    const delay = exp / 2 + Math.random() * (exp / 2);
    this.attempts += 1;
    this.retryTimer = setTimeout(() => this.#connect(), delay);
  }

  /** A socket can die silently (no close frame); heartbeats prove it is alive. */
  #startWatchdog() {
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastHeard > this.heartbeatMs * 2 + 5000 && this.ws) {
        const ws = this.ws;
        try {
          ws.close(4000);
        } catch {
          // ignore
        }
        this.#closed(1006);
      }
    }, 5000);
  }

  #failPending() {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject({ code: "disconnected", message: "Connection lost" });
    }
    this.pending.clear();
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}
