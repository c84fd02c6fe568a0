import { useChat, useSession } from "../../chat/useChat";

/** One alert per contact whose key changed: nothing is sent to or read with the new key
 * until the user trusts it. */
export function KeyChangeAlerts() {
  const session = useSession();
  const { contacts } = useChat();
  const changed = contacts.filter((c) => c.changedKey !== null);
  if (changed.length === 0) return null;
  return (
    <div className="key-alerts">
      {changed.map((contact) => (
        <div role="alert" className="key-alert" key={contact.username}>
          <p>
            <strong>{contact.username}'s key changed.</strong> This can mean a new device, or
            someone pretending to be {contact.username}. Check with them another way before
            trusting it; until then nothing is sent to the new key and its messages stay
            unread.
          </p>
          <p className="fingerprints">
            Pinned key <code>{contact.publicKey}</code>
            <br />
            New key <code>{contact.changedKey}</code>
          </p>
          <button type="button" onClick={() => void session.trustNewKey(contact.username)}>
            Trust new key
          </button>
        </div>
      ))}
    </div>
  );
}
