/**
 * The one module that talks to the servers: the master's REST API and WebSocket, and the
 * storage nodes' REST API, all on the page's own origin (the proxy's /api, /ws, /nodeK).
 * Components and hooks call these functions; none of them builds a URL or a frame.
 *
 * Tokens live in memory only (never in a URL, storage or a log). The master's short-lived
 * token is refreshed after two thirds of its life (POST /api/refresh, then a `refresh`
 * frame on the socket); a token that is due to expire is never sent: `validToken()` throws
 * SessionExpired instead, and the page asks for the password again.
 */
import {
  type AckFrame,
  FrameError,
  type MessageFrame,
  POLICY_VIOLATION_CLOSE,
  type SendFrame,
  TOKEN_EXPIRED_CLOSE,
  parseServerFrame,
  serialise,
} from "./protocol";

export const MASTER_TIMEOUT_MS = 10_000;
export const NODE_TIMEOUT_MS = 5_000;
export const ACK_TIMEOUT_MS = 30_000;
export const READY_TIMEOUT_MS = 10_000;
export const PAGE_LIMIT = 500; // messages per listing page and ids per delete request
export const MAX_PAGES = 1000; // per node and retrieval
/** A token this close to its expiry is not sent any more (clock drift, time in flight);
 * a tenth of the token's life when that is shorter. */
export const TOKEN_MARGIN_MS = 5_000;
export const REFRESH_SHARE = 2 / 3;
/** Reconnect delays, ms; the last repeats. Each is jittered by up to ±20%. */
export const BACKOFF_MS = [500, 1_000, 2_000, 4_000, 8_000, 15_000, 30_000];

/** The server answered with an error: `{"error": code, "reason": text}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly reason: string,
  ) {
    super(`${status} ${error}: ${reason}`);
    this.name = "ApiError";
  }
}

/** No answer: the server is down, the network is, or it took too long. */
export class NetworkError extends Error {
  constructor(readonly what: string) {
    super(`${what} is unreachable`);
    this.name = "NetworkError";
  }
}

/** The session's token has expired (or is about to) and cannot be refreshed: log in again. */
export class SessionExpired extends Error {
  constructor() {
    super("the session has ended; log in again");
    this.name = "SessionExpired";
  }
}

/** A send that the master refused, or that was not acknowledged. */
export class SendFailed extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "SendFailed";
  }
}

/** Words for a user, for any error these functions throw. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 429) return "Too many attempts; try again in a moment";
    if (error.error === "invalid_credentials") return "Wrong username or password";
    if (error.error === "username_taken") return "Username already taken";
    if (error.error === "session_expired") return "Your session has ended; log in again";
    if (error.status === 404 && error.error === "not_found") return "No such user";
    if (error.status >= 500) return `The server has a problem: ${error.reason || error.error}`;
    return capitalise(error.reason || error.error);
  }
  if (error instanceof NetworkError) return "Cannot reach the server";
  if (error instanceof SessionExpired) return "Your session has ended; log in again";
  if (error instanceof Error) return error.message;
  return String(error);
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export type Fetch = typeof fetch;
export type Clock = () => number;

async function request(
  fetchImpl: Fetch,
  what: string,
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<unknown> {
  let response: Response;
  try {
    response = await fetchImpl(url, {
      ...init,
      signal: AbortSignal.timeout(timeoutMs),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new NetworkError(what);
  }
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const fields = (typeof body === "object" && body !== null ? body : {}) as Record<
      string,
      unknown
    >;
    // A proxy's own 502/504 has no JSON body: the service behind it is down.
    if (response.status >= 502 && response.status <= 504 && fields.error === undefined) {
      throw new NetworkError(what);
    }
    throw new ApiError(
      response.status,
      String(fields.error ?? "error"),
      String(fields.reason ?? response.statusText ?? ""),
    );
  }
  return body;
}

function json(body: unknown, token?: string): RequestInit {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  return { method: "POST", headers, body: JSON.stringify(body) };
}

function bearer(token: string): RequestInit {
  return { headers: { Authorization: `Bearer ${token}` } };
}

// --- configuration --------------------------------------------------------------------

export interface StorageNode {
  name: string; // "node1", from its path
  base: string; // "/node1"
}

/** GET /config.json → the storage nodes, `{"nodes": ["/node1", ...]}`. */
export async function loadConfig(fetchImpl: Fetch = fetch): Promise<StorageNode[]> {
  const body = (await request(fetchImpl, "the server", "/config.json", {}, MASTER_TIMEOUT_MS)) as {
    nodes?: unknown;
  };
  if (!Array.isArray(body?.nodes) || !body.nodes.every((n) => typeof n === "string")) {
    throw new Error('the server\'s /config.json is not {"nodes": [...]}');
  }
  return (body.nodes as string[]).map((path) => {
    const base = path.replace(/\/+$/, "");
    return { base, name: base.split("/").filter(Boolean).pop() ?? base };
  });
}

