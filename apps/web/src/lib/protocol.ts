/**
 * The WebSocket frames between the page and the master (apps/common/protocol.py; `python -m
 * kuno.common.protocol` prints their JSON Schema). Only lib/api.ts builds and reads frames.
 */

export interface AuthFrame {
  type: "auth";
  token: string;
}
export interface SendFrame {
  type: "send";
  id: string;
  to: string;
  ciphertext: string;
  nonce: string;
}
export interface ReceivedFrame {
  type: "received";
  id: string;
}
export interface RefreshFrame {
  type: "refresh";
  token: string;
}
export type ClientFrame = AuthFrame | SendFrame | ReceivedFrame | RefreshFrame;

export interface ReadyFrame {
  type: "ready";
  user: string;
}
/** A message pushed to its recipient; `seq` is the master's order of acceptance. */
export interface MessageFrame {
  type: "message";
  id: string;
  from: string;
  ciphertext: string;
  nonce: string;
  timestamp: number; // ms since the epoch, the master's clock
  seq: number;
}
/** A send settled: `stored` of `nodes` storage nodes hold it; `delivered` to an open socket. */
export interface AckFrame {
  type: "ack";
  id: string;
  delivered: boolean;
  stored: number;
  nodes: number;
  storage?: "disabled";
}
export interface RefreshedFrame {
  type: "refreshed";
  expiresAt: number; // ms since the epoch
}
/** A frame refused or a send failed; `id` null when the refused frame had none. */
export interface ErrorFrame {
  type: "error";
  id: string | null;
  reason: string;
}
export type ServerFrame = ReadyFrame | MessageFrame | AckFrame | RefreshedFrame | ErrorFrame;

/** The close code of a socket whose token expired: a fresh token, or log in again. */
export const TOKEN_EXPIRED_CLOSE = 4401;
/** The close code when the first frame's token was refused (WebSocket policy violation). */
export const POLICY_VIOLATION_CLOSE = 1008;

export class FrameError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "FrameError";
  }
}

type FieldType = "string" | "number" | "boolean" | "string|null";
const SERVER_FIELDS: Record<ServerFrame["type"], Record<string, FieldType>> = {
  ready: { user: "string" },
  message: {
    id: "string",
    from: "string",
    ciphertext: "string",
    nonce: "string",
    timestamp: "number",
    seq: "number",
  },
  ack: { id: "string", delivered: "boolean", stored: "number", nodes: "number" },
  refreshed: { expiresAt: "number" },
  error: { id: "string|null", reason: "string" },
};

function fits(value: unknown, type: FieldType): boolean {
  if (type === "string|null") return value === null || typeof value === "string";
  if (type === "number") return typeof value === "number" && Number.isInteger(value);
  return typeof value === type;
}

/** One frame from the master, checked field by field; FrameError naming the first problem. */
export function parseServerFrame(text: string): ServerFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError("the frame is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FrameError("the frame must be a JSON object");
  }
  const frame = value as Record<string, unknown>;
  const type = frame.type;
  if (typeof type !== "string" || !Object.hasOwn(SERVER_FIELDS, type)) {
    throw new FrameError(`unknown frame type ${JSON.stringify(type)}`);
  }
  for (const [field, fieldType] of Object.entries(SERVER_FIELDS[type as ServerFrame["type"]])) {
    if (!fits(frame[field], fieldType)) {
      throw new FrameError(`${type}.${field} must be ${fieldType}`);
    }
  }
  if (type === "ack" && frame.storage !== undefined && frame.storage !== "disabled") {
    throw new FrameError('ack.storage must be "disabled" when present');
  }
  return frame as unknown as ServerFrame;
}

export function serialise(frame: ClientFrame): string {
  return JSON.stringify(frame);
}
