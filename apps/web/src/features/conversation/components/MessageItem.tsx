import { type Entry, stateText } from "../../chat/model";
import { UNDECRYPTABLE } from "../../chat/session";

const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

interface Props {
  entry: Entry;
  onRetry(id: string): void;
}

export function MessageItem({ entry, onRetry }: Props) {
  if (entry.kind === "sent") {
    return (
      <article className={`message own ${entry.state}`}>
        <p className="text">{entry.text}</p>
        <p className="meta">
          <span className="who">you</span>
          <time dateTime={new Date(entry.at).toISOString()}>{time.format(entry.at)}</time>
          <span className="state">{stateText(entry)}</span>
        </p>
        {entry.state === "failed" && (
          <p className="failure">
            <span>{entry.reason}</span>
            <button type="button" onClick={() => onRetry(entry.id)}>
              Retry
            </button>
          </p>
        )}
      </article>
    );
  }
  let body;
  if (entry.text !== null) {
    body = <p className="text">{entry.text}</p>;
  } else if (entry.held !== null) {
    body = (
      <p className="text held">
        Message held: {entry.from}'s key changed. Trust the new key to read it.
      </p>
    );
  } else {
    body = (
      <p className="text undecryptable">
        {UNDECRYPTABLE} <span className="reason">({entry.reason})</span>
      </p>
    );
  }
  return (
    <article className="message theirs">
      {body}
      <p className="meta">
        <span className="who">{entry.from}</span>
        <time dateTime={new Date(entry.timestamp).toISOString()}>{time.format(entry.timestamp)}</time>
      </p>
    </article>
  );
}
