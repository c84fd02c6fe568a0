/**
 * Register, log in and import a key: what the login screen does, in order, through
 * lib/api.ts (the master) and lib/keystore.ts (this browser's key pair).
 */
import { Master } from "../../lib/api";
import { type KeyPair, generateKeyPair, parseKeyFile, publicKeyB64 } from "../../lib/crypto";
import { loadKeyPair, saveKeyPair } from "../../lib/keystore";

export interface SignedIn {
  master: Master;
  keys: KeyPair;
}

/** Logged in, but this browser has no key pair for the user: import the key file. */
export class NoKeyHere extends Error {
  constructor(
    readonly username: string,
    readonly master: Master,
  ) {
    super(`This browser has no key for ${username}: press "Import key" and choose your key.json`);
    this.name = "NoKeyHere";
  }
}

export async function logIn(username: string, password: string): Promise<SignedIn> {
  const master = new Master();
  const userId = await master.login(username, password);
  const keys = await loadKeyPair(userId);
  if (keys === null) throw new NoKeyHere(userId, master);
  return { master, keys };
}

/** A key pair made here, registered with its public key, kept in this browser, logged in. */
export async function register(username: string, password: string): Promise<SignedIn> {
  const master = new Master();
  const keys = generateKeyPair();
  const userId = await master.register(username, password, publicKeyB64(keys));
  await saveKeyPair(userId, keys);
  await master.login(userId, password);
  return { master, keys };
}

/** Keep an imported key file's key pair for its user; returns that user id. */
export async function importKeyFile(text: string, expected: string | null): Promise<string> {
  const { username, keys } = parseKeyFile(text);
  const userId = username.toLowerCase();
  if (expected !== null && userId !== expected) {
    throw new Error(`This key file is ${userId}'s, not ${expected}'s`);
  }
  await saveKeyPair(userId, keys);
  return userId;
}
