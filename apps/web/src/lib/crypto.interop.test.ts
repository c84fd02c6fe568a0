// @vitest-environment node
/**
 * Boxes sealed by this page's crypto for the Python client to open: with KUNO_WEB_BOXES set
 * to a file name, they are written there (tests/client/test_web_crypto.py runs this file so
 * and opens each box with kuno.client.crypto, i.e. PyNaCl).
 */
import { writeFileSync } from "node:fs";
import { expect, it } from "vitest";
import { generateKeyPair, openSealed, publicKeyB64, seal, toBase64 } from "./crypto";

const TEXTS = ["hello alice", "", "grüß dich, Alice — 你好 👋🏽", "y".repeat(5000)];

it("seals boxes that open again, written for Python when asked", () => {
  const sender = generateKeyPair();
  const recipient = generateKeyPair();
  const boxes = TEXTS.map((plaintext) => ({
    plaintext,
    ...seal(plaintext, sender, publicKeyB64(recipient)),
  }));
  for (const box of boxes) {
    expect(openSealed(box.ciphertext, box.nonce, recipient, publicKeyB64(sender))).toBe(
      box.plaintext,
    );
  }
  const out = process.env.KUNO_WEB_BOXES;
  if (out) {
    const keys = (pair: typeof sender) => ({
      publicKey: publicKeyB64(pair),
      privateKey: toBase64(pair.secretKey),
    });
    writeFileSync(
      out,
      JSON.stringify({ sender: keys(sender), recipient: keys(recipient), boxes }, null, 2),
    );
  }
});
