import { createContext, useContext, useSyncExternalStore } from "react";
import type { ChatState } from "./model";
import type { ChatSession } from "./session";

export const ChatContext = createContext<ChatSession | null>(null);

export function useSession(): ChatSession {
  const session = useContext(ChatContext);
  if (session === null) throw new Error("useSession outside <ChatContext.Provider>");
  return session;
}

/** The chat's state, re-rendered on each change. */
export function useChat(): ChatState {
  const session = useSession();
  return useSyncExternalStore(session.subscribe, session.getState);
}
