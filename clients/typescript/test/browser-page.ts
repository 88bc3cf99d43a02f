// The page of the browser test, bundled with esbuild for the browser (the package's `browser`
// entry, the platform's WebSocket): it tails `?session=` on `?gateway=` and lists what it
// receives in `window.tailed` (seqs, or `gap <reason>`) and failures in `window.failures`.

import { Client, Gap } from "starcite";

declare global {
  interface Window {
    tailed: (number | string)[];
    failures: string[];
  }
}

window.tailed = [];
window.failures = [];
const query = new URLSearchParams(location.search);
const client = new Client(query.get("gateway") ?? "", { backoff: { maxMs: 1_000 } });
try {
  for await (const item of client.session(query.get("session") ?? "").tail()) {
    window.tailed.push(item instanceof Gap ? `gap ${item.reason}` : item.seq);
  }
} catch (error) {
  window.failures.push(String(error));
}
