/**
 * One signed-in user's chat: the live socket, stored-message retrieval from every node,
 * contacts with pinned keys, sending and retrying. The page's components read its state
 * (useChat) and call its methods; it talks to the servers only through lib/api.ts and
 * encrypts only through lib/crypto.ts.
 */
import {
  ApiError,
  LiveSocket,
  type Master,
  type SocketOptions,
  SendFailed,
  StorageNodes,
  type StoredMessage,
  describeError,
} from "../../lib/api";
import {
  DecryptionError,
  type KeyFile,
  type KeyPair,
  openSealed,
  publicKeyB64,
  randomId,
  seal,
  toKeyFile,
} from "../../lib/crypto";
import {
  type Contact,
  listContacts,
  loadContact,
  observeKey,
  saveContact,
  trustChangedKey,
} from "../../lib/keystore";
import type { MessageFrame } from "../../lib/protocol";
import {
  type ChatState,
  type ContactView,
  type Entry,
  type ReceivedEntry,
  type SentEntry,
  initialState,
  insertReceived,
  updateSent,
} from "./model";

export const UNDECRYPTABLE = "Could not decrypt this message";
/** While a node is unreachable, the stored messages are fetched again this often. */
export const RECHECK_MS = 30_000;
const USERNAME = /^[A-Za-z0-9-][A-Za-z0-9_-]{0,63}$/;

type Listener = () => void;

interface Incoming {
  id: string;
  from: string;
  ciphertext: string;
  nonce: string;
  timestamp: number;
  seq: number;
}

export class ChatSession {
  private state: ChatState;
  private readonly listeners = new Set<Listener>();
  private readonly socket: LiveSocket;
  private readonly storage: StorageNodes;
  private readonly contacts = new Map<string, Contact>();
  private readonly seen = new Set<string>(); // ids shown (or shown as undecryptable)
  private queue: Promise<void> = Promise.resolve(); // incoming work, one at a time, in order
  private retrieving = false;
  private retrieveAgain = false;
  private recheckTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private readonly onOnline = () => this.socket.retryNow();

  constructor(
    private readonly master: Master,
    private readonly keys: KeyPair,
    storage: StorageNodes,
    socketOptions: SocketOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    const me = master.username ?? "";
    this.storage = storage;
    this.state = initialState(
      me,
      storage.nodes.map((n) => n.name),
    );
    this.socket = new LiveSocket(
      master,
      {
        onReady: () => void this.retrieve(),
        onMessage: (frame) => this.enqueue(() => this.receiveLive(frame)),
        onState: (connection) => this.set({ connection }),
        onSessionEnded: () => this.set({ sessionEnded: true }),
        onError: (reason) => this.set({ notice: `The server refused a frame: ${reason}` }),
      },
      socketOptions,
    );
    master.onSessionEnding = () => this.set({ sessionEnded: true });
  }

  // --- for React (useSyncExternalStore) ---------------------------------------------

  getState = (): ChatState => this.state;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  private set(change: Partial<ChatState>): void {
    this.state = { ...this.state, ...change };
    for (const listener of this.listeners) listener();
  }

  // --- life ----------------------------------------------------------------------------

  private started = false;

  /** Contacts from this browser, then the socket (which fetches what is stored once ready). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    for (const contact of await listContacts(this.state.me)) {
      this.contacts.set(contact.username, contact);
    }
    this.publishContacts();
    if (typeof window !== "undefined") window.addEventListener("online", this.onOnline);
    this.socket.start();
    void this.checkOwnKey();
    // Each contact's key asked again: a change shows at once, not only at the next message.
    for (const username of this.contacts.keys()) void this.lookUp(username).catch(() => undefined);
  }

  stop(): void {
    this.stopped = true;
    if (this.recheckTimer !== null) clearTimeout(this.recheckTimer);
    if (typeof window !== "undefined") window.removeEventListener("online", this.onOnline);
    this.socket.stop();
    this.master.stop();
  }

  /** After "session ended": log in again with the password, keep everything shown. */
  async relogin(password: string): Promise<void> {
    await this.master.login(this.state.me, password);
    this.set({ sessionEnded: false, notice: null });
    this.socket.start();
  }

  exportKey(): KeyFile {
    return toKeyFile(this.state.me, this.keys);
  }

  dismissNotice(): void {
    this.set({ notice: null });
  }

  // --- contacts ------------------------------------------------------------------------

