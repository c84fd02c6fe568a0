/**
 * End-to-end encryption in the page: X25519 key pairs and NaCl box (tweetnacl), byte for
 * byte what the Python client's PyNaCl `Box` makes (apps/client/crypto.py): the ciphertext
 * is the 16-byte MAC followed by the encrypted text, without the 24-byte nonce; both
 * travel as standard base64. The servers only ever see ciphertext.
 */
import nacl from "tweetnacl";

/** A message that does not open with our key and the sender's: forged, corrupt or not ours. */
export class DecryptionError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "DecryptionError";
  }
}

/** Bytes that are not what they claim: bad base64, a key of the wrong length, a bad key file. */
export class KeyFormatError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "KeyFormatError";
  }
}

export interface KeyPair {
  publicKey: Uint8Array; // 32 bytes
  secretKey: Uint8Array; // 32 bytes
}

/** The CLI's key.json: `{"username", "publicKey", "privateKey"}`, standard base64. */
export interface KeyFile {
  username: string;
  publicKey: string;
  privateKey: string;
}

export interface Sealed {
  ciphertext: string; // base64
  nonce: string; // base64, 24 bytes decoded
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with padding (Python's base64.b64encode). */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return btoa(binary);
}

/** Strict standard base64 (Python's b64decode(validate=True)); KeyFormatError otherwise. */
export function fromBase64(text: string): Uint8Array {
  if (typeof text !== "string" || !BASE64.test(text)) {
    throw new KeyFormatError("not standard base64");
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function key32(text: string, what: string): Uint8Array {
  const bytes = fromBase64(text);
  if (bytes.length !== nacl.box.publicKeyLength) {
    throw new KeyFormatError(`${what} must be 32 bytes, not ${bytes.length}`);
  }
  return bytes;
}

export function generateKeyPair(): KeyPair {
  return nacl.box.keyPair();
}

export function keyPairFromSecret(secretKey: Uint8Array): KeyPair {
  return nacl.box.keyPair.fromSecretKey(secretKey);
}

export function publicKeyB64(keys: KeyPair): string {
  return toBase64(keys.publicKey);
}

/** A random message id: a canonical lowercase UUID v4 (works outside secure contexts too). */
export function randomId(): string {
  const b = nacl.randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The text for the recipient's key, authenticated by ours; a fresh random nonce unless given. */
export function seal(
  text: string,
  sender: KeyPair,
  recipientPublicB64: string,
  nonce: Uint8Array = nacl.randomBytes(nacl.box.nonceLength),
): Sealed {
  const recipient = key32(recipientPublicB64, "the recipient's public key");
  // Copied into this realm's Uint8Array: tweetnacl checks `instanceof` (jsdom's TextEncoder
  // answers with another realm's).
  const plain = new Uint8Array(new TextEncoder().encode(text));
  const boxed = nacl.box(plain, new Uint8Array(nonce), recipient, sender.secretKey);
  return { ciphertext: toBase64(boxed), nonce: toBase64(nonce) };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The plaintext, or DecryptionError saying why not (never another exception). */
export function openSealed(
  ciphertext: string,
  nonce: string,
  recipient: KeyPair,
  senderPublicB64: string,
): string {
  let opened: Uint8Array | null;
  try {
    const nonceBytes = fromBase64(nonce);
    if (nonceBytes.length !== nacl.box.nonceLength) {
      throw new DecryptionError(`the nonce must be 24 bytes, not ${nonceBytes.length}`);
    }
    const sender = key32(senderPublicB64, "the sender's public key");
    opened = nacl.box.open(fromBase64(ciphertext), nonceBytes, sender, recipient.secretKey);
  } catch (error) {
    if (error instanceof DecryptionError) throw error;
    throw new DecryptionError(error instanceof Error ? error.message : String(error));
  }
  if (opened === null) {
    throw new DecryptionError("it does not open with this key pair and the sender's key");
  }
  try {
    return utf8.decode(opened);
  } catch {
    throw new DecryptionError("the plaintext is not UTF-8");
  }
}

/** The key pair as the CLI's key.json holds it. */
export function toKeyFile(username: string, keys: KeyPair): KeyFile {
  return {
    username,
    publicKey: toBase64(keys.publicKey),
    privateKey: toBase64(keys.secretKey),
  };
}

/**
 * A key file's text read back: the username and the key pair, the public key derived from the
 * private one; KeyFormatError when it is no such file or its public key is another's.
 */
export function parseKeyFile(text: string): { username: string; keys: KeyPair } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new KeyFormatError("the key file is not JSON");
  }
  if (typeof value !== "object" || value === null) {
    throw new KeyFormatError('the key file must be {"username", "publicKey", "privateKey"}');
  }
  const file = value as Partial<Record<keyof KeyFile, unknown>>;
  if (typeof file.username !== "string" || typeof file.privateKey !== "string") {
    throw new KeyFormatError('the key file must be {"username", "publicKey", "privateKey"}');
  }
  const keys = keyPairFromSecret(key32(file.privateKey, "privateKey"));
  if (file.publicKey !== undefined && file.publicKey !== toBase64(keys.publicKey)) {
    throw new KeyFormatError("the key file's publicKey does not belong to its privateKey");
  }
  return { username: file.username, keys };
}
