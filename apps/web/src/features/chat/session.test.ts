// @vitest-environment node
import { beforeEach, describe, expect, it, vi } from "vitest";
import { Master, StorageNodes, type StoredMessage } from "../../lib/api";
import { type KeyPair, generateKeyPair, publicKeyB64, seal, toBase64 } from "../../lib/crypto";
import { closeKeystore } from "../../lib/keystore";
import type { ReceivedEntry, SentEntry } from "./model";
import { ChatSession } from "./session";

/** The master's and nodes' REST answers for one test, and what was asked. */
class FakeServers {
  keys = new Map<string, string>();
  stored: Record<string, StoredMessage[] | "down"> = { node1: [], node2: [], node3: [] };
  deleted: Record<string, string[]> = { node1: [], node2: [], node3: [] };
  fetch = (async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = String(input);
    const reply = (status: number, body: unknown) =>
      new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
    if (url === "/api/login") return reply(200, { username: "bob", token: "T", expiresIn: 900 });
    const key = url.match(/^\/api\/users\/([^/]+)\/key$/);
    if (key) {
      const found = this.keys.get(decodeURIComponent(key[1]));
      return found ? reply(200, { publicKey: found }) : reply(404, { error: "not_found", reason: "no such user" });
    }
    const node = url.match(/^\/(node\d)\/messages\/(delete|bob)/);
    if (node) {
      const held = this.stored[node[1]];
      if (held === "down") return new Response("down", { status: 502 });
      if (node[2] === "delete") {
        const ids = JSON.parse(String(init.body)).ids as string[];
        this.deleted[node[1]].push(...ids);
        this.stored[node[1]] = held.filter((m) => !ids.includes(m.id));
        return reply(200, { results: ids.map((id) => ({ id, deleted: true })) });
      }
      return reply(200, { messages: held, next: null });
    }
    return reply(404, { error: "not_found", reason: url });
  }) as typeof fetch;
}

