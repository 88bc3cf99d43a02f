// Unit tests of the SDK's pure parts (run by `tsx --test`, from the Rust e2e suite): WebSocket
// frames, Server-Sent Events parsing, and the order a tail accepts events in.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Gap, TailFeed } from "../src/session.js";
import { openEventStream, type SocketEnd } from "../src/socket.js";
import { FrameReader } from "../src/websocket.js";

/** A server frame: unmasked, or masked with `mask`. */
function frame(final: boolean, opcode: number, payload: Buffer, mask?: Buffer): Buffer {
  const length = payload.length;
  const extra = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const header = Buffer.alloc(2 + extra);
  header[0] = (final ? 0x80 : 0) | opcode;
  header[1] = (mask ? 0x80 : 0) | (extra === 0 ? length : extra === 2 ? 126 : 127);
  if (extra === 2) header.writeUInt16BE(length, 2);
  if (extra === 8) header.writeBigUInt64BE(BigInt(length), 2);
  if (!mask) return Buffer.concat([header, payload]);
  const masked = Buffer.from(payload.map((byte, index) => byte ^ (mask[index & 3] as number)));
  return Buffer.concat([header, mask, masked]);
}

test("frames split anywhere, fragmented, long or masked are read whole and in order", () => {
  const delivered: [number, string][] = [];
  const reader = new FrameReader((opcode, payload) => delivered.push([opcode, payload.toString()]));
  const long = "x".repeat(70_000);
  const stream = Buffer.concat([
    frame(false, 0x1, Buffer.from("hel")),
    frame(true, 0x9, Buffer.from("ping")),
    frame(true, 0x0, Buffer.from("lo")),
    frame(true, 0x1, Buffer.from(long)),
    frame(true, 0x1, Buffer.from("masked"), Buffer.from([1, 2, 3, 4])),
  ]);
  for (const byte of stream) assert.equal(reader.push(Buffer.from([byte])), true);
  assert.deepEqual(delivered, [
    [0x9, "ping"],
    [0x1, "hello"],
    [0x1, long],
    [0x1, "masked"],
  ]);
});

test("a continuation without a first fragment breaks the protocol", () => {
  const reader = new FrameReader(() => undefined);
  assert.equal(reader.push(frame(true, 0x0, Buffer.from("orphan"))), false);
});

test("an event stream's messages, comments and last message come through as a socket's", async () => {
  const chunks = [
    ": keep-alive\r\n\r\nid: 1\r\ndata: {\"seq\"",
    ":1}\n\nevent: gap\ndata: {\"reason\":\"cursor_expired\"}\n\n",
    "data: line one\ndata: line two\n\nevent: token_expired\ndata: {}\n\n",
  ];
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
  const fetchStream = (async () => new Response(body, { status: 200 })) as typeof fetch;
  const seen: string[] = [];
  const end = await new Promise<SocketEnd>((resolve) => {
    openEventStream(fetchStream, "http://gateway.test/tail", undefined, {
      onOpen: () => seen.push("open"),
      onMessage: (text) => seen.push(text),
      onActivity: () => seen.push("activity"),
      onEnd: resolve,
    });
  });
  assert.deepEqual(seen, [
    "open",
    "activity",
    '{"seq":1}',
    '{"reason":"cursor_expired"}',
    "line one\nline two",
  ]);
  assert.deepEqual(end, { code: 4001 });
});

test("a tail takes each next event once, a gap moves it, and a hole makes it reconnect", () => {
  const feed = new TailFeed("/v1/sessions/s/tail", { cursor: 2 });
  const event = (seq: number) => ({ seq });
  const seqs = (items: unknown[]) => items.map((item) => (item instanceof Gap ? `gap ${item.nextCursor}` : (item as { seq: number }).seq));

  const replayed = feed.take([event(2), event(3), event(4)]);
  assert.deepEqual([seqs(replayed.items), replayed.intact], [[3, 4], true]);
  const gap = { type: "gap", reason: "cursor_expired", from_cursor: 4, next_cursor: 9, earliest_available_cursor: 9, committed_cursor: 10 };
  // A gap is a frame of its own, before the events it skips to.
  const announced = feed.take(gap);
  const skipped = feed.take([event(10)]);
  assert.deepEqual([seqs([...announced.items, ...skipped.items]), skipped.intact], [["gap 9", 10], true]);
  const holed = feed.take([event(11), event(13)]);
  assert.deepEqual([seqs(holed.items), holed.intact], [[11], false]);
  assert.deepEqual(feed.query(), { cursor: 11, batch_size: 100 });
});
