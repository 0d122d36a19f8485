// Video calls between real browsers (Chromium with a fake camera and microphone): a 1:1
// call with media checked in getStats on both sides, media relayed through a private
// coturn (and a clean failure when the server signs TURN credentials with the wrong
// secret), a three-way mesh, declined / missed / cancelled calls and their summaries, an
// outsider who can neither join nor signal, and a denied camera.
//
// The app exposes its RTCPeerConnections as window.__chattrCall.peers (a documented
// test/debug hook in web/js/calls.js); `?ice=relay` forces relay-only ICE.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import {
  RestUser,
  cleanup,
  eventually,
  launchBrowser,
  log,
  openConversation,
  openPage,
  screenshot,
  signIn,
  signUp,
  sleep,
  startDirect,
  startServer,
} from "./helpers.mjs";

const TURN_SECRET = "chattr-browser-test-secret";

let browser;
let plain; // no TURN configured
let relayed; // TURN through our coturn
let misconfigured; // TURN URL right, secret wrong: every allocation is refused
let ringing; // rings for 3 s only
let turn;
const pages = [];

before(async () => {
  turn = await startTurn(TURN_SECRET);
  const turnEnv = (secret) => ({
    CHATTR_TURN_URL: `turn:127.0.0.1:${turn.port}?transport=udp`,
    CHATTR_TURN_SECRET: secret,
  });
  // All settled before failing, so `after` can stop whatever did start.
  const started = await Promise.allSettled([
    startServer(),
    startServer({ env: turnEnv(TURN_SECRET) }),
    startServer({ env: turnEnv("not-the-secret-coturn-knows") }),
    startServer({ env: { CHATTR__VIDEO__RING_SECS: "3" } }),
    launchBrowser({ media: true }),
  ]);
  [plain, relayed, misconfigured, ringing, browser] = started.map((r) => r.value);
  const failed = started.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
});

after(async () => {
  await cleanup({ browser, servers: [plain, relayed, misconfigured, ringing] });
  await turn?.stop();
});

async function open(server, name, { relay = false } = {}) {
  const p = await openPage(browser, server.url, { name });
  pages.push(p);
  if (relay) await p.page.goto("/?ice=relay"); // remembered in localStorage
  return p;
}

// ------------------------------------------------------------------ page helpers

const panel = (page) => page.getByRole("region", { name: /^Call/ });
const incoming = (page) => page.getByRole("alertdialog", { name: /^Incoming call/ });
const tile = (page, name) => panel(page).getByRole("group", { name, exact: true });
const callLines = (page, text) => log(page).locator(".call-line").filter({ hasText: text });

async function startCall(page) {
  await page.getByRole("button", { name: "Start video call" }).click();
  await panel(page).waitFor();
}

async function accept(page, from) {
  const card = page.getByRole("alertdialog", { name: `Incoming call from ${from}` });
  await card.getByRole("button", { name: "Accept" }).click();
  await card.waitFor({ state: "detached" });
  await panel(page).waitFor();
}

async function hangUp(page) {
  await panel(page).getByRole("button", { name: "Hang up" }).click();
  await panel(page).waitFor({ state: "detached" });
}

/** Per remote device: connection state, the selected candidate pair, inbound video. */
function callStats(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const [session, pc] of window.__chattrCall.peers) {
      const report = await pc.getStats();
      const entry = { session, state: pc.connectionState, pair: null, video: [] };
      for (const r of report.values()) {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          entry.video.push({ framesDecoded: r.framesDecoded || 0, bytesReceived: r.bytesReceived || 0 });
        }
        if (r.type === "transport" && r.selectedCandidatePairId) {
          const pair = report.get(r.selectedCandidatePairId);
          entry.pair = {
            state: pair?.state,
            local: report.get(pair?.localCandidateId)?.candidateType,
            remote: report.get(pair?.remoteCandidateId)?.candidateType,
          };
        }
      }
      out.push(entry);
    }
    return out;
  });
}

/**
 * Waits until every page decodes video from `remotes` other devices over a succeeded
 * candidate pair, then checks that frames and bytes keep coming 2 s later. Returns the
 * second sample per page.
 */
