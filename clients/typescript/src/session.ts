// One session: its header, its producers and its tails.

import { StarciteError } from "./errors.js";
import type { components } from "./generated/schema.js";
import { type Feed, follow, type LiveContext } from "./live.js";
import { Producer, type ProducerOptions } from "./producer.js";

export type SessionInfo = components["schemas"]["SessionBody"];
export type TailEvent = components["schemas"]["EventBody"];
export type EventPage = components["schemas"]["EventPageBody"];
type GapBody = components["schemas"]["GapBody"];

/**
 * A tail could not continue right after its cursor: retention dropped events
 * (`cursor_expired`), or the cursor was past the session's head (`resume_invalidated`).
 * Delivery goes on after `nextCursor`.
 */
export class Gap {
  readonly reason: string;
  readonly fromCursor: number;
  readonly nextCursor: number;
  readonly earliestAvailableCursor: number;
  readonly committedCursor: number;

  constructor(body: GapBody) {
    this.reason = body.reason;
    this.fromCursor = body.from_cursor;
    this.nextCursor = body.next_cursor;
    this.earliestAvailableCursor = body.earliest_available_cursor;
    this.committedCursor = body.committed_cursor;
  }
}

export interface TailOptions {
  /** Deliver the events after this seq (0 by default: all of them). */
  cursor?: number;
  /** Events per WebSocket frame, 1 to 1,000 (100 by default); delivery is one event at a time. */
  batchSize?: number;
  /** Ends the tail: the iteration throws the signal's reason. */
  signal?: AbortSignal;
}

export interface PatchOptions {
  title?: string | null;
  metadata?: Record<string, unknown>;
  /** Apply only if the session's `version` is this, else 409 `expected_version_conflict`. */
  expectedVersion?: number;
  signal?: AbortSignal;
}

export class Session {
  readonly id: string;
  readonly #context: LiveContext;

  constructor(context: LiveContext, id: string) {
    this.#context = context;
    this.id = id;
  }

  get(options: { signal?: AbortSignal } = {}): Promise<SessionInfo> {
    return this.#context.http.json("GET", this.#path(), options);
  }

  patch(options: PatchOptions): Promise<SessionInfo> {
    const body: Record<string, unknown> = {};
    if (options.title !== undefined) body.title = options.title;
    if (options.metadata !== undefined) body.metadata = options.metadata;
    if (options.expectedVersion !== undefined) body.expected_version = options.expectedVersion;
    return this.#context.http.json("PATCH", this.#path(), { body, signal: options.signal });
  }

  archive(options: { signal?: AbortSignal } = {}): Promise<SessionInfo> {
    return this.#context.http.json("POST", this.#path("/archive"), options);
  }

  unarchive(options: { signal?: AbortSignal } = {}): Promise<SessionInfo> {
    return this.#context.http.json("POST", this.#path("/unarchive"), options);
  }

  /** The producer `producerId` of this session; `close()` it when done. */
  producer(producerId: string, options: ProducerOptions = {}): Producer {
    return new Producer(this.#context, this.id, producerId, options);
  }

  /** One page of events after `cursor` (plain HTTP; `wait` seconds long-polls an empty page). */
  events(options: { cursor?: number; limit?: number; wait?: number; signal?: AbortSignal } = {}): Promise<EventPage> {
    const { signal, ...query } = options;
    return this.#context.http.json("GET", this.#path("/events"), { query, signal });
  }

  /**
   * Every event after `cursor` in seq order, then new ones live, forever: each once, a `Gap`
   * where the log cannot continue, and reconnection from the last event yielded.
   */
  tail(options: TailOptions = {}): AsyncGenerator<TailEvent | Gap> {
    return follow(this.#context, new TailFeed(this.#path("/tail"), options), options.signal);
  }

  #path(suffix = ""): string {
    return `/v1/sessions/${encodeURIComponent(this.id)}${suffix}`;
  }
}

export class TailFeed implements Feed<TailEvent | Gap> {
  readonly path: string;
  #cursor: number;
  readonly #batchSize: number;

  constructor(path: string, options: TailOptions) {
    this.path = path;
    this.#cursor = options.cursor ?? 0;
    this.#batchSize = options.batchSize ?? 100;
    if (!Number.isSafeInteger(this.#cursor) || this.#cursor < 0) {
      throw new StarciteError("invalid_cursor", 400, `cursor must be a seq, not ${options.cursor}`);
    }
  }

  query() {
    return { cursor: this.#cursor, batch_size: this.#batchSize };
  }

  take(frame: unknown): { items: (TailEvent | Gap)[]; intact: boolean } {
    const items: (TailEvent | Gap)[] = [];
    for (const entry of Array.isArray(frame) ? frame : [frame]) {
      if (isGap(entry)) {
        const gap = new Gap(entry);
        this.#cursor = gap.nextCursor;
        items.push(gap);
        continue;
      }
      const seq: unknown = (entry as TailEvent | undefined)?.seq;
      if (typeof seq !== "number") return { items, intact: false };
      if (seq <= this.#cursor) continue;
      // Never a silent hole: anything but the next seq means reading again from the cursor.
      if (seq !== this.#cursor + 1) return { items, intact: false };
      this.#cursor = seq;
      items.push(entry as TailEvent);
    }
    return { items, intact: true };
  }
}

function isGap(entry: unknown): entry is GapBody {
  return typeof entry === "object" && entry !== null && !("seq" in entry) && "from_cursor" in entry;
}
