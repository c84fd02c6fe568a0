// @vitest-environment node
import { describe, expect, it } from "vitest";
import { type ReceivedEntry, type SentEntry, insertReceived, nodesText, stateText } from "./model";

function received(id: string, from: string, seq: number): ReceivedEntry {
  return { kind: "received", id, from, seq, timestamp: seq, text: id, reason: null, held: null };
}

describe("conversation order", () => {
  it("appends in arrival order", () => {
    const entries = [received("a", "alice", 1), received("b", "alice", 2)];
    expect(insertReceived(entries, received("c", "alice", 3)).map((e) => e.id)).toEqual(["a", "b", "c"]);
  });

  it("puts a sender's earlier message (by seq) before its later ones", () => {
    const entries = [received("a", "alice", 1), received("c", "alice", 3)];
    expect(insertReceived(entries, received("b", "alice", 2)).map((e) => e.id)).toEqual(["a", "b", "c"]);
  });
});

it("states read as the contract says", () => {
  const base = { kind: "sent", id: "i", text: "t", at: 0, reason: null, stored: 0, nodes: 0 } as const;
  const entry = (state: SentEntry["state"], stored = 0, nodes = 0) =>
    ({ ...base, state, stored, nodes, outgoing: { id: "i", to: "b", ciphertext: "c", nonce: "n" } }) as SentEntry;
  expect(stateText(entry("sending"))).toBe("sending");
  expect(stateText(entry("stored", 2, 3))).toBe("stored on 2 of 3");
  expect(stateText(entry("delivered", 3, 3))).toBe("delivered");
  expect(stateText(entry("failed"))).toBe("failed");
});

it("the nodes' status line names each node", () => {
  expect(
    nodesText([
      { name: "node1", state: "ok" },
      { name: "node2", state: "ok" },
      { name: "node3", state: "unreachable" },
    ]),
  ).toBe("node1 ok · node2 ok · node3 unreachable");
});