// --- the master -----------------------------------------------------------------------

type TokenListener = (token: string) => void;

/**
 * The master's REST API and the session's token: login, refresh, public keys. One per
 * signed-in user.
 */
export class Master {
  username: string | null = null; // the user id (lower case), once logged in
  private token: string | null = null;
  private expiresAt = 0; // ms, this page's clock
  private margin = TOKEN_MARGIN_MS;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly tokenListeners = new Set<TokenListener>();
  /** Called once when the session can no longer be refreshed (before the token expires). */
  onSessionEnding: (() => void) | null = null;

  constructor(
    private readonly fetchImpl: Fetch = (...args) => fetch(...args),
    private readonly now: Clock = Date.now,
  ) {}

  /** POST /api/register → the user id the master made of the name. */
  async register(username: string, password: string, publicKey: string): Promise<string> {
    const body = (await request(
      this.fetchImpl,
      "the server",
      "/api/register",
      json({ username, password, publicKey }),
      MASTER_TIMEOUT_MS,
    )) as { username: string };
    return body.username;
  }

  /** POST /api/login; keeps the token and refreshes it until stop(). */
  async login(username: string, password: string): Promise<string> {
    const sent = this.now();
    const body = (await request(
      this.fetchImpl,
      "the server",
      "/api/login",
      json({ username, password }),
      MASTER_TIMEOUT_MS,
    )) as { username: string; token: string; expiresIn: number };
    this.username = body.username;
    this.keep(body.token, body.expiresIn, sent);
    return body.username;
  }

  /** The current token, unless it is within TOKEN_MARGIN_MS of expiry: SessionExpired then. */
  validToken(): string {
    if (this.token === null || this.now() >= this.expiresAt - this.margin) {
      throw new SessionExpired();
    }
    return this.token;
  }

  get tokenExpiresAt(): number {
    return this.expiresAt;
  }

  /** POST /api/refresh with the current token; the new one goes to every listener. */
  async refresh(): Promise<string> {
    const sent = this.now();
    const body = (await request(
      this.fetchImpl,
      "the server",
      "/api/refresh",
      { method: "POST", ...bearer(this.validToken()) },
      MASTER_TIMEOUT_MS,
    )) as { token: string; expiresIn: number };
    this.keep(body.token, body.expiresIn, sent);
    for (const listener of this.tokenListeners) listener(body.token);
    return body.token;
  }

  onToken(listener: TokenListener): () => void {
    this.tokenListeners.add(listener);
    return () => this.tokenListeners.delete(listener);
  }

  /** GET /api/users/{name}/key → the user's public key, base64. ApiError 404 for no such user. */
  async publicKey(username: string): Promise<string> {
    const body = (await request(
      this.fetchImpl,
      "the server",
      `/api/users/${encodeURIComponent(username)}/key`,
      bearer(this.validToken()),
      MASTER_TIMEOUT_MS,
    )) as { publicKey: string };
    return body.publicKey;
  }

  /** Forget the token and stop refreshing it. */
  stop(): void {
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.token = null;
    this.expiresAt = 0;
  }

