/**
 * What the page keeps in this browser (IndexedDB database "kuno"), per username:
 * - the user's X25519 key pair (the private key never leaves the browser but by "Export key");
 * - each contact's pinned public key: the first key the master gave for that name (trust on
 *   first use). A different key later is kept aside as `changedKey` and never used until
 *   the user trusts it (`trustChangedKey`).
 */
import { type KeyPair, fromBase64, keyPairFromSecret, toBase64 } from "./crypto";

const DB_NAME = "kuno";
const DB_VERSION = 1;
const KEYS = "keys";
const CONTACTS = "contacts";

export interface Contact {
  owner: string; // the signed-in user id this contact belongs to
  username: string; // the contact's user id
  publicKey: string; // pinned, base64
  pinnedAt: number; // ms since the epoch
  changedKey: string | null; // a different key the master has given since, not trusted
}

interface StoredKeyPair {
  username: string;
  publicKey: string;
  privateKey: string;
}

let opening: Promise<IDBDatabase> | null = null;

function database(): Promise<IDBDatabase> {
  if (opening === null) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        if (!db.objectStoreNames.contains(KEYS)) db.createObjectStore(KEYS, { keyPath: "username" });
        if (!db.objectStoreNames.contains(CONTACTS)) {
          const contacts = db.createObjectStore(CONTACTS, { keyPath: ["owner", "username"] });
          contacts.createIndex("owner", "owner");
        }
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => {
        opening = null;
        reject(new Error(`This browser's storage cannot be opened (${request.error?.message})`));
      };
    });
  }
  return opening;
}

function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function store(name: string, mode: IDBTransactionMode): Promise<IDBObjectStore> {
  return (await database()).transaction(name, mode).objectStore(name);
}

/** For tests: close the connection so the database can be deleted. */
export async function closeKeystore(): Promise<void> {
  if (opening !== null) (await opening).close();
  opening = null;
}

export async function saveKeyPair(username: string, keys: KeyPair): Promise<void> {
  const record: StoredKeyPair = {
    username,
    publicKey: toBase64(keys.publicKey),
    privateKey: toBase64(keys.secretKey),
  };
  await done((await store(KEYS, "readwrite")).put(record));
}

export async function loadKeyPair(username: string): Promise<KeyPair | null> {
  const record = (await done((await store(KEYS, "readonly")).get(username))) as
    | StoredKeyPair
    | undefined;
  return record === undefined ? null : keyPairFromSecret(fromBase64(record.privateKey));
}

export async function listContacts(owner: string): Promise<Contact[]> {
  const index = (await store(CONTACTS, "readonly")).index("owner");
  const contacts = (await done(index.getAll(owner))) as Contact[];
  return contacts.sort((a, b) => a.pinnedAt - b.pinnedAt);
}

export async function loadContact(owner: string, username: string): Promise<Contact | null> {
  const found = await done((await store(CONTACTS, "readonly")).get([owner, username]));
  return (found as Contact | undefined) ?? null;
}

export async function saveContact(contact: Contact): Promise<void> {
  await done((await store(CONTACTS, "readwrite")).put(contact));
}

export type KeyObservation = "pinned" | "same" | "changed";

/**
 * What a key the master just gave means for the contact (pure): pinned on first use, the
 * same, or changed (kept aside in `changedKey`; the pinned key stays in use).
 */
export function observeKey(
  owner: string,
  username: string,
  known: Contact | null,
  publicKey: string,
  now: number,
): { contact: Contact; observation: KeyObservation } {
  if (known === null) {
    return {
      contact: { owner, username, publicKey, pinnedAt: now, changedKey: null },
      observation: "pinned",
    };
  }
  if (known.publicKey === publicKey) {
    return { contact: { ...known, changedKey: null }, observation: "same" };
  }
  return { contact: { ...known, changedKey: publicKey }, observation: "changed" };
}

/** The user has checked the new key: it becomes the pinned one. */
export function trustChangedKey(contact: Contact, now: number): Contact {
  if (contact.changedKey === null) return contact;
  return { ...contact, publicKey: contact.changedKey, changedKey: null, pinnedAt: now };
}
