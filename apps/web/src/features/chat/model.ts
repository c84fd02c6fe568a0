/**
 * The chat's state as the page shows it (pure data and pure updates; features/chat/session.ts
 * drives them). A conversation reads in send order: what a contact sent, in the master's
 * `seq`; what we sent, in the order we sent it.
 */
import type { ConnectionState, Outgoing } from "../../lib/api";

export type SendState = "sending" | "stored" | "delivered" | "failed";

export interface SentEntry {
  kind: "sent";
  id: string;
  text: string;
  at: number; // ms, this page's clock
  state: SendState;
  stored: number;
  nodes: number;
  reason: string | null; // why it failed
  outgoing: Outgoing; // resent as is by Retry
}

export interface ReceivedEntry {
  kind: "received";
  id: string;
  from: string;
  timestamp: number; // ms, the master's clock
  seq: number;
  text: string | null; // null: did not decrypt
  reason: string | null; // why not
  /** Kept while the sender's key changed and is not trusted: opened once it is. */
  held: { ciphertext: string; nonce: string } | null;
}

export type Entry = SentEntry | ReceivedEntry;

export interface ContactView {
  username: string;
  publicKey: string;
  changedKey: string | null;
  unread: number;
}

export type NodeState = "checking" | "ok" | "unreachable";

export interface ChatState {
  me: string;
  connection: ConnectionState;
  nodes: { name: string; state: NodeState }[];
  contacts: ContactView[];
  conversations: Record<string, Entry[]>;
  selected: string | null;
  notice: string | null;
  sessionEnded: boolean;
}

export function initialState(me: string, nodeNames: string[]): ChatState {
  return {
    me,
    connection: "reconnecting",
    nodes: nodeNames.map((name) => ({ name, state: "checking" })),
    contacts: [],
    conversations: {},
    selected: null,
    notice: null,
    sessionEnded: false,
  };
}

/**
 * The conversation with a received entry in its place: after everything already shown,
 * except that it goes before any message of the same sender with a higher `seq` (a stored
 * one fetched after a later live one).
 */
export function insertReceived(entries: Entry[], entry: ReceivedEntry): Entry[] {
  const later = entries.findIndex(
    (e) => e.kind === "received" && e.from === entry.from && e.seq > entry.seq,
  );
  if (later === -1) return [...entries, entry];
  return [...entries.slice(0, later), entry, ...entries.slice(later)];
}

export function updateSent(
  entries: Entry[],
  id: string,
  change: Partial<Omit<SentEntry, "kind" | "id">>,
): Entry[] {
  return entries.map((e) => (e.kind === "sent" && e.id === id ? { ...e, ...change } : e));
}

/** The words of a sent message's state: "sending", "stored on K of N", "delivered", "failed". */
export function stateText(entry: SentEntry): string {
  if (entry.state === "stored") return `stored on ${entry.stored} of ${entry.nodes}`;
  return entry.state;
}

/** The storage nodes' status line: "node1 ok · node2 ok · node3 unreachable". */
export function nodesText(nodes: ChatState["nodes"]): string {
  return nodes.map((n) => `${n.name} ${n.state}`).join(" · ");
}
