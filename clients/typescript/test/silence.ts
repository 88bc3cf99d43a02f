// A tail whose connection goes silent without closing (the gateway behind it frozen) notices
// after `idleTimeoutMs` and reconnects. usage: silence.ts <session id> <idle timeout ms>
// Prints `progress 1` once it has event 1, and the seqs it tailed once it has event 2.

import { Client, Gap } from "starcite";

import { progress, result, url } from "./program.js";

const [sessionId, idleTimeoutMs] = process.argv.slice(2) as [string, string];
const client = new Client(url, { idleTimeoutMs: Number(idleTimeoutMs), backoff: { maxMs: 500 } });
const tailed: number[] = [];
for await (const item of client.session(sessionId).tail()) {
  if (item instanceof Gap) continue;
  tailed.push(item.seq);
  progress(item.seq);
  if (item.seq === 2) break;
}
result({ tailed });