async function assertMediaFlows(list, remotes) {
  const first = await Promise.all(
    list.map((page) =>
      eventually(
        async () => {
          const stats = await callStats(page);
          const detail = JSON.stringify(stats);
          assert.equal(stats.length, remotes, `one connection per other participant: ${detail}`);
          for (const s of stats) {
            assert.equal(s.pair?.state, "succeeded", `selected pair: ${detail}`);
            assert.equal(s.video.length, 1, `one inbound video stream per connection: ${detail}`);
            assert.ok(s.video[0].framesDecoded > 0, `video frames decoded: ${detail}`);
          }
          return stats;
        },
        { timeout: 20_000, interval: 250 },
      ),
    ),
  );
  await sleep(2000); // the one fixed wait: media must keep flowing
  // Polled, because Chromium reports the selected pair "in-progress" while one of its
  // keepalive checks is out, and "succeeded" again once answered.
  return Promise.all(
    list.map((page, i) =>
      eventually(
        async () => {
          const stats = await callStats(page);
          for (const s of stats) {
            const detail = JSON.stringify(s);
            const before = first[i].find((f) => f.session === s.session).video[0];
            assert.ok(s.video[0].framesDecoded > before.framesDecoded, `frames keep being decoded: ${detail}`);
            assert.ok(s.video[0].bytesReceived > before.bytesReceived, `bytes keep arriving: ${detail}`);
            assert.equal(s.pair?.state, "succeeded", `selected pair: ${detail}`);
          }
          return stats;
        },
        { timeout: 10_000, interval: 100 },
      ),
    ),
  );
}

/** Two new users in a direct conversation, both looking at it. */
async function pair(server, { names = ["alice", "bob"], relay = false } = {}) {
  const [alice, bob] = await Promise.all(names.map((name) => open(server, name, { relay })));
  await Promise.all([signUp(alice.page, names[0]), signUp(bob.page, names[1])]);
  await startDirect(alice.page, names[1]);
  await startDirect(bob.page, names[0]);
  return { alice, bob };
}

// ------------------------------------------------------------------ tests

test("a 1:1 call: ringing, media both ways, mute and camera marks, summary after hang-up", async () => {
  const { alice, bob } = await pair(plain);

  await startCall(alice.page);
  await panel(alice.page).getByText("Calling…").waitFor();
  // No TURN on this server: a notice, but the call goes on.
  await panel(alice.page).getByText(/No TURN server configured/).waitFor();
  await alice.page.getByRole("button", { name: "Start video call" }).and(alice.page.locator(":disabled")).waitFor();

  await incoming(bob.page).getByText("Incoming video call").waitFor();
  await accept(bob.page, "alice");

  await tile(alice.page, "bob").waitFor();
  await tile(bob.page, "alice").waitFor();
  await assertMediaFlows([alice.page, bob.page], 1);
  await panel(alice.page).getByText(/^\d+:\d\d$/).waitFor();

  // Mute and camera off reach the other side (call_media), and the local tracks stop.
  await panel(alice.page).getByRole("button", { name: "Mute" }).click();
  await panel(alice.page).getByRole("button", { name: "Camera off" }).click();
  await tile(bob.page, "alice").getByText("microphone off").waitFor();
  await tile(bob.page, "alice").getByText("camera off").waitFor();
  await eventually(async () => assert.match(await tile(bob.page, "alice").getAttribute("class"), /camera-off/));
  assert.deepEqual(
    await alice.page.evaluate(() =>
      [...document.querySelector(".call-self video").srcObject.getTracks()].map((t) => [t.kind, t.enabled]).sort(),
    ),
    [
      ["audio", false],
      ["video", false],
    ],
  );
  await panel(alice.page).getByRole("button", { name: "Unmute" }).click();
  await panel(alice.page).getByRole("button", { name: "Camera on" }).click();
  await eventually(async () => assert.doesNotMatch(await tile(bob.page, "alice").getAttribute("class"), /camera-off/));
  await tile(bob.page, "alice").getByText("microphone off").waitFor({ state: "hidden" });

  await alice.page.mouse.move(0, 0);
  await screenshot(alice.page, "call-desktop");

  await hangUp(alice.page);
  await panel(bob.page).waitFor({ state: "detached" });
  for (const p of [alice.page, bob.page]) {
    await callLines(p, /^Call — \d+ s/).waitFor();
    // A centered line, not a chat bubble.
    assert.equal(await log(p).locator(".msg").filter({ hasText: "Call —" }).count(), 0);
  }
  assert.equal(await alice.page.evaluate(() => window.__chattrCall.peers.size), 0);
  await alice.page.getByRole("button", { name: "Start video call" }).and(alice.page.locator(":enabled")).waitFor();
  for (const p of [alice, bob]) await p.context.close();
});

