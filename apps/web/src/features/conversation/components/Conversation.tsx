import { type FormEvent, type KeyboardEvent, useEffect, useId, useRef, useState } from "react";
import { describeError } from "../../../lib/api";
import { useChat, useSession } from "../../chat/useChat";
import { MessageItem } from "./MessageItem";

export function Conversation() {
  const session = useSession();
  const { selected, conversations, contacts } = useChat();
  const contact = contacts.find((c) => c.username === selected);
  const log = useRef<HTMLDivElement>(null);
  const entries = selected === null ? [] : (conversations[selected] ?? []);

  useEffect(() => {
    // Follow the newest message, as a chat does.
    const element = log.current;
    if (element !== null) element.scrollTop = element.scrollHeight;
  }, [entries.length, selected]);

  if (selected === null) {
    return (
      <section className="conversation empty" aria-label="Conversation">
        <p className="muted">Choose a contact, or add one, to start a conversation.</p>
      </section>
    );
  }
  return (
    <section className="conversation" aria-label={`Chat with ${selected}`}>
      <h2>{selected}</h2>
      <div role="log" aria-label={`Conversation with ${selected}`} className="log" ref={log} tabIndex={0}>
        {entries.length === 0 && <p className="muted">No messages yet.</p>}
        {entries.map((entry) => (
          <MessageItem key={entry.id} entry={entry} onRetry={(id) => void session.retry(selected, id)} />
        ))}
      </div>
      <Composer key={selected} trusted={contact?.changedKey == null} />
    </section>
  );
}

function Composer({ trusted }: { trusted: boolean }) {
  const session = useSession();
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const id = useId();

  useEffect(() => {
    if (trusted) setError(null); // the refusal for an untrusted key no longer holds
  }, [trusted]);

  function send() {
    if (text.trim() === "") return;
    setError(null);
    const sending = text;
    setText("");
    session.send(sending).catch((caught: unknown) => {
      setText(sending);
      setError(describeError(caught));
    });
  }

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    send();
  }

  function keyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    // Enter sends; Shift+Enter is a new line (and Enter while composing text with an IME).
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      send();
    }
  }

  return (
    <form className="composer" onSubmit={submit}>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      <label htmlFor={id} className="visually-hidden">
        Message
      </label>
      <textarea
        id={id}
        rows={2}
        placeholder="Message"
        value={text}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={keyDown}
      />
      <button type="submit">Send</button>
    </form>
  );
}
