// 1,000 appends through one producer, several in flight, while a WebSocket tail and an SSE tail
// read the session; the Rust test cuts links and restarts the gateway meanwhile.
// Result: each call's `{producer_seq, seq}` in call order, and the seqs each tail yielded.

import { Client, Gap, type TailEvent } from "starcite";

import { pipelined, progress, result, url } from "./program.js";

const APPENDS = 1_000;
const client = new Client(url);
const session = client.session((await client.createSession({ title: "recovery" })).id);

async function read(transport: "websocket" | "sse"): Promise<(number | string)[]> {
  const reader = new Client(url, { transport });
  const seen: (number | string)[] = [];
  for await (const item of reader.session(session.id).tail({ batchSize: 50 })) {
    seen.push(item instanceof Gap ? `gap ${item.reason}` : (item as TailEvent).seq);
    if (!(item instanceof Gap) && item.seq >= APPENDS) break;
  }
  return seen;
}

const tails = Promise.all([read("websocket"), read("sse")]);
const producer = session.producer("writer");
let acknowledged = 0;
const acks = await pipelined(APPENDS, 16, async (index) => {
  const ack = await producer.append({ type: "message", payload: { call: index }, actor: "agent:writer" });
  acknowledged += 1;
  progress(acknowledged);
  return { producer_seq: ack.producerSeq, seq: ack.seq, deduped: ack.deduped };
});
await producer.close();
const [websocket, sse] = await tails;
result({ session: session.id, acks, websocket, sse });
