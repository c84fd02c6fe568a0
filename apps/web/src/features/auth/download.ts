import type { KeyFile } from "../../lib/crypto";

/** Save the key pair as key.json, the CLI's format (a download: nothing leaves the browser). */
export function downloadKeyFile(file: KeyFile): void {
  const blob = new Blob([JSON.stringify(file, null, 2) + "\n"], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = "key.json";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
