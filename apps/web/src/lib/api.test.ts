// @vitest-environment node
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  ApiError,
  LiveSocket,
  Master,
  NetworkError,
  SendFailed,
  SessionExpired,
  type SocketHandlers,
  type StoredMessage,
  StorageNodes,
  TOKEN_MARGIN_MS,
  describeError,
  loadConfig,
} from "./api";

type Route = (url: string, init: RequestInit) => Response | Promise<Response>;

/** A fetch that answers from routes; `calls` records each request (url, auth, body). */
function fakeFetch(route: Route) {
  const calls: { url: string; auth: string | null; body: unknown }[] = [];
  const impl = (async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = String(input);
    const headers = (init.headers ?? {}) as Record<string, string>;
    calls.push({
      url,
      auth: headers.Authorization ?? null,
      body: init.body ? JSON.parse(String(init.body)) : null,
    });
    return route(url, init);
  }) as typeof fetch;
  return { impl, calls };
}

function reply(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

function message(id: string, seq: number): StoredMessage {
  return {
    id,
    seq,
    senderId: "alice",
    recipientId: "bob",
    ciphertext: "Yw==",
    nonce: "bg==",
    timestamp: 1000 + seq,
    expiresAt: 9e12,
  };
}

let clock = 1_000_000;
const now = () => clock;

async function loggedIn(route: Route = () => reply(404, {}), expiresIn = 900) {
  const fetchImpl = fakeFetch((url, init) =>
    url === "/api/login"
      ? reply(200, { username: "bob", token: "T1", expiresIn })
      : url === "/api/refresh"
        ? reply(200, { username: "bob", token: "T2", expiresIn })
        : route(url, init),
  );
  const master = new Master(fetchImpl.impl, now);
  await master.login("Bob", "password1");
  return { master, calls: fetchImpl.calls, fetchImpl: fetchImpl.impl };
}

beforeEach(() => {
  vi.useFakeTimers();
  clock = 1_000_000;
});
afterEach(() => vi.useRealTimers());

describe("readable errors", () => {
  it.each([
    [new ApiError(401, "invalid_credentials", "wrong username or password"), "Wrong username or password"],
    [new ApiError(409, "username_taken", "this username is taken"), "Username already taken"],
    [new ApiError(429, "too_many_requests", "too many attempts"), "Too many attempts; try again in a moment"],
    [new NetworkError("the server"), "Cannot reach the server"],
    [new ApiError(404, "not_found", "no such user"), "No such user"],
    [new ApiError(400, "invalid_username", "username must be 1 to 64 ..."), "Username must be 1 to 64 ..."],
  ])("%s reads %j", (error, text) => {
    expect(describeError(error)).toBe(text);
  });
});

describe("the master", () => {
  it("keeps the user id the master answers and sends the token as Bearer", async () => {
    const { master, calls } = await loggedIn((url) =>
      url === "/api/users/carol/key" ? reply(200, { publicKey: "K" }) : reply(404, {}),
    );
    expect(master.username).toBe("bob");
    expect(await master.publicKey("carol")).toBe("K");
    expect(calls.at(-1)).toMatchObject({ url: "/api/users/carol/key", auth: "Bearer T1" });
  });

  it("a login refused is an ApiError with the master's code", async () => {
    const master = new Master(fakeFetch(() => reply(401, { error: "invalid_credentials", reason: "x" })).impl, now);
    await expect(master.login("bob", "nope-nope")).rejects.toMatchObject({ status: 401, error: "invalid_credentials" });
  });

  it("a proxy's 502 without a JSON body means the master is unreachable", async () => {
    const master = new Master(fakeFetch(() => new Response("Bad Gateway", { status: 502 })).impl, now);
    await expect(master.login("bob", "password1")).rejects.toBeInstanceOf(NetworkError);
  });

  it("refreshes after two thirds of the token's life and tells the listeners", async () => {
    const { master, calls } = await loggedIn(undefined, 900);
    const tokens: string[] = [];
    master.onToken((token) => tokens.push(token));
    clock += 599_000;
    await vi.advanceTimersByTimeAsync(599_000);
    expect(calls.some((c) => c.url === "/api/refresh")).toBe(false);
    clock += 2_000;
    await vi.advanceTimersByTimeAsync(2_000);
    expect(calls.find((c) => c.url === "/api/refresh")?.auth).toBe("Bearer T1");
    expect(tokens).toEqual(["T2"]);
    expect(master.validToken()).toBe("T2");
    master.stop();
  });

  it.each([12, 30, 900])("refreshes a %i s token while it can still be sent", async (ttl) => {
    const { master, calls } = await loggedIn(undefined, ttl);
    for (let waited = 0; waited < ttl * 1000; waited += 500) {
      expect(() => master.validToken()).not.toThrow();
      if (calls.some((c) => c.url === "/api/refresh")) break;
      clock += 500;
      await vi.advanceTimersByTimeAsync(500);
    }
    expect(calls.find((c) => c.url === "/api/refresh")?.auth).toBe("Bearer T1");
    master.stop();
  });

  it("never hands out a token about to expire", async () => {
    const { master } = await loggedIn(undefined, 60);
    master.stop(); // no refresh
    const again = await loggedIn(undefined, 60);
    clock += 60_000 - TOKEN_MARGIN_MS;
    expect(() => again.master.validToken()).toThrow(SessionExpired);
    await expect(again.master.publicKey("carol")).rejects.toBeInstanceOf(SessionExpired);
    again.master.stop();
  });

  it("a refresh refused at the session's end says so before expiry", async () => {
    const fetchImpl = fakeFetch((url) =>
      url === "/api/login"
        ? reply(200, { username: "bob", token: "T1", expiresIn: 30 })
        : reply(401, { error: "session_expired", reason: "log in again" }),
    );
    const master = new Master(fetchImpl.impl, now);
    const ending = vi.fn();
    master.onSessionEnding = ending;
    await master.login("bob", "password1");
    clock += 20_001;
    await vi.advanceTimersByTimeAsync(20_001);
    expect(ending).toHaveBeenCalledOnce();
    master.stop();
  });
});

it("reads the storage nodes from /config.json", async () => {
  const { impl } = fakeFetch(() => reply(200, { nodes: ["/node1", "/node2/"] }));
  expect(await loadConfig(impl)).toEqual([
    { name: "node1", base: "/node1" },
    { name: "node2", base: "/node2" },
  ]);
});

describe("the storage nodes", () => {
  const nodes = [
    { name: "node1", base: "/node1" },
    { name: "node2", base: "/node2" },
    { name: "node3", base: "/node3" },
  ];

  it("fetches every page of every node, dedupes by id and sorts by seq", async () => {
    const { master, calls, fetchImpl } = await loggedIn((url) => {
      if (url.startsWith("/node1/messages/bob")) {
        return url.includes("after=")
          ? reply(200, { messages: [message("c", 3)], next: null })
          : reply(200, { messages: [message("b", 2)], next: "CURSOR" });
      }
      if (url.startsWith("/node2/messages/bob")) {
        return reply(200, { messages: [message("a", 1), message("c", 3)], next: null });
      }
      return new Response("down", { status: 502 });
    });
    const fetched = await new StorageNodes(nodes, master, fetchImpl).fetchAll();
    expect(fetched.messages.map((m) => m.id)).toEqual(["a", "b", "c"]);
    expect(fetched.answered).toEqual(["node1", "node2"]);
    expect(fetched.failed).toEqual({ node3: "Cannot reach the server" });
    const listing = calls.filter((c) => c.url.startsWith("/node1/"));
    expect(listing.map((c) => c.url)).toEqual([
      "/node1/messages/bob?limit=500",
      "/node1/messages/bob?limit=500&after=CURSOR",
    ]);
    expect(listing.every((c) => c.auth === "Bearer T1")).toBe(true);
    master.stop();
  });

  it("deletes in batches on every node and counts the confirmations", async () => {
    const { master, calls, fetchImpl } = await loggedIn((url, init) => {
      if (url === "/node3/messages/delete") return new Response("down", { status: 502 });
      const ids = JSON.parse(String(init.body)).ids as string[];
      return reply(200, {
        results: ids.map((id) =>
          id === "gone" ? { id, deleted: false, error: "not_found" } : { id, deleted: true },
        ),
      });
    });
    const storage = new StorageNodes(nodes, master, fetchImpl, 2);
    const deleted = await storage.deleteEverywhere(["a", "b", "gone", "a"]);
    expect(deleted.confirmed).toEqual({ a: 2, b: 2, gone: 2 });
    expect(Object.keys(deleted.failed)).toEqual(["node3"]);
    const node1 = calls.filter((c) => c.url === "/node1/messages/delete").map((c) => c.body);
    expect(node1).toEqual([{ ids: ["a", "b"] }, { ids: ["gone"] }]);
    master.stop();
  });
});

// --- the WebSocket ---------------------------------------------------------------------

class FakeSocket {
  static all: FakeSocket[] = [];
  sent: string[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(text: string) {
    this.sent.push(text);
  }
  close() {
    this.closed = true;
  }
  // the server's side
  open() {
    this.onopen?.();
  }
  push(frame: object) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.onclose?.({ code });
  }
  frames() {
    return this.sent.map((s) => JSON.parse(s));
  }
}

function handlers() {
  const states: string[] = [];
  const h = {
    onReady: vi.fn(),
    onMessage: vi.fn(),
    onState: vi.fn((s: string) => states.push(s)),
    onSessionEnded: vi.fn(),
    onError: vi.fn(),
  } satisfies SocketHandlers;
  return { h, states };
}

async function socketFor(master: Master) {
  FakeSocket.all = [];
  const { h, states } = handlers();
  const socket = new LiveSocket(master, h, {
    url: "ws://page/ws",
    WebSocket: FakeSocket as unknown as typeof WebSocket,
    random: () => 0.5,
    isOnline: () => true,
  });
  socket.start();
  return { socket, h, states };
}

function connect(index: number) {
  const ws = FakeSocket.all[index];
  ws.open();
  ws.push({ type: "ready", user: "bob" });
  return ws;
}

describe("the live socket", () => {
  it("authenticates with the first frame and reports ready", async () => {
    const { master } = await loggedIn();
    const { h, states } = await socketFor(master);
    const ws = connect(0);
    expect(ws.url).toBe("ws://page/ws");
    expect(ws.frames()[0]).toEqual({ type: "auth", token: "T1" });
    expect(h.onReady).toHaveBeenCalledOnce();
    expect(states).toEqual(["reconnecting", "connected"]);
    master.stop();
  });

  it("resolves a send with its ack and rejects one the master refused", async () => {
    const { master } = await loggedIn();
    const { socket } = await socketFor(master);
    const ws = connect(0);
    const out = { id: "m1", to: "alice", ciphertext: "c", nonce: "n" };
    const acked = socket.send(out);
    expect(ws.frames()[1]).toEqual({ type: "send", ...out });
    ws.push({ type: "ack", id: "m1", delivered: false, stored: 2, nodes: 3 });
    await expect(acked).resolves.toEqual({ id: "m1", delivered: false, stored: 2, nodes: 3 });
    const refused = socket.send({ ...out, id: "m2" });
    ws.push({ type: "error", id: "m2", reason: "the recipient's queue is full" });
    await expect(refused).rejects.toThrow("the recipient's queue is full");
    master.stop();
  });

  it("a drop fails what waits and reconnects with growing back-off, then fetches again", async () => {
    const { master } = await loggedIn();
    const { socket, h, states } = await socketFor(master);
    const first = connect(0);
    const waiting = socket.send({ id: "m1", to: "alice", ciphertext: "c", nonce: "n" });
    first.drop();
    await expect(waiting).rejects.toBeInstanceOf(SendFailed);
    expect(states.at(-1)).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(499);
    expect(FakeSocket.all).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.all[1].drop(); // refused again: the next wait is longer
    await vi.advanceTimersByTimeAsync(999);
    expect(FakeSocket.all).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    connect(2);
    expect(h.onReady).toHaveBeenCalledTimes(2);
    expect(states.at(-1)).toBe("connected");
    master.stop();
  });

  it("hands a refreshed token to the open socket", async () => {
    const { master } = await loggedIn(undefined, 900);
    await socketFor(master);
    const ws = connect(0);
    clock += 600_001;
    await vi.advanceTimersByTimeAsync(600_001);
    expect(ws.frames().at(-1)).toEqual({ type: "refresh", token: "T2" });
    master.stop();
  });

  it("a 4401 close gets a fresh token and reconnects with it", async () => {
    const { master, calls } = await loggedIn();
    const { h } = await socketFor(master);
    connect(0).drop(4401);
    await vi.advanceTimersByTimeAsync(0);
    expect(calls.some((c) => c.url === "/api/refresh")).toBe(true);
    const second = FakeSocket.all[1];
    second.open();
    expect(second.frames()[0]).toEqual({ type: "auth", token: "T2" });
    expect(h.onSessionEnded).not.toHaveBeenCalled();
    master.stop();
  });

  it("an expired token is never sent: the session ends and asks for the password", async () => {
    const { master } = await loggedIn(undefined, 60);
    const { h, states } = await socketFor(master);
    connect(0);
    master.stop(); // no refresh happened, e.g. the machine slept
    await master.login("bob", "password1");
    clock += 60_000;
    FakeSocket.all[0].drop(4401);
    await vi.advanceTimersByTimeAsync(0);
    expect(FakeSocket.all).toHaveLength(1);
    expect(h.onSessionEnded).toHaveBeenCalledOnce();
    expect(states.at(-1)).toBe("offline");
    master.stop();
  });

  it("sends received for a shown message; nothing is sent before ready", async () => {
    const { master } = await loggedIn();
    const { socket } = await socketFor(master);
    socket.received("early");
    await expect(socket.send({ id: "x", to: "a", ciphertext: "c", nonce: "n" })).rejects.toThrow(
      "not connected",
    );
    const ws = connect(0);
    socket.received("m1");
    expect(ws.frames()).toEqual([
      { type: "auth", token: "T1" },
      { type: "received", id: "m1" },
    ]);
    master.stop();
  });
});
