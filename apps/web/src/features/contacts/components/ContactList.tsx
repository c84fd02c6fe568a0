import { type FormEvent, useId, useState } from "react";
import { describeError } from "../../../lib/api";
import { useChat, useSession } from "../../chat/useChat";

export function ContactList() {
  const session = useSession();
  const { contacts, selected } = useChat();
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const inputId = useId();

  async function add(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (name.trim() === "") return;
    setBusy(true);
    setError(null);
    try {
      await session.addContact(name);
      setName("");
    } catch (caught) {
      setError(describeError(caught));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-label="Contacts" className="contacts">
      <h2>Contacts</h2>
      <form onSubmit={add} className="add-contact">
        <label htmlFor={inputId} className="visually-hidden">
          Add contact
        </label>
        <input
          id={inputId}
          placeholder="Add contact"
          autoCapitalize="none"
          spellCheck={false}
          value={name}
          onChange={(e) => setName(e.target.value)}
        />
        <button type="submit" disabled={busy}>
          Add
        </button>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {contacts.length === 0 ? (
        <p className="muted">No contacts yet: add one by username.</p>
      ) : (
        <ul className="contact-list">
          {contacts.map((contact) => (
            <li key={contact.username}>
              <button
                type="button"
                className="contact"
                aria-current={contact.username === selected ? "true" : undefined}
                onClick={() => session.select(contact.username)}
              >
                <span className="name">{contact.username}</span>
                {contact.unread > 0 && <span className="badge">{contact.unread} new</span>}
                {contact.changedKey !== null && <span className="badge warn">key changed</span>}
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
