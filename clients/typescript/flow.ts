// Drives the generated TypeScript types (openapi-typescript + openapi-fetch) through create,
// append (with a deduped retry), list, patch and events against a live gateway.
// usage: tsx flow.ts <gateway base url>
import createClient from "openapi-fetch";
import type { paths } from "./generated/schema";

declare const process: { argv: string[]; exit(code: number): never };

function check(condition: boolean, what: string): void {
  if (!condition) {
    console.error(`typescript client flow failed: ${what}`);
    process.exit(1);
  }
}

const client = createClient<paths>({ baseUrl: process.argv[2] });
const sessionId = `ts-${Date.now()}-${Math.random().toString(16).slice(2)}`;
const path = { params: { path: { id: sessionId } } };

const created = await client.POST("/v1/sessions", {
  body: { id: sessionId, title: "From TypeScript", metadata: { client: "typescript" } },
});
check(created.response.status === 201 && created.data?.id === sessionId, "create");

const append = (producer_seq: number, text: string) =>
  client.POST("/v1/sessions/{id}/append", {
    ...path,
    body: { type: "message", payload: { text }, actor: "agent:ts", producer_id: "ts-writer", producer_seq },
  });
const first = await append(1, "hello");
check(first.data?.seq === 1 && first.data.deduped === false, "first append");
const retry = await append(1, "hello");
check(retry.data?.seq === 1 && retry.data.deduped === true, "deduped retry");
const second = await append(2, "world");
check(second.data?.seq === 2 && second.data.last_seq === 2, "second append");

const page = await client.GET("/v1/sessions", { params: { query: { limit: 1000 } } });
const listed = page.data?.sessions.filter((session) => session.id === sessionId) ?? [];
check(listed.length === 1 && listed[0].last_seq === 2, "listed with last_seq 2");

const patched = await client.PATCH("/v1/sessions/{id}", { ...path, body: { title: "Renamed", expected_version: 1 } });
check(patched.data?.title === "Renamed" && patched.data.version === 2, "patch");
const stale = await client.PATCH("/v1/sessions/{id}", { ...path, body: { title: "Late", expected_version: 1 } });
check(stale.response.status === 409 && stale.error?.error === "expected_version_conflict", "stale patch is a conflict");

const events = await client.GET("/v1/sessions/{id}/events", {
  params: { path: { id: sessionId }, query: { cursor: 0, limit: 10 } },
});
check(JSON.stringify(events.data?.events.map((event) => event.seq)) === "[1,2]", "events page");
check(events.data?.caught_up === true && events.data.events[1].payload.text === "world", "event payload");

console.log("typescript client flow: ok");
