import { type FormEvent, useId, useRef, useState } from "react";
import { describeError } from "../../../lib/api";
import { loadKeyPair } from "../../../lib/keystore";
import { NoKeyHere, type SignedIn, importKeyFile, logIn, register } from "../signIn";

interface Props {
  onSignedIn(signedIn: SignedIn): void;
  error?: string | null; // from after the sign-in (e.g. /config.json unreachable)
}

type Action = "login" | "register";

export function LoginScreen({ onSignedIn, error: after = null }: Props) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [importing, setImporting] = useState(false);
  const waiting = useRef<NoKeyHere | null>(null); // logged in, waiting for the key file
  const action = useRef<Action>("login");
  const ids = { user: useId(), password: useId(), file: useId() };

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const chosen = action.current;
    if (username.trim() === "" || password === "") {
      setError("Enter a username and a password");
      return;
    }
    // A login still waiting for its key file is given up: its token is not kept.
    waiting.current?.master.stop();
    waiting.current = null;
    setBusy(true);
    setError(null);
    setInfo(null);
    try {
      onSignedIn(chosen === "register" ? await register(username.trim(), password) : await logIn(username.trim(), password));
    } catch (caught) {
      if (caught instanceof NoKeyHere) {
        waiting.current = caught;
        setImporting(true);
        setError(caught.message);
      } else {
        setError(describeError(caught));
      }
    } finally {
      setBusy(false);
    }
  }

  async function chooseFile(files: FileList | null) {
    const file = files?.[0];
    if (file === undefined) return;
    setError(null);
    try {
      const pending = waiting.current;
      const userId = await importKeyFile(await file.text(), pending?.username ?? null);
      if (pending !== null) {
        const keys = await loadKeyPair(userId);
        if (keys !== null) {
          waiting.current = null;
          onSignedIn({ master: pending.master, keys });
          return;
        }
      }
      setInfo(`Key for ${userId} imported; log in to go on`);
      if (username === "") setUsername(userId);
    } catch (caught) {
      setError(`That key file cannot be used: ${describeError(caught)}`);
    }
  }

  return (
    <main className="login">
      <h1>kuno</h1>
      <p className="tagline">End-to-end encrypted messages. Your key stays in this browser.</p>
      <form onSubmit={submit} className="login-form" aria-describedby={error ? "login-error" : undefined}>
        <label htmlFor={ids.user}>Username</label>
        <input
          id={ids.user}
          name="username"
          autoComplete="username"
          autoCapitalize="none"
          spellCheck={false}
          value={username}
          onChange={(e) => setUsername(e.target.value)}
        />
        <label htmlFor={ids.password}>Password</label>
        <input
          id={ids.password}
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        <div className="buttons">
          <button type="submit" disabled={busy} onClick={() => (action.current = "login")}>
            Log in
          </button>
          <button
            type="submit"
            className="secondary"
            disabled={busy}
            onClick={() => (action.current = "register")}
          >
            Register
          </button>
          <button type="button" className="secondary" onClick={() => setImporting(true)}>
            Import key
          </button>
        </div>
        {importing && (
          <div className="import">
            <label htmlFor={ids.file}>Key file</label>
            <input
              id={ids.file}
              type="file"
              accept="application/json,.json"
              onChange={(e) => void chooseFile(e.target.files)}
            />
          </div>
        )}
        {busy && <p className="muted">Working…</p>}
        <div role="alert" id="login-error" className="error">
          {error ?? after}
        </div>
        <div role="status" className="info">
          {info}
        </div>
      </form>
    </main>
  );
}