class FakeSocket {
  static last: FakeSocket;
  sent: Record<string, unknown>[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  constructor() {
    FakeSocket.last = this;
  }
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close() {}
  push(frame: object) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

const bob = generateKeyPair();
let alice: KeyPair;
let servers: FakeServers;
let seq = 0;

function from(sender: KeyPair, text: string, id = crypto.randomUUID(), senderId = "alice"): StoredMessage {
  seq += 1;
  return {
    id,
    seq,
    senderId,
    recipientId: "bob",
    timestamp: 1_700_000_000_000 + seq,
    expiresAt: 1_800_000_000_000,
    ...seal(text, sender, publicKeyB64(bob)),
  };
}

function live(message: StoredMessage) {
  return { type: "message", id: message.id, from: message.senderId, ciphertext: message.ciphertext, nonce: message.nonce, timestamp: message.timestamp, seq: message.seq };
}

async function startSession() {
  const master = new Master(servers.fetch);
  await master.login("bob", "password1");
  const nodes = ["node1", "node2", "node3"].map((name) => ({ name, base: `/${name}` }));
  const session = new ChatSession(master, bob, new StorageNodes(nodes, master, servers.fetch), {
    url: "ws://page/ws",
    WebSocket: FakeSocket as unknown as typeof WebSocket,
    isOnline: () => true,
  });
  await session.start();
  const ws = FakeSocket.last;
  ws.onopen?.();
  ws.push({ type: "ready", user: "bob" });
  return { session, ws };
}

function texts(session: ChatSession, who: string) {
  return (session.getState().conversations[who] ?? []).map((e) =>
    e.kind === "sent" ? `me: ${e.text}` : (e.text ?? `undecryptable (${e.reason})`),
  );
}

beforeEach(async () => {
  await closeKeystore();
  await new Promise((resolve) => {
    const request = indexedDB.deleteDatabase("kuno");
    request.onsuccess = request.onerror = resolve;
  });
  alice = generateKeyPair();
  servers = new FakeServers();
  servers.keys.set("alice", publicKeyB64(alice));
  servers.keys.set("bob", publicKeyB64(bob));
});

describe("stored messages at start", () => {
  it("come from every node, deduped, in seq order, then are deleted from every node", async () => {
    const [one, two, three] = [from(alice, "one"), from(alice, "two"), from(alice, "three")];
    servers.stored = { node1: [two, three], node2: [one, two], node3: "down" };
    const { session } = await startSession();
    await vi.waitFor(() => expect(session.getState().nodes.map((n) => n.state)).not.toContain("checking"));
    expect(texts(session, "alice")).toEqual(["one", "two", "three"]);
    expect(session.getState().nodes).toEqual([
      { name: "node1", state: "ok" },
      { name: "node2", state: "ok" },
      { name: "node3", state: "unreachable" },
    ]);
    expect(servers.deleted.node1.sort()).toEqual([one.id, two.id, three.id].sort());
    expect(servers.deleted.node2.sort()).toEqual([one.id, two.id, three.id].sort());
    // The sender became a contact, its key pinned, with three unread.
    expect(session.getState().contacts).toMatchObject([{ username: "alice", unread: 3, changedKey: null }]);
    session.stop();
  });

  it("an undecryptable one is shown once as such and deleted", async () => {
    const good = from(alice, "fine");
    const bad = from(alice, "tampered");
    const raw = Uint8Array.from(atob(bad.ciphertext), (c) => c.charCodeAt(0));
    raw[raw.length - 1] ^= 1;
    bad.ciphertext = toBase64(raw);
    servers.stored = { node1: [good, bad], node2: [bad], node3: [] };
    const { session } = await startSession();
    await vi.waitFor(() => expect(servers.deleted.node1).toHaveLength(2));
    const entries = session.getState().conversations.alice as ReceivedEntry[];
    expect(entries.map((e) => e.text)).toEqual(["fine", null]);
    expect(servers.deleted.node2.sort()).toEqual([good.id, bad.id].sort());
    session.stop();
  });
});

describe("live messages", () => {
  it("are shown once and answered with received", async () => {
    const { session, ws } = await startSession();
    const message = from(alice, "hi bob");
    ws.push(live(message));
    ws.push(live(message)); // again, e.g. on a second socket
    await vi.waitFor(() => expect(ws.sent.filter((f) => f.type === "received")).toHaveLength(2));
    expect(texts(session, "alice")).toEqual(["hi bob"]);
    expect(ws.sent.filter((f) => f.type === "received")).toEqual([
      { type: "received", id: message.id },
      { type: "received", id: message.id },
    ]);
    session.stop();
  });
});

describe("a contact's key that changes", () => {
  it("is never used silently: its messages wait and nothing is sent until trusted", async () => {
    const { session, ws } = await startSession();
    await session.addContact("alice");
    const mallory = generateKeyPair();
    servers.keys.set("alice", publicKeyB64(mallory));
    ws.push(live(from(mallory, "from the new key")));
    await vi.waitFor(() => expect(session.getState().contacts[0].changedKey).toBe(publicKeyB64(mallory)));
    await vi.waitFor(() => expect(session.getState().conversations.alice).toHaveLength(1));
    const held = session.getState().conversations.alice[0] as ReceivedEntry;
    expect(held.text).toBeNull();
    expect(held.held).not.toBeNull();
    await expect(session.send("hello?")).rejects.toThrow(/not trusted/);
    expect(ws.sent.filter((f) => f.type === "send")).toHaveLength(0);

    await session.trustNewKey("alice");
    expect(texts(session, "alice")).toEqual(["from the new key"]);
    expect(session.getState().contacts[0]).toMatchObject({ publicKey: publicKeyB64(mallory), changedKey: null });
    void session.send("now to the trusted key");
    expect(ws.sent.filter((f) => f.type === "send")).toHaveLength(1);
    session.stop();
  });
});

describe("sending", () => {
  it("goes sending → stored on K of N; a failed one is retried with the same id and bytes", async () => {
    const { session, ws } = await startSession();
    await session.addContact("alice");
    const sending = session.send("hello alice");
    const sent = () => session.getState().conversations.alice.at(-1) as SentEntry;
    expect(sent().state).toBe("sending");
    const frame = ws.sent.find((f) => f.type === "send") as Record<string, string>;
    expect(frame).toMatchObject({ to: "alice", id: sent().id });
    ws.push({ type: "error", id: frame.id, reason: "the recipient's queue is full" });
    await sending;
    expect(sent()).toMatchObject({ state: "failed", reason: "the recipient's queue is full" });

    const retrying = session.retry("alice", sent().id);
    const resent = ws.sent.filter((f) => f.type === "send");
    expect(resent).toHaveLength(2);
    expect(resent[1]).toEqual(resent[0]);
    ws.push({ type: "ack", id: frame.id, delivered: false, stored: 2, nodes: 3 });
    await retrying;
    expect(sent()).toMatchObject({ state: "stored", stored: 2, nodes: 3 });
    session.stop();
  });

  it("an unknown user cannot be added", async () => {
    const { session } = await startSession();
    await expect(session.addContact("nobody")).rejects.toThrow("No user called nobody");
    expect(session.getState().contacts).toEqual([]);
    session.stop();
  });
});

it("a pinned contact whose key changed since the last visit is flagged at start", async () => {
  const first = await startSession();
  await first.session.addContact("alice");
  first.session.stop();
  servers.keys.set("alice", publicKeyB64(generateKeyPair()));
  const { session } = await startSession();
  await vi.waitFor(() => expect(session.getState().contacts[0]?.changedKey).toBe(servers.keys.get("alice")));
  expect(session.getState().contacts[0].publicKey).toBe(publicKeyB64(alice));
  session.stop();
});
