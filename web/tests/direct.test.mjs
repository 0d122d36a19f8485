// Two users in a direct conversation: sign up, find each other, messages both ways,
// typing, read state, edit and delete, a refused send, and paging up through history.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  RestUser,
  cleanup,
  conversationItem,
  eventually,
  launchBrowser,
  log,
  message,
  messagesOnScreen,
  openConversation,
  openPage,
  send,
  signIn,
  signUp,
  startDirect,
  startServer,
  unlabelledControls,
} from "./helpers.mjs";

let server;
let browser;
let alice;
let bob;

before(async () => {
  // A low body limit so the test can provoke a refused send.
  server = await startServer({ env: { CHATTR__MESSAGING__MAX_BODY_CHARS: "300" } });
  browser = await launchBrowser();
  alice = await openPage(browser, server.url, { name: "alice" });
  bob = await openPage(browser, server.url, { name: "bob" });
});

after(async () => {
  await cleanup({ browser, server });
});

test("sign up both, find each other, chat both ways with typing and read state", async () => {
  await alice.page.goto("/");
  await alice.page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.deepEqual(await unlabelledControls(alice.page), [], "login screen controls are labelled");
  // A wrong password is refused with a message.
  await alice.page.getByLabel("Username").fill("nobody");
  await alice.page.getByLabel("Password").fill("wrong password");
  await alice.page.getByRole("button", { name: "Sign in" }).click();
  await alice.page.getByRole("alert").getByText("Wrong username or password.").waitFor();

  await signUp(alice.page, "alice");
  await signUp(bob.page, "bob");

  // Alice finds bob by username and opens a direct conversation.
  await startDirect(alice.page, "bob");
  await send(alice.page, "Hi Bob! 👋");
  const first = message(alice.page, "Hi Bob! 👋");
  await eventually(async () => assert.equal(await first.getAttribute("data-seq"), "1"));

  // Bob sees it in his list: unread badge and preview, then opens it.
  const item = conversationItem(bob.page, "alice");
  await item.locator(".conv-preview", { hasText: "Hi Bob! 👋" }).waitFor();
  await item.locator(".badge", { hasText: "1" }).waitFor();
  await item.locator(".presence-dot.online").waitFor();
  await openConversation(bob.page, "alice");
  await message(bob.page, "Hi Bob! 👋").waitFor();
  await eventually(async () => assert.equal(await item.locator(".badge").isVisible(), false));

  // Bob having read it, alice's message turns "read".
  await eventually(async () => assert.match(await first.getAttribute("class"), /\bread\b/));
  await first.getByText("Read").waitFor();

  // Bob types: alice sees the indicator; it clears when his message arrives.
  await bob.page.getByLabel("Message", { exact: true }).pressSequentially("Hey Al", { delay: 20 });
  await alice.page.getByText("bob is typing…").waitFor();
  // Shift+Enter makes a newline, Enter sends.
  const box = bob.page.getByLabel("Message", { exact: true });
  await box.press("Shift+Enter");
  await box.pressSequentially("second line");
  await box.press("Enter");
  await eventually(async () => assert.equal(await box.inputValue(), ""));
  const reply = alice.page.locator('[role="log"] .msg[data-seq="2"]');
  await reply.waitFor();
  assert.equal(await reply.locator(".body").textContent(), "Hey Al\nsecond line");
  await eventually(async () => assert.equal(await alice.page.getByText("bob is typing…").count(), 0));

  // My own message goes pending → sent → read; ids are unique per seq on both sides.
  await send(bob.page, "How are you?");
  await message(alice.page, "How are you?").waitFor();
  const mine = message(bob.page, "How are you?");
  await eventually(async () => assert.match(await mine.getAttribute("class"), /\bread\b/));
  for (const p of [alice.page, bob.page]) {
    const seqs = (await messagesOnScreen(p)).map((m) => m.seq);
    assert.deepEqual(seqs, [1, 2, 3]);
    assert.deepEqual(await unlabelledControls(p), [], "conversation screen controls are labelled");
  }
});

test("edits and deletes propagate", async () => {
  await send(alice.page, "Lunch at 12?");
  await message(bob.page, "Lunch at 12?").waitFor();

  // Alice edits her message through the UI.
  const msg = message(alice.page, "Lunch at 12?");
  await msg.hover();
  await msg.getByRole("button", { name: "Edit message" }).click();
  const edit = alice.page.getByRole("textbox", { name: "Edited text" });
  await edit.fill("Lunch at 12:30?");
  await edit.press("Enter");
  await message(alice.page, "Lunch at 12:30?").waitFor();
  const seen = message(bob.page, "Lunch at 12:30?");
  await seen.waitFor();
  await seen.getByText("edited").waitFor();

  // And deletes it: both sides show the tombstone.
  const edited = message(alice.page, "Lunch at 12:30?");
  await edited.hover();
  await edited.getByRole("button", { name: "Delete message" }).click();
  await alice.page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  for (const p of [alice.page, bob.page]) {
    await message(p, "message deleted").waitFor();
    assert.equal(await message(p, "Lunch at 12:30?").count(), 0);
  }
  // Bob cannot edit alice's messages: no actions on hers.
  await message(bob.page, "Hi Bob! 👋").hover();
  assert.equal(await message(bob.page, "Hi Bob! 👋").getByRole("button", { name: "Edit message" }).count(), 0);
});

