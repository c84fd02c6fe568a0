// @vitest-environment node
import { describe, expect, it } from "vitest";
import { FrameError, parseServerFrame, serialise } from "./protocol";

describe("frames from the master", () => {
  it.each([
    ['{"type":"ready","user":"bob"}', "ready"],
    [
      '{"type":"message","id":"i","from":"alice","ciphertext":"Yw==","nonce":"bg==","timestamp":1,"seq":7}',
      "message",
    ],
    ['{"type":"ack","id":"i","delivered":false,"stored":2,"nodes":3}', "ack"],
    ['{"type":"ack","id":"i","delivered":true,"stored":0,"nodes":0,"storage":"disabled"}', "ack"],
    ['{"type":"refreshed","expiresAt":1700000000000}', "refreshed"],
    ['{"type":"error","id":null,"reason":"nope"}', "error"],
    ['{"type":"error","id":"i","reason":"queue full"}', "error"],
  ])("reads %s", (text, type) => {
    expect(parseServerFrame(text).type).toBe(type);
  });

  it("keeps the wire's field names (from)", () => {
    const frame = parseServerFrame(
      '{"type":"message","id":"i","from":"alice","ciphertext":"Yw==","nonce":"bg==","timestamp":1,"seq":7}',
    );
    expect(frame).toMatchObject({ from: "alice", seq: 7 });
  });

  it.each([
    ["not JSON", "{"],
    ["an array", "[]"],
    ["an unknown type", '{"type":"hello"}'],
    ["a missing field", '{"type":"ack","id":"i","delivered":true,"stored":1}'],
    ["a wrong type", '{"type":"message","id":"i","from":"a","ciphertext":"c","nonce":"n","timestamp":"1","seq":1}'],
    ["a fractional seq", '{"type":"message","id":"i","from":"a","ciphertext":"c","nonce":"n","timestamp":1,"seq":1.5}'],
    ["a bad storage", '{"type":"ack","id":"i","delivered":true,"stored":1,"nodes":1,"storage":"on"}'],
  ])("refuses %s", (_what, text) => {
    expect(() => parseServerFrame(text)).toThrow(FrameError);
  });
});

it("writes client frames as compact JSON", () => {
  expect(serialise({ type: "auth", token: "t" })).toBe('{"type":"auth","token":"t"}');
  expect(JSON.parse(serialise({ type: "send", id: "i", to: "bob", ciphertext: "c", nonce: "n" }))).toEqual(
    { type: "send", id: "i", to: "bob", ciphertext: "c", nonce: "n" },
  );
});