  private keep(token: string, expiresIn: number, sent: number): void {
    this.token = token;
    // Counted from when the request left: never later than the master's own expiry.
    this.expiresAt = sent + expiresIn * 1000;
    this.margin = Math.min(TOKEN_MARGIN_MS, expiresIn * 100);
    // After two thirds of its life, and always while it is still sendable.
    const left = this.expiresAt - this.now();
    this.schedule(Math.max(0, Math.min(left * REFRESH_SHARE, left - 2 * this.margin)));
  }

  private schedule(delay: number): void {
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refreshInTime(), delay);
  }

  private async refreshInTime(): Promise<void> {
    this.refreshTimer = null;
    try {
      await this.refresh();
    } catch (error) {
      const left = this.expiresAt - this.margin - this.now();
      if (error instanceof NetworkError && left > 1_000) {
        this.schedule(Math.min(5_000, left / 2)); // the master is away: ask again in time
        return;
      }
      if (this.token !== null) this.onSessionEnding?.();
    }
  }
}

// --- the storage nodes ----------------------------------------------------------------

/** A message as a node lists it (apps/common/messages.py from_document). */
export interface StoredMessage {
  id: string;
  senderId: string;
  recipientId: string;
  ciphertext: string;
  nonce: string;
  timestamp: number;
  expiresAt: number;
  seq: number;
}

export interface StoredMessages {
  messages: StoredMessage[]; // deduplicated by id, in the master's order (seq, then id)
  answered: string[]; // node names
  failed: Record<string, string>; // node name → why, in words
}

export interface Deleted {
  confirmed: Record<string, number>; // message id → nodes that no longer have it
  failed: Record<string, string>; // node name → why
}

/** The storage nodes' REST API for the signed-in user, every node at once. */
export class StorageNodes {
  constructor(
    readonly nodes: StorageNode[],
    private readonly master: Master,
    private readonly fetchImpl: Fetch = (...args) => fetch(...args),
    private readonly pageLimit = PAGE_LIMIT,
  ) {}

  /**
   * Every stored message of the user from every node, all pages, deduplicated by id; a node
   * that fails is named in `failed` and does not hold up the others.
   */
  async fetchAll(): Promise<StoredMessages> {
    const user = this.user();
    const results = await Promise.allSettled(this.nodes.map((node) => this.allPages(node, user)));
    const byId = new Map<string, StoredMessage>();
    const answered: string[] = [];
    const failed: Record<string, string> = {};
    results.forEach((result, index) => {
      const node = this.nodes[index];
      if (result.status === "rejected") {
        if (result.reason instanceof SessionExpired) throw result.reason;
        failed[node.name] = describeError(result.reason);
        return;
      }
      answered.push(node.name);
      for (const message of result.value) {
        if (!byId.has(message.id)) byId.set(message.id, message);
      }
    });
    const messages = [...byId.values()].sort(
      (a, b) => a.seq - b.seq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
    return { messages, answered, failed };
  }

  /** POST /nodeK/messages/delete, a page of ids per request, on every node at once. */
  async deleteEverywhere(ids: string[]): Promise<Deleted> {
    const unique = [...new Set(ids)];
    const confirmed: Record<string, number> = Object.fromEntries(unique.map((id) => [id, 0]));
    const failed: Record<string, string> = {};
    if (unique.length === 0) return { confirmed, failed };
    const pages: string[][] = [];
    for (let start = 0; start < unique.length; start += this.pageLimit) {
      pages.push(unique.slice(start, start + this.pageLimit));
    }
    await Promise.all(
      this.nodes.map(async (node) => {
        try {
          for (const page of pages) {
            const body = (await request(
              this.fetchImpl,
              node.name,
              `${node.base}/messages/delete`,
              json({ ids: page }, this.master.validToken()),
              NODE_TIMEOUT_MS,
            )) as { results: { id: string; deleted: boolean; error?: string }[] };
            for (const result of body.results) {
              if ((result.deleted || result.error === "not_found") && result.id in confirmed) {
                confirmed[result.id] += 1;
              }
            }
          }
        } catch (error) {
          // A node that is down gets the deletes by replication from the others.
          failed[node.name] = describeError(error);
        }
      }),
    );
    return { confirmed, failed };
  }

  private user(): string {
    if (this.master.username === null) throw new SessionExpired();
    return this.master.username;
  }

  private async allPages(node: StorageNode, user: string): Promise<StoredMessage[]> {
    const messages: StoredMessage[] = [];
    let after: string | null = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query = new URLSearchParams({ limit: String(this.pageLimit) });
      if (after !== null) query.set("after", after);
      const body = (await request(
        this.fetchImpl,
        node.name,
        `${node.base}/messages/${encodeURIComponent(user)}?${query}`,
        bearer(this.master.validToken()),
        NODE_TIMEOUT_MS,
      )) as { messages: StoredMessage[]; next: string | null };
      messages.push(...body.messages);
      after = body.next ?? null;
      if (after === null) break;
    }
    return messages;
  }
}