test("a refused send shows an error and can be discarded", async () => {
  const long = "x".repeat(400); // over the server's 300-character limit
  await send(alice.page, long);
  const failed = log(alice.page).locator(".msg.failed");
  await failed.waitFor();
  await failed.getByRole("alert").getByText(/Not sent/).waitFor();
  assert.equal(await failed.getAttribute("data-seq"), null);
  await failed.getByRole("button", { name: "Discard" }).click();
  await eventually(async () => assert.equal(await log(alice.page).locator(".msg.failed").count(), 0));
  // Nothing reached bob.
  assert.equal(await message(bob.page, long).count(), 0);
});

test("history pages upward on scroll, each message once", async () => {
  // Carol (REST) writes 120 messages to alice before alice opens the conversation.
  const carol = await RestUser.signup(server.url, "carol");
  const aliceRest = await RestUser.login(server.url, "alice");
  const conv = await carol.direct(aliceRest);
  for (let i = 1; i <= 120; i++) await carol.send(conv.id, `history ${i}`);

  const item = conversationItem(alice.page, "carol");
  await item.locator(".badge", { hasText: "120" }).waitFor();
  await openConversation(alice.page, "carol");
  await message(alice.page, "history 120").waitFor();
  let shown = await messagesOnScreen(alice.page);
  assert.ok(shown.length <= 100, `only the newest pages load at first (got ${shown.length})`);

  // Scroll to the top until the first message shows.
  await eventually(
    async () => {
      await log(alice.page).evaluate((el) => el.scrollTo(0, 0));
      assert.equal(await message(alice.page, "history 1").count(), 1);
    },
    { timeout: 15_000, interval: 300 },
  );
  shown = await messagesOnScreen(alice.page);
  assert.deepEqual(
    shown.map((m) => m.seq),
    Array.from({ length: 120 }, (_, i) => i + 1),
  );
  assert.deepEqual(
    shown.map((m) => m.body),
    Array.from({ length: 120 }, (_, i) => `history ${i + 1}`),
  );
  // A reload keeps alice signed in (refresh token in localStorage) and reopens the URL.
  await alice.page.reload();
  await message(alice.page, "history 120").waitFor();
  await signInStillWorks();
});

test("keyboard only: search, open a conversation, send", async () => {
  const search = bob.page.getByLabel("Search users");
  await search.focus();
  await bob.page.keyboard.type("car");
  await bob.page.getByRole("list", { name: "Search results" }).getByRole("button", { name: "carol" }).waitFor();
  await bob.page.keyboard.press("ArrowDown");
  await bob.page.keyboard.press("Enter");
  await bob.page.getByRole("heading", { name: "carol", exact: true }).waitFor();
  // The composer has focus on a desktop-sized screen.
  await eventually(async () => assert.equal(await bob.page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Message"));
  await bob.page.keyboard.type("typed with the keyboard only");
  await bob.page.keyboard.press("Enter");
  await message(bob.page, "typed with the keyboard only").and(bob.page.locator(".sent, .read")).waitFor();
  // Dialogs open and close with the keyboard too.
  await bob.page.getByRole("button", { name: "New group" }).focus();
  await bob.page.keyboard.press("Enter");
  const dialog = bob.page.getByRole("dialog", { name: "New group" });
  await dialog.waitFor();
  assert.deepEqual(await unlabelledControls(bob.page), [], "dialog controls are labelled");
  await bob.page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
});

async function signInStillWorks() {
  // Sign out, then sign in again with the password.
  await alice.page.getByRole("button", { name: "Sign out" }).click();
  await alice.page.getByRole("button", { name: "Sign in" }).waitFor();
  await alice.page.reload();
  await alice.page.getByRole("button", { name: "Sign in" }).waitFor();
  await signIn(alice.page, "alice");
  await conversationItem(alice.page, "bob").waitFor();
}

test("no uncaught errors, CSP violations or dialogs", () => {
  assert.deepEqual([...alice.problems, ...bob.problems], []);
  assert.deepEqual([...alice.dialogs, ...bob.dialogs], []);
});
