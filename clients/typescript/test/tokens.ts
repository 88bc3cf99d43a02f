// Authentication: refusals as `Unauthorized` and `Forbidden`, and a tail that outlives its
// short-lived tokens by asking the callback for fresh ones (close code 4001, or a 401).
// usage: tokens.ts <token endpoint>; `<endpoint>?scope=…` answers a fresh token as text.

import { Client, Gap, StarciteError } from "starcite";

import { result, url } from "./program.js";

const endpoint = process.argv[2] ?? "";
const ALL = "session:create session:read session:append";
let fetched = 0;
const tokenFor = (scope: string) => async () => {
  fetched += 1;
  const response = await fetch(`${endpoint}?scope=${encodeURIComponent(scope)}`);
  return response.text();
};

const outcomes: Record<string, unknown> = {};
async function refusal(name: string, attempt: () => Promise<unknown>): Promise<void> {
  try {
    await attempt();
    outcomes[name] = "no error";
  } catch (error) {
    outcomes[name] =
      error instanceof StarciteError ? { class: error.constructor.name, code: error.code } : String(error);
  }
}

const client = new Client(url, { token: tokenFor(ALL) });
const session = client.session((await client.createSession({ title: "tokens" })).id);

await refusal("no_token", () => new Client(url).session(session.id).get());
const reader = new Client(url, { token: tokenFor("session:read") });
await refusal("create_without_scope", () => reader.createSession());
await refusal("produce_without_scope", async () => {
  const producer = reader.session(session.id).producer("reader");
  try {
    await producer.append({ type: "message", payload: {} });
  } finally {
    await producer.close();
  }
});

const tailed: number[] = [];
let seen: () => void = () => undefined;
const tailing = (async () => {
  for await (const item of session.tail()) {
    if (item instanceof Gap) continue;
    tailed.push(item.seq);
    seen();
    if (item.seq === 2) return;
  }
})();
const until = (count: number) =>
  new Promise<void>((resolve) => {
    seen = () => tailed.length >= count && resolve();
    seen();
  });

const append = async (text: string) => {
  const producer = session.producer("writer");
  await producer.append({ type: "message", payload: { text } });
  await producer.close();
};
await append("before");
await until(1);
// Only the tail is open now: each token it is given expires within seconds, and every fetch
// from here is the tail asking for a fresh one.
const before = fetched;
while (fetched < before + 2) await new Promise((resolve) => setTimeout(resolve, 50));
const refreshesByTail = fetched - before;
await append("after");
await until(2);
await tailing;
result({ outcomes, tailed, refreshes_by_tail: refreshesByTail });
