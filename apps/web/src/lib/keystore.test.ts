// @vitest-environment node
import { beforeEach, describe, expect, it } from "vitest";
import { generateKeyPair } from "./crypto";
import {
  closeKeystore,
  listContacts,
  loadContact,
  loadKeyPair,
  observeKey,
  saveContact,
  saveKeyPair,
  trustChangedKey,
} from "./keystore";

beforeEach(async () => {
  await closeKeystore();
  await new Promise((resolve) => {
    const request = indexedDB.deleteDatabase("kuno");
    request.onsuccess = request.onerror = resolve;
  });
});

describe("the key pair in IndexedDB", () => {
  it("is kept per username and comes back whole", async () => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    await saveKeyPair("alice", alice);
    await saveKeyPair("bob", bob);
    const back = await loadKeyPair("alice");
    expect(back?.secretKey).toEqual(alice.secretKey);
    expect(back?.publicKey).toEqual(alice.publicKey);
    expect((await loadKeyPair("bob"))?.publicKey).toEqual(bob.publicKey);
  });

  it("is null for a user with no key in this browser", async () => {
    expect(await loadKeyPair("carol")).toBeNull();
  });
});

describe("pinned contact keys", () => {
  it("the first key is pinned, the same key changes nothing", () => {
    const first = observeKey("alice", "bob", null, "KEY1", 1);
    expect(first.observation).toBe("pinned");
    expect(first.contact).toMatchObject({ publicKey: "KEY1", changedKey: null });
    const again = observeKey("alice", "bob", first.contact, "KEY1", 2);
    expect(again.observation).toBe("same");
    expect(again.contact.publicKey).toBe("KEY1");
  });

  it("a changed key is kept aside and the pinned key stays until trusted", () => {
    const pinned = observeKey("alice", "bob", null, "KEY1", 1).contact;
    const changed = observeKey("alice", "bob", pinned, "KEY2", 2);
    expect(changed.observation).toBe("changed");
    expect(changed.contact).toMatchObject({ publicKey: "KEY1", changedKey: "KEY2" });
    const trusted = trustChangedKey(changed.contact, 3);
    expect(trusted).toMatchObject({ publicKey: "KEY2", changedKey: null });
  });

  it("contacts are kept per signed-in user", async () => {
    await saveContact(observeKey("alice", "bob", null, "B", 1).contact);
    await saveContact(observeKey("alice", "carol", null, "C", 2).contact);
    await saveContact(observeKey("dave", "bob", null, "B-for-dave", 3).contact);
    expect((await listContacts("alice")).map((c) => c.username)).toEqual(["bob", "carol"]);
    expect((await loadContact("dave", "bob"))?.publicKey).toBe("B-for-dave");
    expect(await loadContact("alice", "dave")).toBeNull();
  });
});
