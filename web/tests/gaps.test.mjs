// Lost events and cut sockets, provoked between the page and the server with Playwright's
// WebSocket routing: a dropped live message is fetched when the next one shows a gap or
// when a heartbeat says there is more; a send whose ack and echo are both lost is not
// doubled; a socket cut mid-conversation resumes from the cursors. Exactly once, always.

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
let browser;
let alice;
let bob;
let bobRest;
let convId;

// What alice's socket route does with server frames: a predicate that returns true drops it.
let dropFromServer = () => false;
let currentRoute = null;
const dropped = []; // "type:body" of every frame the route swallowed

before(async () => {
  // Heartbeats every second so a lost event is noticed quickly.
  server = await startServer({ env: { CHATTR__GATEWAY__HEARTBEAT_SECS: "1" } });
  browser = await launchBrowser();
  alice = await openPage(browser, server.url, { name: "alice" });
  bob = await openPage(browser, server.url, { name: "bob" });
  await alice.context.routeWebSocket(/\/v1\/ws$/, (ws) => {
    currentRoute = ws;
    const upstream = ws.connectToServer();
    upstream.onMessage((frame) => {
      let parsed = null;
      try {
        parsed = JSON.parse(String(frame));
      } catch {
        // forward as is
      }
      if (parsed && dropFromServer(parsed)) {
        dropped.push(`${parsed.type}:${parsed.message?.body ?? ""}`);
        return;
      }
      ws.send(frame);
    });
  });
});

after(async () => {
  await cleanup({ browser, server });
});

/** Drops the next frame matching `pred`, once. */
function dropOnce(pred) {
  let dropped = false;
  dropFromServer = (f) => {
    if (!dropped && pred(f)) {
      dropped = true;
      return true;
    }
    return false;
  };
}

async function assertExactlyOnce(page, bodies) {
  await eventually(async () => {
    const shown = await messagesOnScreen(page);
    assert.deepEqual(
      shown.map((m) => m.seq),
      shown.map((_, i) => i + 1),
      "seqs 1..n in order, each once",
    );
    assert.deepEqual(shown.map((m) => m.body), bodies);
  });
}

test("a lost live message is fetched when the next one arrives", async () => {
  await signUp(alice.page, "alice");
  await signUp(bob.page, "bob");
  await startDirect(alice.page, "bob");
  await send(alice.page, "hello");
  convId = new URL(alice.page.url()).pathname.split("/").pop();
  bobRest = await RestUser.login(server.url, "bob");
  await message(alice.page, "hello").and(alice.page.locator(".sent, .read")).waitFor();

  dropOnce((f) => f.type === "message" && f.message.body === "lost on the way");
  // Heartbeats would also repair it; keep them away so the gap path is what is tested.
  const heartbeats = dropFromServer;
  dropFromServer = (f) => f.type === "heartbeat" || heartbeats(f);
  await bobRest.send(convId, "lost on the way");
  await bobRest.send(convId, "arrives with a gap");
  await assertExactlyOnce(alice.page, ["hello", "lost on the way", "arrives with a gap"]);
  assert.ok(dropped.includes("message:lost on the way"), "the live event was really lost");
  dropFromServer = () => false;
});

test("a lost last message is fetched after a heartbeat", async () => {
  dropOnce((f) => f.type === "message" && f.message.body === "only a heartbeat tells");
  await bobRest.send(convId, "only a heartbeat tells");
  await assertExactlyOnce(alice.page, ["hello", "lost on the way", "arrives with a gap", "only a heartbeat tells"]);
  assert.ok(dropped.includes("message:only a heartbeat tells"), "the live event was really lost");
});

test("a send whose ack and echo are lost, then a cut socket: sent once", async () => {
  await openConversation(bob.page, "alice");
  // Swallow the ack and the echo of alice's next message, then cut her socket.
  dropFromServer = (f) =>
    (f.type === "ack" && f.message?.body === "ack lost") || (f.type === "message" && f.message.body === "ack lost");
  await send(alice.page, "ack lost");
  await message(bob.page, "ack lost").waitFor();
  assert.match(await message(alice.page, "ack lost").getAttribute("class"), /\bpending\b/);
  await eventually(() => assert.ok(dropped.includes("ack:ack lost") && dropped.includes("message:ack lost")));
  // Bob keeps talking while alice's socket is down.
  await currentRoute.close({ code: 1013, reason: "test cut" });
  await send(bob.page, "while alice was cut off");
  dropFromServer = () => false;

  await waitOnline(alice.page);
  const expected = ["hello", "lost on the way", "arrives with a gap", "only a heartbeat tells", "ack lost", "while alice was cut off"];
  await assertExactlyOnce(alice.page, expected);
  await assertExactlyOnce(bob.page, expected);
  assert.equal(await log(alice.page).locator(".msg.pending").count(), 0);
});

test("no uncaught errors, CSP violations or dialogs", () => {
  assert.deepEqual([...alice.problems, ...bob.problems], []);
  assert.deepEqual([...alice.dialogs, ...bob.dialogs], []);
});