// --- the WebSocket --------------------------------------------------------------------

export type ConnectionState = "connected" | "reconnecting" | "offline";

export interface Ack {
  id: string;
  delivered: boolean;
  stored: number;
  nodes: number;
}

/** A sealed message; resending this very one never duplicates it (the master dedupes by id). */
export interface Outgoing {
  id: string;
  to: string;
  ciphertext: string;
  nonce: string;
}

export interface SocketHandlers {
  /** Authenticated (at start and after each reconnect): time to fetch what was stored. */
  onReady(): void;
  onMessage(frame: MessageFrame): void;
  onState(state: ConnectionState): void;
  /** The token cannot be renewed: ask for the password, then call start() again. */
  onSessionEnded(): void;
  /** An error frame that answers no send of ours (e.g. for a `received`). */
  onError?(reason: string): void;
}

export interface SocketOptions {
  url?: string;
  WebSocket?: typeof WebSocket;
  random?: () => number;
  isOnline?: () => boolean;
}

/** ws:// or wss:// (as the page's own protocol) on the page's host, path /ws. */
export function socketUrl(location: Location = window.location): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

interface Waiting {
  resolve(ack: Ack): void;
  reject(error: SendFailed): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The master's WebSocket: authenticates with the first frame, reconnects with back-off,
 * hands each refreshed token to the master, sends and waits for acks.
 */
export class LiveSocket {
  private ws: WebSocket | null = null;
  private ready = false;
  private running = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private readyTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly waiting = new Map<string, Waiting>();
  private readonly WebSocketImpl: typeof WebSocket;
  private readonly url: string;
  private readonly random: () => number;
  private readonly isOnline: () => boolean;
  private unsubscribe: (() => void) | null = null;

  constructor(
    private readonly master: Master,
    private readonly handlers: SocketHandlers,
    options: SocketOptions = {},
  ) {
    this.WebSocketImpl = options.WebSocket ?? WebSocket;
    this.url = options.url ?? socketUrl();
    this.random = options.random ?? Math.random;
    this.isOnline = options.isOnline ?? (() => navigator.onLine !== false);
  }

  get connected(): boolean {
    return this.ready;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.unsubscribe = this.master.onToken((token) => {
      if (this.ready) this.ws?.send(serialise({ type: "refresh", token }));
    });
    this.connect();
  }

  stop(): void {
    this.running = false;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    ws?.close(1000, "bye");
    this.failWaiting("the connection closed");
    this.handlers.onState("offline");
  }

  /** The browser is online again: try now instead of waiting out the back-off. */
  retryNow(): void {
    if (!this.running || this.ws !== null) return;
    this.clearTimers();
    this.connect();
  }

