// A producer whose state is kept in a file, "restarted" mid-stream: `first` appends and exits
// abruptly with appends in flight; `second`, a new process with the same state file, goes on.
// usage: durable.ts <session id> <state file> first|second <appends>

import { readFileSync, writeFileSync } from "node:fs";

import { Client, type WebStorage, webStorageStore } from "starcite";

import { pipelined, progress, result, url } from "./program.js";

const [sessionId, stateFile, phase, count] = process.argv.slice(2) as [string, string, string, string];
const appends = Number(count);

// Web Storage (`localStorage`'s interface) kept in one JSON file, behind `webStorageStore`
// exactly as a page would use `localStorage`.
const fileStorage: WebStorage = {
  getItem(key) {
    try {
      return (JSON.parse(readFileSync(stateFile, "utf8")) as Record<string, string>)[key] ?? null;
    } catch {
      return null;
    }
  },
  setItem(key, value) {
    writeFileSync(stateFile, JSON.stringify({ [key]: value }));
  },
};

const client = new Client(url);
const producer = client.session(sessionId).producer("agent", { state: webStorageStore(fileStorage) });
const acks: { producer_seq: number; seq: number; payload: string }[] = [];
const appending = pipelined(appends, 32, async (index) => {
  const payload = `${phase} ${index}`;
  const ack = await producer.append({ type: "message", payload: { text: payload }, actor: "agent:durable" });
  acks.push({ producer_seq: ack.producerSeq, seq: ack.seq, payload });
  progress(acks.length);
  if (phase === "first" && acks.length === appends / 2) {
    // A crash: appends still in flight, no close.
    result({ acks });
    process.exit(0);
  }
});
await appending;
await producer.close();
result({ acks });
