// Safety: message text renders as text (no HTML, no script), the app is served with a
// Content-Security-Policy, tokens stay out of URLs, short-lived access tokens are refreshed
// by themselves, and a session revoked from another device is logged out in its open tab.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  cleanup,
  conversationItem,
  eventually,
  launchBrowser,
  message,
  openConversation,
  openPage,
  send,
  signIn,
  signUp,
  sleep,
  startDirect,
  startServer,
  waitOnline,
} from "./helpers.mjs";

let server;
let browser;
let alice;
let bob;
let alice2;
const urls = [];

before(async () => {
  // Access tokens live 4 s here, so the app must keep refreshing them while the tests run.
  server = await startServer({ env: { CHATTR__AUTH__ACCESS_TTL_SECS: "4" } });
  browser = await launchBrowser();
  alice = await openPage(browser, server.url, { name: "alice" });
  bob = await openPage(browser, server.url, { name: "bob" });
  for (const p of [alice, bob]) p.page.on("request", (req) => urls.push(req.url()));
});

after(async () => {
  await cleanup({ browser, server });
});

test("the app is served with a Content-Security-Policy", async () => {
  for (const path of ["/", "/c/0193a1c2-0000-7000-8000-000000000000", "/js/main.js", "/styles.css"]) {
    const res = await fetch(server.url + path);
    assert.equal(res.status, 200, path);
    const csp = res.headers.get("content-security-policy") || "";
    assert.match(csp, /script-src 'self'/, path);
    assert.match(csp, /object-src 'none'/, path);
  }
});

test("an XSS body renders literally and runs nothing", async () => {
  await signUp(alice.page, "alice");
  await signUp(bob.page, "bob");
  await startDirect(alice.page, "bob");
  const payloads = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(document.cookie)</script>",
    '"><svg onload=alert(3)>',
  ];
  for (const body of payloads) await send(alice.page, body);
  await openConversation(bob.page, "alice");
  for (const body of payloads) {
    for (const p of [alice.page, bob.page]) {
      const el = message(p, body);
      await el.waitFor();
      assert.equal(await el.locator(".body").textContent(), body);
      assert.equal(await el.locator("img, script, svg[onload]").count(), 0);
    }
  }
  // The list preview is text too.
  await conversationItem(bob.page, "alice").locator(".conv-preview", { hasText: '"><svg onload=alert(3)>' }).waitFor();
  await sleep(300);
  assert.deepEqual([...alice.dialogs, ...bob.dialogs], [], "no alert() ran");
  assert.equal(await bob.page.locator('[role="log"] img').count(), 0);
});

test("short-lived access tokens are refreshed by themselves", async () => {
  // More than a token lifetime passes; REST and the socket keep working without a 401 loop.
  await sleep(6000);
  const refreshes = urls.filter((u) => u.endsWith("/v1/auth/refresh")).length;
  assert.ok(refreshes >= 2, `the pages refreshed their tokens (${refreshes} refreshes)`);
  await send(bob.page, "still here after refreshes");
  await message(alice.page, "still here after refreshes").waitFor();
  await alice.page.getByRole("button", { name: "Sessions" }).click();
  await alice.page.getByRole("list", { name: "Signed-in devices" }).getByText("This device").waitFor();
  await openConversation(alice.page, "bob");
  // A reload restores the session from the stored refresh token.
  await bob.page.reload();
  await waitOnline(bob.page);
  await message(bob.page, "still here after refreshes").waitFor();
});

test("tokens never appear in URLs", () => {
  const leaked = urls.filter((u) => /token|eyJ/i.test(u));
  assert.deepEqual(leaked, []);
});

test("a session revoked from another device is signed out in its open tab", async () => {
  // Alice signs in on a second device and revokes the first one from its sessions page.
  alice2 = await openPage(browser, server.url, { name: "alice2" });
  await signIn(alice2.page, "alice");
  await alice2.page.getByRole("button", { name: "Sessions" }).click();
  const list = alice2.page.getByRole("list", { name: "Signed-in devices" });
  await list.locator("li").nth(1).waitFor();
  assert.equal(await list.locator("li").count(), 2);
  await list.getByRole("button", { name: /^Revoke/ }).click();

  // The first tab is logged out at once, with a message, and stays logged out on reload.
  await alice.page.getByText("This session was signed out").waitFor({ timeout: 5000 });
  await alice.page.getByRole("button", { name: "Sign in" }).waitFor();
  await alice.page.reload();
  await alice.page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.equal(await alice.page.evaluate(() => localStorage.length), 0);
  // The revoking device is unaffected.
  await alice2.page.getByRole("list", { name: "Signed-in devices" }).locator("li").first().waitFor();
  await eventually(async () => assert.equal(await alice2.page.getByRole("list", { name: "Signed-in devices" }).locator("li").count(), 1));
  await waitOnline(alice2.page);
});

test("no uncaught errors, CSP violations or unexpected dialogs", () => {
  assert.deepEqual([...alice.problems, ...bob.problems, ...(alice2?.problems || [])], []);
  assert.deepEqual([...alice.dialogs, ...bob.dialogs, ...(alice2?.dialogs || [])], []);
});
