import { useChat } from "../../chat/useChat";
import { nodesText } from "../../chat/model";

/** Which storage nodes answered the last retrieval, and the live connection's state. */
export function StatusLines() {
  const { nodes, connection } = useChat();
  return (
    <div className="status-lines">
      <p role="status" aria-label="Connection" className={`connection ${connection}`}>
        {connection}
      </p>
      <p role="status" aria-label="Storage nodes" className="nodes">
        {nodesText(nodes)}
      </p>
    </div>
  );
}
