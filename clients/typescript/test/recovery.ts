// 1,000 events appended through one producer, several calls in flight, while a WebSocket tail
// and an SSE tail read the session; the Rust test cuts links and restarts the gateway meanwhile.
// Result: each event's `{producer_seq, seq, payload}` in call order, and the seqs each tail
// yielded.

import { Client, Gap, type TailEvent } from "starcite";

import { pipelined, progress, result, url } from "./program.js";

const EVENTS = 1_000;
const client = new Client(url);
const session = client.session((await client.createSession({ title: "recovery" })).id);

async function read(transport: "websocket" | "sse"): Promise<(number | string)[]> {
  const reader = new Client(url, { transport });
  const seen: (number | string)[] = [];
  for await (const item of reader.session(session.id).tail({ batchSize: 50 })) {
    seen.push(item instanceof Gap ? `gap ${item.reason}` : (item as TailEvent).seq);
    if (!(item instanceof Gap) && item.seq >= EVENTS) break;
  }
  return seen;
}

const tails = Promise.all([read("websocket"), read("sse")]);
const producer = session.producer("writer");
// 950 calls: every 19th a batch of two events, the others single appends; 1,000 events.
const CALLS = 950;
let acknowledged = 0;
const calls = await pipelined(CALLS, 16, async (call) => {
  const payloads = call % 19 === 18 ? [{ call, part: 0 }, { call, part: 1 }] : [{ call, part: 0 }];
  const events = payloads.map((payload) => ({ type: "message", payload, actor: "agent:writer" }));
  const acks = payloads.length === 1 ? [await producer.append(events[0]!)] : await producer.appendBatch(events);
  acknowledged += acks.length;
  progress(acknowledged);
  return acks.map((ack, index) => ({ producer_seq: ack.producerSeq, seq: ack.seq, payload: payloads[index] }));
});
await producer.close();
const [websocket, sse] = await tails;
result({ session: session.id, acks: calls.flat(), websocket, sse });