test("relay only through coturn: media flows over relay candidates", async () => {
  const { alice, bob } = await pair(relayed, { relay: true });
  await startCall(alice.page);
  await accept(bob.page, "alice");
  assert.equal(await panel(alice.page).getByText(/No TURN server configured/).isVisible(), false);
  const stats = await assertMediaFlows([alice.page, bob.page], 1);
  for (const [s] of stats) {
    assert.ok(s.pair.local === "relay" || s.pair.remote === "relay", `relayed pair: ${JSON.stringify(s.pair)}`);
  }
  await hangUp(bob.page);
  await panel(alice.page).waitFor({ state: "detached" });
  await callLines(alice.page, /^Call — \d+ s/).waitFor();
  for (const p of [alice, bob]) await p.context.close();
});

test("relay only with a TURN secret coturn does not know: a clean failure, hang-up works", async () => {
  const { alice, bob } = await pair(misconfigured, { relay: true });
  await startCall(alice.page);
  await accept(bob.page, "alice");
  for (const p of [alice.page, bob.page]) {
    await panel(p).getByRole("alert").getByText("Could not connect the call (network/TURN)").waitFor({ timeout: 15_000 });
    await panel(p).getByText("Could not connect", { exact: true }).waitFor();
  }
  await hangUp(alice.page);
  await panel(bob.page).waitFor({ state: "detached" });
  await callLines(bob.page, /^Call — \d+ s/).waitFor();
  for (const p of [alice, bob]) await p.context.close();
});

test("a three-way group call: every device decodes the two others", async () => {
  const names = ["ann", "ben", "cat"];
  const [alice, bob, carol] = await Promise.all(names.map((name) => open(plain, name)));
  await Promise.all([signUp(alice.page, "ann"), signUp(bob.page, "ben"), signUp(carol.page, "cat")]);
  const [a, b, c] = await Promise.all(names.map((u) => RestUser.login(plain.url, u)));
  await a.group("Standup", [b, c]);
  for (const p of [alice, bob, carol]) await openConversation(p.page, "Standup");

  await startCall(alice.page);
  for (const p of [bob, carol]) {
    await incoming(p.page).getByText("ann is calling the group").waitFor();
    await accept(p.page, "Standup");
  }
  for (const [p, others] of [
    [alice, ["ben", "cat"]],
    [bob, ["ann", "cat"]],
    [carol, ["ann", "ben"]],
  ]) {
    for (const name of others) await tile(p.page, name).waitFor();
  }
  await assertMediaFlows([alice.page, bob.page, carol.page], 2);

  // Leaving one by one: the call goes on until the last one hangs up.
  await hangUp(carol.page);
  await eventually(async () => assert.equal(await panel(alice.page).getByRole("group", { name: "cat" }).count(), 0));
  await hangUp(bob.page);
  await panel(alice.page).getByText("Waiting for others…").waitFor();
  await hangUp(alice.page);
  for (const p of [alice, bob, carol]) await callLines(p.page, /^Call — \d+ s/).waitFor();
  for (const p of [alice, bob, carol]) await p.context.close();
});