  /** Send (or resend) a sealed message; the ack, or SendFailed. */
  send(outgoing: Outgoing): Promise<Ack> {
    if (!this.ready || this.ws === null) {
      return Promise.reject(new SendFailed("not connected to the server"));
    }
    const previous = this.waiting.get(outgoing.id);
    if (previous !== undefined) {
      clearTimeout(previous.timer);
      previous.reject(new SendFailed("sent again"));
    }
    const frame: SendFrame = { type: "send", ...outgoing };
    return new Promise<Ack>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(outgoing.id);
        reject(new SendFailed("the server did not confirm the message"));
      }, ACK_TIMEOUT_MS);
      this.waiting.set(outgoing.id, { resolve, reject, timer });
      this.ws?.send(serialise(frame));
    });
  }

  /** Tell the master we have the message: it deletes it from every node. */
  received(id: string): void {
    if (this.ready) this.ws?.send(serialise({ type: "received", id }));
  }

  private connect(): void {
    if (!this.running) return;
    let token: string;
    try {
      token = this.master.validToken();
    } catch {
      this.sessionEnded();
      return;
    }
    this.handlers.onState(this.isOnline() ? "reconnecting" : "offline");
    let ws: WebSocket;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      // Browsers cannot set headers on a WebSocket: the token is the first frame.
      ws.send(serialise({ type: "auth", token }));
    };
    ws.onmessage = (event: MessageEvent) => this.onFrame(ws, event.data);
    ws.onclose = (event: CloseEvent) => this.onClose(ws, event.code);
    ws.onerror = () => {
      /* onclose follows */
    };
    this.readyTimer = setTimeout(() => {
      if (this.ws === ws && !this.ready) ws.close(4000, "no ready frame");
    }, READY_TIMEOUT_MS);
  }

  private onFrame(ws: WebSocket, data: unknown): void {
    if (ws !== this.ws || typeof data !== "string") return;
    let frame;
    try {
      frame = parseServerFrame(data);
    } catch (error) {
      if (error instanceof FrameError) return; // a frame this page cannot read is ignored
      throw error;
    }
    switch (frame.type) {
      case "ready":
        this.ready = true;
        this.attempt = 0;
        if (this.readyTimer !== null) clearTimeout(this.readyTimer);
        this.handlers.onState("connected");
        this.handlers.onReady();
        break;
      case "message":
        this.handlers.onMessage(frame);
        break;
      case "ack":
        this.settle(frame);
        break;
      case "refreshed":
        break;
      case "error": {
        const waiting = frame.id === null ? undefined : this.waiting.get(frame.id);
        if (waiting !== undefined && frame.id !== null) {
          clearTimeout(waiting.timer);
          this.waiting.delete(frame.id);
          waiting.reject(new SendFailed(frame.reason));
        } else {
          this.handlers.onError?.(frame.reason);
        }
        break;
      }
    }
  }

  private settle(frame: AckFrame): void {
    const waiting = this.waiting.get(frame.id);
    if (waiting === undefined) return;
    clearTimeout(waiting.timer);
    this.waiting.delete(frame.id);
    waiting.resolve({
      id: frame.id,
      delivered: frame.delivered,
      stored: frame.stored,
      nodes: frame.nodes,
    });
  }

  private onClose(ws: WebSocket, code: number): void {
    if (ws !== this.ws) return;
    this.ws = null;
    const wasReady = this.ready;
    this.ready = false;
    if (this.readyTimer !== null) clearTimeout(this.readyTimer);
    this.failWaiting("the connection closed before the server confirmed it");
    if (!this.running) return;
    if (code === TOKEN_EXPIRED_CLOSE || (code === POLICY_VIOLATION_CLOSE && !wasReady)) {
      // The token ran out (or was refused): a fresh one if the session allows, else log in.
      this.handlers.onState("reconnecting");
      this.master.refresh().then(
        () => this.connect(),
        (error: unknown) => {
          if (error instanceof NetworkError) this.scheduleReconnect();
          else this.sessionEnded();
        },
      );
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (!this.running) return;
    this.handlers.onState(this.isOnline() ? "reconnecting" : "offline");
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const delay = base * (0.8 + 0.4 * this.random());
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private sessionEnded(): void {
    this.running = false;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.clearTimers();
    this.handlers.onState("offline");
    this.handlers.onSessionEnded();
  }

  private failWaiting(reason: string): void {
    for (const [id, waiting] of this.waiting) {
      clearTimeout(waiting.timer);
      waiting.reject(new SendFailed(reason));
      this.waiting.delete(id);
    }
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.readyTimer !== null) clearTimeout(this.readyTimer);
    this.retryTimer = null;
    this.readyTimer = null;
  }
}
