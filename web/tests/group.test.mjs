// A group of three: create, message, add a member (who gets the history), rename, read
// state, remove a member, leave.

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
  signUp,
  startServer,
} from "./helpers.mjs";

let server;
let browser;
let alice;
let bob;
let carol;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  alice = await openPage(browser, server.url, { name: "alice" });
  bob = await openPage(browser, server.url, { name: "bob" });
  carol = await openPage(browser, server.url, { name: "carol" });
});

after(async () => {
  await cleanup({ browser, server });
});

async function addPerson(page, scope, username) {
  await scope.getByLabel("Add people").fill(username);
  await scope.getByRole("button", { name: `Add ${username}` }).click();
}

test("a group of three: create, add, rename, messages with senders and read state", async () => {
  await Promise.all([signUp(alice.page, "alice"), signUp(bob.page, "bob"), signUp(carol.page, "carol")]);

  // Alice creates a group with bob.
  await alice.page.getByRole("button", { name: "New group" }).click();
  const create = alice.page.getByRole("dialog", { name: "New group" });
  await create.getByLabel("Group title").fill("Weekend trip");
  await addPerson(alice.page, create, "bob");
  await create.getByRole("list", { name: "Selected people" }).getByText("bob").waitFor();
  await create.getByRole("button", { name: "Create group" }).click();
  await alice.page.getByRole("heading", { name: "Weekend trip" }).waitFor();
  await send(alice.page, "Who's in?");

  // Bob gets the new group live, with the message and its sender.
  const bobItem = conversationItem(bob.page, "Weekend trip");
  await bobItem.locator(".conv-preview", { hasText: "alice: Who's in?" }).waitFor();
  await openConversation(bob.page, "Weekend trip");
  const fromAlice = message(bob.page, "Who's in?");
  await fromAlice.locator(".sender", { hasText: "alice" }).waitFor();

  // Alice adds carol from the group settings; carol sees the group with its history.
  await alice.page.getByRole("button", { name: "Group settings" }).click();
  const settings = alice.page.getByRole("dialog", { name: "Group settings" });
  await addPerson(alice.page, settings, "carol");
  await settings.getByRole("list", { name: "Members" }).getByText("carol").waitFor();
  // The owner cannot leave: no such button for alice.
  assert.equal(await settings.getByRole("button", { name: "Leave group" }).count(), 0);

  // Rename.
  await settings.getByLabel("Group title").fill("Weekend trip 🏕️");
  await settings.getByRole("button", { name: "Rename" }).click();
  await settings.getByRole("button", { name: "Close" }).click();
  await bob.page.getByRole("heading", { name: "Weekend trip 🏕️" }).waitFor();

  await openConversation(carol.page, "Weekend trip 🏕️");
  await message(carol.page, "Who's in?").waitFor();
  await send(carol.page, "Me!");
  await message(alice.page, "Me!").locator(".sender", { hasText: "carol" }).waitFor();
  await message(bob.page, "Me!").locator(".sender", { hasText: "carol" }).waitFor();

  // Bob and carol have read alice's message.
  const mine = message(alice.page, "Who's in?");
  await eventually(async () => assert.match(await mine.getAttribute("class"), /\bread\b/));
  await send(alice.page, "Great, see you Saturday");
  const last = message(alice.page, "Great, see you Saturday");
  await last.getByText(/Read by (bob, carol|carol, bob)/).waitFor();
  await alice.page.getByText("3 members").waitFor();
});

test("remove a member, and a member leaves", async () => {
  // Alice removes carol: the group disappears from carol's list and screen.
  await alice.page.getByRole("button", { name: "Group settings" }).click();
  const settings = alice.page.getByRole("dialog", { name: "Group settings" });
  await settings.getByRole("button", { name: "Remove carol" }).click();
  await eventually(async () => assert.equal(await settings.getByRole("list", { name: "Members" }).getByText("carol").count(), 0));
  await settings.getByRole("button", { name: "Close" }).click();
  await eventually(async () => assert.equal(await conversationItem(carol.page, "Weekend trip 🏕️").count(), 0));
  await carol.page.getByRole("heading", { name: "Your conversations" }).waitFor();

  // Bob leaves.
  await bob.page.getByRole("button", { name: "Group settings" }).click();
  const bobSettings = bob.page.getByRole("dialog", { name: "Group settings" });
  assert.equal(await bobSettings.getByLabel("Group title").isDisabled(), true, "only the owner renames");
  await bobSettings.getByRole("button", { name: "Leave group" }).click();
  await bob.page.getByRole("dialog", { name: "Leave this group?" }).getByRole("button", { name: "Leave" }).click();
  await eventually(async () => assert.equal(await conversationItem(bob.page, "Weekend trip 🏕️").count(), 0));
  await alice.page.getByText("1 member").waitFor();
});

test("no uncaught errors, CSP violations or dialogs", () => {
  assert.deepEqual([...alice.problems, ...bob.problems, ...carol.problems], []);
  assert.deepEqual([...alice.dialogs, ...bob.dialogs, ...carol.dialogs], []);
});
