// Screenshots of the main screens on a desktop (1280×800) and a phone (375×740), saved to
// docs/screenshots/ with fixed names. The data is seeded over REST so the pictures show a
// realistic account: direct conversations and groups, unread counts, presence, typing.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  DESKTOP,
  PHONE,
  RestUser,
  cleanup,
  eventually,
  launchBrowser,
  message,
  openConversation,
  openPage,
  screenshot,
  send,
  signIn,
  startServer,
} from "./helpers.mjs";

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await cleanup({ browser, server });
});

async function seed() {
  const base = server.url;
  const [alice, bob, carol, dan, erin] = await Promise.all(
    ["alice", "bob", "carol", "dan", "erin"].map((u) => RestUser.signup(base, u)),
  );
  const book = await erin.group("Book club", [alice, carol]);
  await erin.send(book.id, "Next pick: The Left Hand of Darkness. Thoughts?");
  await alice.send(book.id, "Yes! I've wanted to read it for ages.");

  const withCarol = await carol.direct(alice);
  await carol.send(withCarol.id, "Lunch tomorrow?");
  await alice.send(withCarol.id, "Sure — 12:30 at the usual place?");
  await carol.send(withCarol.id, "Perfect, see you there!");

  const design = await carol.group("Design team", [alice, dan]);
  await carol.send(design.id, "The new palette is up in the shared folder.");
  await dan.send(design.id, "Love the softer greys.");

  const withBob = await bob.direct(alice);
  const lines = [
    [bob, "Morning! Did you get a chance to look at the onboarding draft?"],
    [alice, "Yes — I left a few comments. The flow reads much better now."],
    [bob, "Great. I moved the pricing step after the tour, like you suggested."],
    [alice, "Perfect. Can we ship it to the beta group on Thursday?"],
    [bob, "Thursday works for me.\nI'll prepare the release notes."],
  ];
  for (const [who, body] of lines) await who.send(withBob.id, body);

  const withDan = await dan.direct(alice);
  await dan.send(withDan.id, "Sent you the invoice for October.");
  await carol.send(design.id, "Review at 3 pm?");
}

test("screenshots of login, conversation list and conversation", async () => {
  await seed();

  for (const [suffix, viewport] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ]) {
    const visitor = await openPage(browser, server.url, { viewport, name: `visitor-${suffix}` });
    pages.push(visitor);
    await visitor.page.goto("/");
    await visitor.page.getByRole("button", { name: "Sign in" }).waitFor();
    await screenshot(visitor.page, `login-${suffix}`);
    await visitor.context.close();
  }

  // Bob is online (his page is open in the conversation), so alice sees him online and read.
  const bob = await openPage(browser, server.url, { name: "bob" });
  pages.push(bob);
  await signIn(bob.page, "bob");

  const alice = await openPage(browser, server.url, { viewport: DESKTOP, name: "alice" });
  const phone = await openPage(browser, server.url, { viewport: PHONE, name: "alice-phone" });
  pages.push(alice, phone);
  await signIn(alice.page, "alice");
  await signIn(phone.page, "alice");
  for (const [p, suffix] of [
    [alice.page, "desktop"],
    [phone.page, "phone"],
  ]) {
    await p.locator(".presence-dot.online").waitFor();
    await screenshot(p, `list-${suffix}`);
  }

  await openConversation(alice.page, "bob");
  await openConversation(phone.page, "bob");
  await send(alice.page, "Thanks! I'll ask design for the final icons.");
  await openConversation(bob.page, "alice");
  for (const p of [alice.page, phone.page]) {
    const mine = message(p, "Thanks! I'll ask design for the final icons.");
    await eventually(async () => assert.match(await mine.getAttribute("class"), /\bread\b/));
  }
  await bob.page.getByLabel("Message", { exact: true }).pressSequentially("Sounds good", { delay: 10 });
  for (const [p, suffix] of [
    [alice.page, "desktop"],
    [phone.page, "phone"],
  ]) {
    await p.getByText("bob is typing…").waitFor();
    await p.mouse.move(0, 0);
    await screenshot(p, `conversation-${suffix}`);
  }
  // On a phone the conversation replaces the list, and Back returns to it.
  assert.equal(await phone.page.getByRole("list", { name: "Conversations" }).isVisible(), false);
  await phone.page.getByRole("button", { name: "Back" }).click();
  await phone.page.getByRole("list", { name: "Conversations" }).waitFor({ state: "visible" });
});

test("no uncaught errors, CSP violations or dialogs", () => {
  assert.deepEqual(pages.flatMap((p) => p.problems), []);
  assert.deepEqual(pages.flatMap((p) => p.dialogs), []);
});
