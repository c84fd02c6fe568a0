import { useEffect, useState } from "react";
import { StorageNodes, describeError, loadConfig } from "../lib/api";
import { LoginScreen } from "../features/auth/components/LoginScreen";
import type { SignedIn } from "../features/auth/signIn";
import { MainScreen } from "../features/chat/components/MainScreen";
import { ChatSession } from "../features/chat/session";
import { ChatContext } from "../features/chat/useChat";

export function App() {
  const [session, setSession] = useState<ChatSession | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    // start() runs once per session (StrictMode's second effect run is a no-op there);
    // the session stops at "Log out", never on a re-render.
    if (session !== null) void session.start().catch((caught: unknown) => setError(describeError(caught)));
  }, [session]);

  async function signedIn({ master, keys }: SignedIn) {
    try {
      const nodes = await loadConfig();
      setError(null);
      setSession(new ChatSession(master, keys, new StorageNodes(nodes, master)));
    } catch (caught) {
      master.stop();
      setError(describeError(caught));
    }
  }

  function logOut() {
    session?.stop();
    setSession(null);
  }

  if (session === null) {
    return <LoginScreen onSignedIn={(s) => void signedIn(s)} error={error} />;
  }
  return (
    <ChatContext.Provider value={session}>
      <MainScreen onLogOut={logOut} />
    </ChatContext.Provider>
  );
}