test("declined, missed, cancelled, and answered on another device", async () => {
  const { alice, bob } = await pair(ringing);

  // Bob declines.
  await startCall(alice.page);
  await incoming(bob.page).getByRole("button", { name: "Decline" }).click();
  await panel(alice.page).waitFor({ state: "detached" });
  for (const p of [alice.page, bob.page]) await callLines(p, "Call declined").waitFor();
  await incoming(bob.page).waitFor({ state: "detached" });

  // Nobody answers within the 3 s ring time.
  await startCall(alice.page);
  await incoming(bob.page).waitFor();
  await panel(alice.page).waitFor({ state: "detached", timeout: 15_000 });
  for (const p of [alice.page, bob.page]) await callLines(p, "Missed call").waitFor();
  await incoming(bob.page).waitFor({ state: "detached" });

  // Alice cancels while it rings.
  await startCall(alice.page);
  await incoming(bob.page).waitFor();
  await panel(alice.page).getByRole("button", { name: "Cancel" }).click();
  await panel(alice.page).waitFor({ state: "detached" });
  await incoming(bob.page).waitFor({ state: "detached" });
  for (const p of [alice.page, bob.page]) await callLines(p, "Cancelled call").waitFor();

  // Bob has a second device: both ring, answering on one stops the other.
  const bob2 = await open(ringing, "bob-2");
  await signIn(bob2.page, "bob");
  await startCall(alice.page);
  await incoming(bob.page).waitFor();
  await accept(bob2.page, "alice");
  await incoming(bob.page).waitFor({ state: "detached" });
  assert.equal(await panel(bob.page).count(), 0, "the other device is not in the call");
  await tile(alice.page, "bob").waitFor();
  await hangUp(bob2.page);
  await panel(alice.page).waitFor({ state: "detached" });
  await callLines(bob.page, /^Call — \d+ s/).waitFor();
  for (const p of [alice, bob, bob2]) await p.context.close();
});

test("someone outside the conversation can neither join nor signal, nor hear of the call", async () => {
  const { alice, bob } = await pair(plain, { names: ["amy", "bill"] });
  const dave = await open(plain, "dave");
  await signUp(dave.page, "dave");

  // Dave's own socket (a second session), open before the call starts.
  const daveRest = await RestUser.login(plain.url, "dave");
  await dave.page.evaluate(async (token) => {
    const probe = { frames: [], ws: new WebSocket(`ws://${location.host}/v1/ws`) };
    window.__probe = probe;
    probe.ws.onmessage = (e) => probe.frames.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      probe.ws.onopen = resolve;
      probe.ws.onerror = reject;
    });
    probe.ws.send(JSON.stringify({ type: "auth", token }));
  }, daveRest.token);
  await eventually(async () =>
    assert.ok(await dave.page.evaluate(() => window.__probe.frames.some((f) => f.type === "synced"))),
  );

  await startCall(alice.page);
  await accept(bob.page, "amy");
  await tile(alice.page, "bill").waitFor();
  const { callId, sessionId } = await alice.page.evaluate(() => ({
    callId: window.__chattrCall.callId,
    sessionId: window.__chattrCall.sessionId,
  }));
  assert.ok(callId && sessionId);

  const probes = [
    { type: "call_answer", req_id: "answer", call_id: callId },
    {
      type: "call_signal",
      req_id: "offer",
      call_id: callId,
      to_session_id: sessionId,
      signal: { kind: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" },
    },
    {
      type: "call_signal",
      req_id: "ice",
      call_id: callId,
      to_session_id: sessionId,
      signal: { kind: "ice", candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid: "0", sdp_m_line_index: 0 },
    },
  ];
  await dave.page.evaluate((frames) => {
    for (const f of frames) window.__probe.ws.send(JSON.stringify(f));
  }, probes);
  const answers = await eventually(async () => {
    const frames = await dave.page.evaluate(() => window.__probe.frames.filter((f) => f.req_id));
    assert.equal(frames.length, probes.length, JSON.stringify(frames));
    return frames;
  });
  for (const id of ["answer", "offer", "ice"]) {
    const frame = answers.find((f) => f.req_id === id);
    assert.equal(frame?.type, "error", `${id}: ${JSON.stringify(frame)}`);
    assert.equal(frame.code, "not_found", `${id}: ${JSON.stringify(frame)}`);
  }

  // A change members hear about (bob mutes): alice sees it, dave's sockets get nothing.
  await panel(bob.page).getByRole("button", { name: "Mute" }).click();
  await tile(alice.page, "bill").getByText("microphone off").waitFor();
  await hangUp(alice.page);
  await callLines(bob.page, /^Call — \d+ s/).waitFor();
  const leaked = await dave.page.evaluate(() =>
    window.__probe.frames.filter((f) => f.type === "call" || f.type === "call_signal"),
  );
  assert.deepEqual(leaked, []);
  assert.equal(await incoming(dave.page).count(), 0);
  assert.equal(await dave.page.evaluate(() => window.__chattrCall.callId), null);
  for (const p of [alice, bob, dave]) await p.context.close();
});

