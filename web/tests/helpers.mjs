// Shared helpers of the browser tests: a real chattr server per test file (fresh data dir,
// port 0), Debian's Chromium through playwright-core, and small UI/REST helpers.
// Every wait has a timeout; servers and browsers are killed in `after` hooks.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const CHATTR_BIN = process.env.CHATTR_BIN || "/root/.cache/chattr-target/debug/chattr";
export const SCREENSHOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs/screenshots");
export const PASSWORD = "correct horse battery";
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 740 };

const READY_LINE = /Chattr is running on (http:\/\/127\.0\.0\.1:(\d+))/;

/**
 * Starts `chattr serve` on 127.0.0.1 (port 0 unless given) with a fresh or given data dir.
 * Resolves once it prints its address.
 */
export async function startServer({ port = 0, dataDir, env = {} } = {}) {
  if (!existsSync(CHATTR_BIN)) {
    throw new Error(`no chattr binary at ${CHATTR_BIN}: run \`cargo build\` or set CHATTR_BIN`);
  }
  const ownDir = !dataDir;
  dataDir ??= mkdtempSync(path.join(tmpdir(), "chattr-web-test-"));
  mkdirSync(dataDir, { recursive: true });
  const proc = spawn(CHATTR_BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
    env: {
      ...process.env,
      CHATTR__AUTH__ARGON2_MEMORY_KIB: "1024",
      CHATTR__AUTH__ARGON2_ITERATIONS: "1",
      RUST_LOG: process.env.RUST_LOG || "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  proc.stderr.on("data", keep);
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`chattr did not start within 20 s:\n${output}`));
    }, 20_000);
    proc.stdout.on("data", (chunk) => {
      keep(chunk);
      const m = output.match(READY_LINE);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`chattr exited with ${code} before it was ready:\n${output}`));
    });
    proc.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  const server = {
    url,
    port: Number(new URL(url).port),
    dataDir,
    proc,
    logs: () => output,
    /** SIGTERM (graceful: sockets get 1001), SIGKILL after 10 s. */
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    /** Stops and removes the data dir (if it was created here). */
    async dispose() {
      await server.stop();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * Flags for calls: a fake camera and microphone, granted without a prompt, and WebRTC
 * allowed to connect over loopback with plain IP host candidates (no mDNS names).
 */
export const MEDIA_ARGS = [
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required",
];

/** Debian's Chromium, headless. `media: true` adds MEDIA_ARGS (for call tests). */
export function launchBrowser({ media = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: [
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      ...(media ? MEDIA_ARGS : []),
    ],
    timeout: 30_000,
  });
}

/**
 * A new isolated browser context (one user, one device) with a page. Collects uncaught
 * page errors, CSP violations and dialogs so tests can assert there were none.
 */
export async function openPage(browser, baseURL, { viewport = DESKTOP, name = "page" } = {}) {
  const context = await browser.newContext({ baseURL, viewport, locale: "en-GB", timezoneId: "UTC" });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const problems = [];
  const dialogs = [];
  page.on("pageerror", (err) => problems.push(`${name}: uncaught ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy|Refused to/i.test(msg.text())) {
      problems.push(`${name}: ${msg.text()}`);
    }
  });
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  return { context, page, problems, dialogs, name };
}

/** Retries `fn` until it stops throwing, or throws its last error after `timeout` ms. */
export async function eventually(fn, { timeout = 10_000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, interval));
    }
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ UI steps

export async function signUp(page, username, password = PASSWORD) {
  await page.goto("/");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("list", { name: "Conversations" }).waitFor({ state: "attached" });
  await waitOnline(page);
}

export async function signIn(page, username, password = PASSWORD) {
  await page.goto("/");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("list", { name: "Conversations" }).waitFor({ state: "attached" });
  await waitOnline(page);
}

/** Waits until the socket is authenticated and replay is done (sidebar says Online). */
export async function waitOnline(page, timeout = 15_000) {
  await page.locator('.conn-text[data-status="online"]').waitFor({ timeout });
}

/** Opens (or creates) the direct conversation with `username` through the user search. */
export async function startDirect(page, username) {
  await page.getByLabel("Search users").fill(username);
  await page.getByRole("list", { name: "Search results" }).getByRole("button", { name: username, exact: true }).click();
  await page.getByRole("heading", { name: username, exact: true }).waitFor();
}

/** Opens a conversation from the list by its title. */
export async function openConversation(page, title) {
  await conversationItem(page, title).click();
  await page.getByRole("heading", { name: title, exact: true }).waitFor();
}

export function conversationItem(page, title) {
  return page
    .getByRole("list", { name: "Conversations" })
    .locator("li")
    .filter({ has: page.locator(".conv-title", { hasText: new RegExp(`^${escapeRe(title)}$`) }) });
}

export async function send(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

export function log(page) {
  return page.getByRole("log", { name: "Messages" });
}

/** The message element showing exactly `text` (body), in the open conversation. */
export function message(page, text) {
  return log(page)
    .locator(".msg")
    .filter({ has: page.locator(".body", { hasText: new RegExp(`^${escapeRe(text)}$`) }) });
}

/** [{seq, body, state}] of every message element on screen, in DOM order. */
export function messagesOnScreen(page) {
  return page.$$eval('[role="log"] .msg', (els) =>
    els.map((el) => ({
      seq: el.dataset.seq ? Number(el.dataset.seq) : null,
      body: el.querySelector(".body")?.textContent ?? "",
      state: ["pending", "sent", "read", "failed", "received"].find((c) => el.classList.contains(c)),
    })),
  );
}

/**
 * Visible interactive elements without an accessible name (aria-label, aria-labelledby,
 * a <label>, text content or title). Should always be empty.
 */
export function unlabelledControls(page) {
  return page.$$eval("button, input, textarea, select, a[href], [tabindex]:not([tabindex='-1'])", (els) =>
    els
      .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden")
      .filter((el) => {
        const byLabelledBy = (el.getAttribute("aria-labelledby") || "")
          .split(/\s+/)
          .map((id) => document.getElementById(id)?.textContent || "")
          .join("");
        const byLabel = [...(el.labels || [])].map((l) => l.textContent).join("");
        const name = (el.getAttribute("aria-label") || byLabelledBy || byLabel || el.textContent || el.title || "").trim();
        return !name;
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  // Let transitions and fonts settle so screenshots are stable.
  await page.evaluate(() => document.fonts.ready);
  await sleep(150);
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
}

export function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// ------------------------------------------------------------------ REST from the test

/** A minimal REST client for seeding data or acting as "the other side". */
export class RestUser {
  constructor(base) {
    this.base = base;
  }

  static async signup(base, username, password = PASSWORD) {
    const u = new RestUser(base);
    const res = await u.call("POST", "/v1/auth/signup", { username, password });
    u.accept(res);
    return u;
  }

  static async login(base, username, password = PASSWORD) {
    const u = new RestUser(base);
    u.accept(await u.call("POST", "/v1/auth/login", { username, password }));
    return u;
  }

  accept(res) {
    this.token = res.access_token;
    this.user = res.user;
    this.id = res.user.id;
    this.sessionId = res.session_id;
  }

  async call(method, path, body) {
    const res = await fetch(this.base + path, {
      method,
      headers: {
        ...(body ? { "content-type": "application/json" } : {}),
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  direct(other) {
    return this.call("POST", "/v1/conversations", { kind: "direct", members: [other.id] });
  }

  group(title, others) {
    return this.call("POST", "/v1/conversations", { kind: "group", title, members: others.map((o) => o.id) });
  }

  send(conversationId, body) {
    return this.call("POST", `/v1/conversations/${conversationId}/messages`, {
      client_msg_id: `test-${Date.now()}-${Math.random().toString(36).slice(2)}`,
      body,
    });
  }
}

/** Closes contexts, the browser and the server, ignoring errors (for `after` hooks). */
export async function cleanup({ browser, server, servers = [] }) {
  try {
    await browser?.close();
  } catch {
    // already gone
  }
  for (const s of [server, ...servers]) {
    try {
      await s?.dispose();
    } catch {
      // already gone
    }
  }
}
