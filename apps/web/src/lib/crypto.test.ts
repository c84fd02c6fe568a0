// @vitest-environment node
import { describe, expect, it } from "vitest";
import {
  DecryptionError,
  KeyFormatError,
  fromBase64,
  generateKeyPair,
  keyPairFromSecret,
  openSealed,
  parseKeyFile,
  publicKeyB64,
  randomId,
  seal,
  toBase64,
  toKeyFile,
} from "./crypto";
import vectors from "./fixtures/pynacl.json";

const sender = keyPairFromSecret(fromBase64(vectors.sender.privateKey));
const recipient = keyPairFromSecret(fromBase64(vectors.recipient.privateKey));

describe("PyNaCl's boxes (made by the Python client)", () => {
  it("the key pairs derive the public keys Python derived", () => {
    expect(publicKeyB64(sender)).toBe(vectors.sender.publicKey);
    expect(publicKeyB64(recipient)).toBe(vectors.recipient.publicKey);
  });

  it.each(vectors.boxes.map((box, index) => [index, box] as const))(
    "box %i opens to Python's plaintext",
    (_index, box) => {
      expect(openSealed(box.ciphertext, box.nonce, recipient, vectors.sender.publicKey)).toBe(
        box.plaintext,
      );
    },
  );

  it.each(vectors.boxes.map((box, index) => [index, box] as const))(
    "sealing box %i's text with its nonce makes Python's very bytes",
    (_index, box) => {
      const sealed = seal(box.plaintext, sender, vectors.recipient.publicKey, fromBase64(box.nonce));
      expect(sealed).toEqual({ ciphertext: box.ciphertext, nonce: box.nonce });
    },
  );

  it("a tampered box does not open", () => {
    const { ciphertext, nonce } = vectors.tampered;
    expect(() => openSealed(ciphertext, nonce, recipient, vectors.sender.publicKey)).toThrow(
      DecryptionError,
    );
  });

  it("a box does not open with another sender's key", () => {
    const box = vectors.boxes[0];
    const other = publicKeyB64(generateKeyPair());
    expect(() => openSealed(box.ciphertext, box.nonce, recipient, other)).toThrow(DecryptionError);
  });
});

describe("seal and open", () => {
  it("each seal has a fresh 24-byte nonce", () => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const first = seal("same", alice, publicKeyB64(bob));
    const second = seal("same", alice, publicKeyB64(bob));
    expect(fromBase64(first.nonce)).toHaveLength(24);
    expect(first.nonce).not.toBe(second.nonce);
    expect(openSealed(second.ciphertext, second.nonce, bob, publicKeyB64(alice))).toBe("same");
  });

  it.each([
    ["ciphertext that is not base64", "not base64!", undefined],
    ["a short nonce", undefined, toBase64(new Uint8Array(8))],
    ["an empty ciphertext", "", undefined],
  ])("%s is a DecryptionError, not a crash", (_what, ciphertext, nonce) => {
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const sealed = seal("x", alice, publicKeyB64(bob));
    expect(() =>
      openSealed(ciphertext ?? sealed.ciphertext, nonce ?? sealed.nonce, bob, publicKeyB64(alice)),
    ).toThrow(DecryptionError);
  });

  it("plaintext that is not UTF-8 is a DecryptionError", async () => {
    const nacl = (await import("tweetnacl")).default;
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    const nonce = nacl.randomBytes(24);
    const boxed = nacl.box(new Uint8Array([0xff, 0xfe]), nonce, bob.publicKey, alice.secretKey);
    expect(() => openSealed(toBase64(boxed), toBase64(nonce), bob, publicKeyB64(alice))).toThrow(
      /UTF-8/,
    );
  });

  it("a recipient key of the wrong length is refused", () => {
    expect(() => seal("x", generateKeyPair(), toBase64(new Uint8Array(31)))).toThrow(KeyFormatError);
  });
});

describe("base64", () => {
  it("round-trips every byte value, standard alphabet with padding", () => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const text = toBase64(bytes);
    expect(text).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(fromBase64(text)).toEqual(bytes);
  });

  it.each(["abc", "ab-_", "YQ", "Y Q==", "YQ==="])("refuses %j", (text) => {
    expect(() => fromBase64(text)).toThrow(KeyFormatError);
  });
});

describe("the CLI's key file", () => {
  it("round-trips the key pair", () => {
    const keys = generateKeyPair();
    const file = toKeyFile("alice", keys);
    expect(Object.keys(file).sort()).toEqual(["privateKey", "publicKey", "username"]);
    const back = parseKeyFile(JSON.stringify(file));
    expect(back.username).toBe("alice");
    expect(back.keys.secretKey).toEqual(keys.secretKey);
    expect(back.keys.publicKey).toEqual(keys.publicKey);
  });

  it("reads the Python client's file (its keys from PyNaCl)", () => {
    const text = JSON.stringify({ username: "bob", ...vectors.recipient }, null, 2);
    expect(publicKeyB64(parseKeyFile(text).keys)).toBe(vectors.recipient.publicKey);
  });

  it.each([
    ["not JSON", "{"],
    ["no private key", JSON.stringify({ username: "a", publicKey: vectors.sender.publicKey })],
    [
      "another's public key",
      JSON.stringify({ username: "a", ...vectors.sender, publicKey: vectors.recipient.publicKey }),
    ],
    ["a short private key", JSON.stringify({ username: "a", privateKey: toBase64(new Uint8Array(16)) })],
  ])("refuses a file with %s", (_what, text) => {
    expect(() => parseKeyFile(text)).toThrow(KeyFormatError);
  });
});

it("message ids are canonical lowercase UUID v4s", () => {
  const ids = new Set(Array.from({ length: 50 }, randomId));
  expect(ids.size).toBe(50);
  for (const id of ids) {
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  }
});