  /** Add by name: the key fetched from the master and pinned; the contact is selected. */
  async addContact(name: string): Promise<void> {
    const username = name.trim().toLowerCase();
    if (!USERNAME.test(username)) {
      throw new Error("A username is 1 to 64 letters, digits, '_' or '-'");
    }
    try {
      await this.lookUp(username);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        throw new Error(`No user called ${username}`);
      }
      throw error;
    }
    this.select(username);
  }

  /** Open a conversation; its unread count goes to zero; the key is checked again. */
  select(username: string): void {
    this.set({ selected: username, conversations: this.withConversation(username) });
    this.markRead(username);
    void this.lookUp(username).catch(() => undefined);
  }

  /** The user has checked the contact's new key: use it, and open what it held. */
  async trustNewKey(username: string): Promise<void> {
    const contact = this.contacts.get(username);
    if (contact === undefined || contact.changedKey === null) return;
    const trusted = trustChangedKey(contact, this.now());
    await saveContact(trusted);
    this.contacts.set(username, trusted);
    const entries = (this.state.conversations[username] ?? []).map((entry) => {
      if (entry.kind !== "received" || entry.held === null) return entry;
      return { ...entry, ...this.open(entry.held.ciphertext, entry.held.nonce, trusted.publicKey) };
    });
    this.set({ conversations: { ...this.state.conversations, [username]: entries } });
    this.publishContacts();
  }

  // --- sending -------------------------------------------------------------------------

  /** Seal for the selected contact's pinned key and send; the entry's state follows the ack. */
  async send(text: string): Promise<void> {
    const to = this.state.selected;
    if (to === null || text.trim() === "") return;
    const contact = this.contacts.get(to);
    if (contact === undefined) throw new Error(`${to} has no key yet`);
    if (contact.changedKey !== null) {
      throw new Error(`Not sent: ${to}'s new key is not trusted yet (see above)`);
    }
    const id = randomId();
    const outgoing = { id, to, ...seal(text, this.keys, contact.publicKey) };
    const entry: SentEntry = {
      kind: "sent",
      id,
      text,
      at: this.now(),
      state: "sending",
      stored: 0,
      nodes: 0,
      reason: null,
      outgoing,
    };
    this.setConversation(to, [...(this.state.conversations[to] ?? []), entry]);
    await this.transmit(to, entry);
  }

  /** Resend a failed message: the same id and ciphertext, so the master stores it once. */
  async retry(to: string, id: string): Promise<void> {
    const entry = (this.state.conversations[to] ?? []).find(
      (e): e is SentEntry => e.kind === "sent" && e.id === id,
    );
    if (entry === undefined || entry.state !== "failed") return;
    this.setConversation(to, updateSent(this.state.conversations[to], id, { state: "sending", reason: null }));
    await this.transmit(to, entry);
  }

  private async transmit(to: string, entry: SentEntry): Promise<void> {
    try {
      const ack = await this.socket.send(entry.outgoing);
      this.setConversation(
        to,
        updateSent(this.state.conversations[to] ?? [], entry.id, {
          state: ack.delivered ? "delivered" : "stored",
          stored: ack.stored,
          nodes: ack.nodes,
        }),
      );
    } catch (error) {
      const reason = error instanceof SendFailed ? error.message : describeError(error);
      this.setConversation(
        to,
        updateSent(this.state.conversations[to] ?? [], entry.id, { state: "failed", reason }),
      );
    }
  }

  // --- receiving -----------------------------------------------------------------------

  private enqueue(work: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(work).catch((error: unknown) => {
      this.set({ notice: describeError(error) });
    });
    return this.queue;
  }

  private async receiveLive(frame: MessageFrame): Promise<void> {
    const shown = this.seen.has(frame.id) || (await this.show({ ...frame }));
    // Shown (or shown as undecryptable): the master deletes it from every node.
    if (shown) this.socket.received(frame.id);
  }

  /**
   * The stored messages from every node (at start and after each reconnect): shown, then
   * deleted from every node in batches. A node that is down is named in the status line and
   * asked again later; the others are not held up.
   */
  async retrieve(): Promise<void> {
    if (this.retrieving) {
      this.retrieveAgain = true;
      return;
    }
    this.retrieving = true;
    try {
      do {
        this.retrieveAgain = false;
        await this.enqueue(() => this.retrieveOnce());
      } while (this.retrieveAgain && !this.stopped);
    } finally {
      this.retrieving = false;
    }
  }

  private async retrieveOnce(): Promise<void> {
    if (this.stopped) return;
    const fetched = await this.storage.fetchAll();
    const senders = new Set(fetched.messages.map((m) => m.senderId));
    await Promise.all([...senders].map((s) => this.lookUp(s).catch(() => undefined)));
    const settled: string[] = [];
    for (const message of fetched.messages) {
      if (this.seen.has(message.id) || (await this.show(fromStored(message)))) {
        settled.push(message.id);
      }
    }
    const deleted = await this.storage.deleteEverywhere(settled);
    const unreachable = new Set([...Object.keys(fetched.failed), ...Object.keys(deleted.failed)]);
    this.set({
      nodes: this.state.nodes.map((n) => ({
        name: n.name,
        state: unreachable.has(n.name) ? "unreachable" : "ok",
      })),
    });
    if (this.recheckTimer !== null) clearTimeout(this.recheckTimer);
    this.recheckTimer = null;
    if ((unreachable.size > 0 || settled.length < fetched.messages.length) && !this.stopped) {
      this.recheckTimer = setTimeout(() => void this.retrieve(), RECHECK_MS);
    }
  }

  /**
   * Decrypt and show one message; false when it must wait (the sender's key could not be
   * fetched for want of the master): then it is neither marked seen nor deleted.
   */
  private async show(message: Incoming): Promise<boolean> {
    let contact: Contact | null = this.contacts.get(message.from) ?? null;
    if (contact === null) {
      try {
        contact = await this.lookUp(message.from);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) return false;
        this.seen.add(message.id);
        this.add(message, { text: null, reason: "the sender has no account any more", held: null });
        return true;
      }
    }
    this.seen.add(message.id);
    let opened = this.open(message.ciphertext, message.nonce, contact.publicKey);
    if (opened.text === null && contact.changedKey === null) {
      // Perhaps the sender has a new key: ask the master (a change is shown, never used).
      const known: Contact = contact;
      contact = await this.lookUp(message.from).catch(() => known);
    }
    if (opened.text === null && contact.changedKey !== null) {
      const held = { ciphertext: message.ciphertext, nonce: message.nonce };
      opened = { text: null, reason: "the sender's key changed", held };
    }
    this.add(message, opened);
    return true;
  }

  private open(
    ciphertext: string,
    nonce: string,
    senderKey: string,
  ): Pick<ReceivedEntry, "text" | "reason" | "held"> {
    try {
      return { text: openSealed(ciphertext, nonce, this.keys, senderKey), reason: null, held: null };
    } catch (error) {
      const reason = error instanceof DecryptionError ? error.message : describeError(error);
      return { text: null, reason, held: null };
    }
  }

  private add(message: Incoming, opened: Pick<ReceivedEntry, "text" | "reason" | "held">): void {
    const entry: ReceivedEntry = {
      kind: "received",
      id: message.id,
      from: message.from,
      timestamp: message.timestamp,
      seq: message.seq,
      ...opened,
    };
    const conversations = this.withConversation(message.from);
    conversations[message.from] = insertReceived(conversations[message.from], entry);
    this.set({ conversations });
    if (this.state.selected !== message.from) this.bumpUnread(message.from);
  }

  // --- keys ----------------------------------------------------------------------------

  /** The master's key for the user, pinned on first use; a changed key is kept aside. */
  private async lookUp(username: string): Promise<Contact> {
    const publicKey = await this.master.publicKey(username);
    const known = this.contacts.get(username) ?? (await loadContact(this.state.me, username));
    const { contact, observation } = observeKey(this.state.me, username, known, publicKey, this.now());
    if (observation !== "same" || known?.changedKey !== contact.changedKey) {
      await saveContact(contact);
    }
    this.contacts.set(username, contact);
    this.publishContacts();
    return contact;
  }

  /** A key in this browser that is not the account's: nothing sent to us would open. */
  private async checkOwnKey(): Promise<void> {
    try {
      const registered = await this.master.publicKey(this.state.me);
      if (registered !== publicKeyB64(this.keys)) {
        this.set({
          notice: `This browser's key is not the one registered for ${this.state.me}: import the right key file, or messages to you will not open`,
        });
      }
    } catch {
      // Not knowing is no finding: the check runs again at the next login.
    }
  }

  private publishContacts(): void {
    const unread = new Map(this.state.contacts.map((c) => [c.username, c.unread]));
    const contacts: ContactView[] = [...this.contacts.values()]
      .sort((a, b) => a.pinnedAt - b.pinnedAt)
      .map((c) => ({
        username: c.username,
        publicKey: c.publicKey,
        changedKey: c.changedKey,
        unread: unread.get(c.username) ?? 0,
      }));
    this.set({ contacts });
  }

  private bumpUnread(username: string): void {
    this.set({
      contacts: this.state.contacts.map((c) =>
        c.username === username ? { ...c, unread: c.unread + 1 } : c,
      ),
    });
  }

  private markRead(username: string): void {
    this.set({
      contacts: this.state.contacts.map((c) => (c.username === username ? { ...c, unread: 0 } : c)),
    });
  }

  private withConversation(username: string): Record<string, Entry[]> {
    const conversations = { ...this.state.conversations };
    conversations[username] ??= [];
    return conversations;
  }

  private setConversation(username: string, entries: Entry[]): void {
    this.set({ conversations: { ...this.state.conversations, [username]: entries } });
  }
}

function fromStored(message: StoredMessage): Incoming {
  return {
    id: message.id,
    from: message.senderId,
    ciphertext: message.ciphertext,
    nonce: message.nonce,
    timestamp: message.timestamp,
    seq: message.seq,
  };
}
