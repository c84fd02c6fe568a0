import { type FormEvent, useId, useState } from "react";
import { describeError } from "../../../lib/api";
import { downloadKeyFile } from "../../auth/download";
import { ContactList } from "../../contacts/components/ContactList";
import { KeyChangeAlerts } from "../../contacts/components/KeyChangeAlerts";
import { Conversation } from "../../conversation/components/Conversation";
import { StatusLines } from "../../status/components/StatusLines";
import { useChat, useSession } from "../useChat";

interface Props {
  onLogOut(): void;
}

export function MainScreen({ onLogOut }: Props) {
  const session = useSession();
  const { me, notice, sessionEnded } = useChat();
  return (
    <div className="main-screen">
      <header className="top">
        <h1>kuno</h1>
        <span className="me">{me}</span>
        <StatusLines />
        <div className="actions">
          <button type="button" className="secondary" onClick={() => downloadKeyFile(session.exportKey())}>
            Export key
          </button>
          <button type="button" className="secondary" onClick={onLogOut}>
            Log out
          </button>
        </div>
      </header>
      {notice && (
        <div role="alert" className="notice">
          <span>{notice}</span>
          <button type="button" className="secondary" onClick={() => session.dismissNotice()}>
            Dismiss
          </button>
        </div>
      )}
      <KeyChangeAlerts />
      {sessionEnded && <Relogin />}
      <main className="panes">
        <ContactList />
        <Conversation />
      </main>
    </div>
  );
}

/** The session ran out (the master's limit): the password again, and everything stays. */
function Relogin() {
  const session = useSession();
  const { me } = useChat();
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const id = useId();

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setError(null);
    try {
      await session.relogin(password);
      setPassword("");
    } catch (caught) {
      setError(describeError(caught));
    }
  }

  return (
    <section className="relogin" aria-label="Session ended">
      <form onSubmit={submit}>
        <p>Your session has ended. Enter your password to go on.</p>
        {/* For password managers: which account this password is for. */}
        <input type="text" name="username" autoComplete="username" value={me} readOnly hidden />
        <label htmlFor={id}>Password</label>
        <input
          id={id}
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        <button type="submit">Log in</button>
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
      </form>
    </section>
  );
}