test("a denied camera and microphone: a clear message, no call placed", async () => {
  const erin = await openPage(browser, plain.url, { name: "erin" });
  pages.push(erin);
  // What a browser does when the user (or a policy) blocks the camera.
  await erin.context.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () =>
      Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
  });
  const fred = await open(plain, "fred");
  await Promise.all([signUp(erin.page, "erin"), signUp(fred.page, "fred")]);
  await startDirect(erin.page, "fred");

  await erin.page.getByRole("button", { name: "Start video call" }).click();
  await panel(erin.page).getByRole("alert").getByText(/^Camera and microphone access was denied/).waitFor();
  await panel(erin.page).getByText("Call not started").waitFor();
  assert.equal(await incoming(fred.page).count(), 0, "no call was placed");
  await panel(erin.page).getByRole("button", { name: "Close" }).click();
  await panel(erin.page).waitFor({ state: "detached" });

  // Called, erin cannot accept either: the message shows and she can still decline.
  await startDirect(fred.page, "erin");
  await startCall(fred.page);
  await incoming(erin.page).getByRole("button", { name: "Accept" }).click();
  await panel(erin.page).getByRole("alert").getByText(/^Camera and microphone access was denied/).waitFor();
  await incoming(erin.page).getByRole("button", { name: "Decline" }).click();
  await panel(fred.page).waitFor({ state: "detached" });
  await callLines(fred.page, "Call declined").waitFor();
  await panel(erin.page).getByRole("button", { name: "Close" }).click();
  await panel(erin.page).waitFor({ state: "detached" });
  assert.equal(await erin.page.evaluate(() => window.__chattrCall.peers.size), 0);
  for (const p of [erin, fred]) await p.context.close();
});

test("no uncaught errors, CSP violations or dialogs", () => {
  assert.deepEqual(
    pages.flatMap((p) => p.problems),
    [],
  );
  assert.deepEqual(
    pages.flatMap((p) => p.dialogs),
    [],
  );
});

// ------------------------------------------------------------------ coturn

/** A free TCP port on loopback (coturn listens on it for UDP and TCP). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A private coturn in TURN REST API mode (the flags of crates/chattr-testkit/src/coturn.rs):
 * accepts credentials signed with `secret`, relays on loopback. Resolves once it listens.
 */
async function startTurn(secret) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "chattr-web-turn-"));
  const relayLow = 20_000 + (port % 20_000);
  const proc = spawn(
    "turnserver",
    [
      "-n",
      "--listening-ip=127.0.0.1",
      "--relay-ip=127.0.0.1",
      `--listening-port=${port}`,
      "--use-auth-secret",
      `--static-auth-secret=${secret}`,
      "--realm=chattr.test",
      "--no-cli",
      "--no-tls",
      "--no-dtls",
      "--allow-loopback-peers",
      `--min-port=${relayLow}`,
      `--max-port=${relayLow + 200}`,
      `--pidfile=${path.join(dir, "turnserver.pid")}`,
      "--log-file=stdout",
      "--simple-log",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  proc.stdout.on("data", keep);
  proc.stderr.on("data", keep);
  const spawned = new Promise((resolve, reject) => {
    proc.once("error", (err) => reject(new Error(`turnserver could not start (install Debian's coturn): ${err.message}`)));
    proc.once("spawn", resolve);
  });
  await spawned;
  await eventually(
    () =>
      new Promise((resolve, reject) => {
        if (proc.exitCode !== null) {
          reject(new Error(`turnserver exited:\n${output}`));
          return;
        }
        const socket = net.connect(port, "127.0.0.1", () => {
          socket.destroy();
          resolve();
        });
        socket.once("error", reject);
      }),
    { timeout: 10_000, interval: 50 },
  );
  return {
    port,
    logs: () => output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((resolve) => proc.once("exit", resolve));
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
