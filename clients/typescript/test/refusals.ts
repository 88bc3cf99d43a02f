// Each refusal that retrying cannot fix is its typed error, and a producer refused once goes on
// with its next append; then the catalog calls and the lifecycle feed, resumed from a cursor.
// Result: for each case, the error's class, code and status, and what the catalog answered.

import {
  Client,
  ExpectedSeqConflict,
  ExpectedVersionConflict,
  InvalidEvent,
  NotFound,
  ProducerSeqConflict,
  SessionExists,
  StarciteError,
} from "starcite";

import { result, url } from "./program.js";

const client = new Client(url);
const session = client.session((await client.createSession({ title: "refusals" })).id);
const actor = "agent:refusals";
const outcomes: Record<string, unknown> = {};

async function refusal(name: string, expected: typeof StarciteError, attempt: () => Promise<unknown>): Promise<void> {
  try {
    await attempt();
    outcomes[name] = "no error";
  } catch (error) {
    const typed = error instanceof expected && error instanceof StarciteError;
    outcomes[name] = typed ? { class: error.constructor.name, code: error.code, status: error.status } : String(error);
  }
}

const producer = session.producer("writer");
await producer.append({ type: "message", payload: { n: 1 }, actor });
await refusal("expected_seq", ExpectedSeqConflict, () =>
  producer.append({ type: "message", payload: { n: 2 }, actor, expectedSeq: 0 }),
);
await refusal("invalid_event", InvalidEvent, () => producer.append({ type: "", payload: {}, actor }));
await refusal("invalid_refs", InvalidEvent, () =>
  producer.append({ type: "message", payload: {}, actor, refs: "nope" as unknown as Record<string, unknown> }),
);
// Connected again, then another writer takes this producer id's next numbers behind its back.
await producer.append({ type: "message", payload: { n: 2 }, actor });
const rival = client.session(session.id).producer("writer");
await rival.appendBatch([
  { type: "message", payload: { rival: 1 }, actor },
  { type: "message", payload: { rival: 2 }, actor },
]);
await rival.close();
await refusal("producer_seq", ProducerSeqConflict, () => producer.append({ type: "message", payload: { n: 3 }, actor }));
// Not wedged: the next call is numbered after what the gateway holds, and stored.
const after = await producer.append({ type: "message", payload: { n: 4 }, actor });
await producer.close();

const missing = client.session("no-such-session");
await refusal("get_missing", NotFound, () => missing.get());
await refusal("append_missing", NotFound, async () => {
  const orphan = missing.producer("writer");
  try {
    await orphan.append({ type: "message", payload: {}, actor });
  } finally {
    await orphan.close();
  }
});
await refusal("tail_missing", NotFound, async () => {
  for await (const _ of missing.tail()) break;
});
await refusal("patch_version", ExpectedVersionConflict, () => session.patch({ title: "late", expectedVersion: 7 }));
await refusal("session_exists", SessionExists, () => client.createSession({ id: session.id }));
await refusal("invalid_cursor", InvalidEvent, () => session.events({ cursor: -1 }));

// Nothing listens on port 1: the client retries until the caller's deadline, then says so.
try {
  await new Client("http://127.0.0.1:1").session(session.id).get({ signal: AbortSignal.timeout(500) });
  outcomes.deadline = "no error";
} catch (error) {
  outcomes.deadline = (error as Error).name;
}

const patched = await session.patch({ title: "renamed", metadata: { stage: "review" }, expectedVersion: 1 });
const archived = await session.archive();
const listed = await client.listSessions({ archived: true, metadata: { stage: "review" } });
const kinds = async (cursor: number, count: number) => {
  const entries: { cursor: number; kind: string }[] = [];
  for await (const entry of client.lifecycle({ cursor })) {
    if (entry.event.session_id !== session.id) continue;
    entries.push({ cursor: entry.cursor, kind: entry.event.kind });
    if (entries.length === count) return entries;
  }
  return entries;
};
const lifecycle = await kinds(0, 3);
const resumed = await kinds(lifecycle[0]?.cursor ?? 0, 2);
result({
  outcomes,
  after: { seq: after.seq, producer_seq: after.producerSeq },
  patched: { title: patched.title, version: patched.version, archived: archived.archived },
  listed: listed.sessions.map((info) => [info.id === session.id, info.archived]),
  lifecycle: lifecycle.map((entry) => entry.kind),
  resumed: resumed.map((entry) => entry.kind),
});
