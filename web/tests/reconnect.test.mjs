// The server restarts mid-conversation. While it is down the page shows "Reconnecting…"
// and keeps a message typed meanwhile pending; the other side writes right after the
// restart. The page recovers by itself (no reload) and shows every message exactly once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  RestUser,
  cleanup,
  eventually,
  launchBrowser,
  log,
  message,
  messagesOnScreen,
  openConversation,
  openPage,
  send,
  signUp,
  startDirect,
  startServer,
  waitOnline,
} from "./helpers.mjs";

let server;
let firstServer; // owns the data dir, which the restarted server reuses
let browser;
let alice;
let bob;

before(async () => {
  server = firstServer = await startServer();
  browser = await launchBrowser();
  alice = await openPage(browser, server.url, { name: "alice" });
  bob = await openPage(browser, server.url, { name: "bob" });
});

after(async () => {
  // The restarted server first, then the first one (which removes the shared data dir).
  await cleanup({ browser, server, servers: [firstServer] });
});

test("restart the server mid-conversation: each message once after reconnecting", async () => {
  await signUp(alice.page, "alice");
  await signUp(bob.page, "bob");
  await startDirect(alice.page, "bob");
  await send(alice.page, "before restart 1");
  await openConversation(bob.page, "alice");
  await send(bob.page, "before restart 2");
  await message(alice.page, "before restart 2").waitFor();
  const convId = new URL(alice.page.url()).pathname.split("/").pop();

  // Marks this document: if the page reloaded, the marker would be gone.
  await alice.page.evaluate(() => {
    window.__sameDocument = true;
  });

  const { port, dataDir } = server;
  await server.stop();
  const banner = alice.page.getByRole("status").filter({ hasText: "Reconnecting" });
  await banner.waitFor({ timeout: 5000 });
  await bob.page.getByRole("status").filter({ hasText: "Reconnecting" }).waitFor({ timeout: 5000 });

  // Typed while the server is down: stays pending, goes out after the reconnect.
  await send(alice.page, "typed while offline");
  await log(alice.page).locator(".msg.pending").waitFor();

  server = await startServer({ port, dataDir });
  // The other side writes at once, most likely before alice's page is back (replay path).
  const bobRest = await RestUser.login(server.url, "bob");
  for (let i = 1; i <= 3; i++) await bobRest.send(convId, `missed ${i}`);

  await banner.waitFor({ state: "hidden", timeout: 15_000 });
  await waitOnline(alice.page);
  await waitOnline(bob.page);
  // And live again from bob's page.
  await send(bob.page, "after restart");
  await message(alice.page, "after restart").waitFor();

  const expected = ["before restart 1", "before restart 2", "typed while offline", "missed 1", "missed 2", "missed 3", "after restart"];
  for (const p of [alice.page, bob.page]) {
    await eventually(async () => {
      const shown = await messagesOnScreen(p);
      assert.deepEqual(
        shown.map((m) => m.seq),
        shown.map((_, i) => i + 1),
        "seqs 1..n, each once",
      );
      assert.deepEqual(shown.map((m) => m.body).sort(), [...expected].sort());
      assert.ok(shown.every((m) => m.state !== "pending" && m.state !== "failed"));
    });
  }
  // The offline message was sent once, after the ones that were already there.
  const shown = await messagesOnScreen(alice.page);
  assert.equal(shown.filter((m) => m.body === "typed while offline").length, 1);
  assert.equal(await alice.page.evaluate(() => window.__sameDocument), true, "no page reload");
});

test("no uncaught errors, CSP violations or dialogs", () => {
  assert.deepEqual([...alice.problems, ...bob.problems], []);
  assert.deepEqual([...alice.dialogs, ...bob.dialogs], []);
});
