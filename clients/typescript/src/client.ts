// The client of one gateway: sessions, the catalog and the lifecycle feed.

import type { BackoffOptions } from "./backoff.js";
import { refusal } from "./errors.js";
import type { components } from "./generated/schema.js";
import { Http, type TokenOption, Tokens } from "./http.js";
import { type Feed, follow, type LiveContext, type Transport } from "./live.js";
import { Session, type SessionInfo } from "./session.js";
import type { Platform } from "./socket.js";

type SessionPage = components["schemas"]["SessionPage"];

export interface ClientOptions {
  /** A bearer token, or a function returning one, asked again on a 401 or close code 4001. */
  token?: TokenOption;
  /** `fetch` to use (the global one by default). */
  fetch?: typeof fetch;
  /** Live streams over `"websocket"` (the default where there is one) or `"sse"`. */
  transport?: Transport;
  /** Delays between attempts while recovering. */
  backoff?: BackoffOptions;
  /** Silence after which a connection is presumed dead (see `Platform.idleTimeoutMs`). */
  idleTimeoutMs?: number;
}

export interface ListOptions {
  /** `false` (default): active sessions; `true`: archived ones; `"all"`: both. */
  archived?: boolean | "all";
  /** Only sessions whose metadata has each of these string values. */
  metadata?: Record<string, string>;
  /** The previous page's `nextCursor`. */
  cursor?: string;
  limit?: number;
  signal?: AbortSignal;
}

export interface SessionList {
  sessions: SessionInfo[];
  /** Pass as `cursor` for the next page; `null` on the last page. */
  nextCursor: string | null;
}

/** One change to a session header, at `cursor` in the lifecycle feed. */
export interface LifecycleEntry {
  cursor: number;
  event: {
    kind: "session.created" | "session.updated" | "session.archived" | "session.unarchived";
    session_id: string;
    [field: string]: unknown;
  };
}

/** The client for one gateway; the package's entry gives it the platform's WebSocket. */
export class Client {
  readonly #context: LiveContext;

  constructor(baseUrl: string, options: ClientOptions, platform: Platform) {
    const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#context = {
      http: new Http(baseUrl, new Tokens(options.token), options.backoff ?? {}, fetchImpl),
      platform: { ...platform, idleTimeoutMs: options.idleTimeoutMs ?? platform.idleTimeoutMs },
      fetch: fetchImpl,
      transport: options.transport ?? (platform.openWebSocket ? "websocket" : "sse"),
    };
  }

  /**
   * Creates a session. Without an `id` the client picks a random one (`ses_…`, like the
   * gateway's), so that retrying after a lost answer cannot create two; with one, a retry that
   * finds it taken returns it.
   */
  async createSession(
    options: { id?: string; title?: string; metadata?: Record<string, unknown>; signal?: AbortSignal } = {},
  ): Promise<SessionInfo> {
    const { signal, ...fields } = options;
    const body = { ...fields, id: fields.id ?? randomId() };
    const answer = await this.#context.http.call("POST", "/v1/sessions", { body, signal });
    if (answer.status < 300) return answer.body as SessionInfo;
    const taken = (answer.body as { error?: string } | undefined)?.error === "session_exists";
    if (taken && answer.retried) return this.session(body.id).get({ signal });
    throw refusal(answer.status, answer.body);
  }

  /** An existing session, without a request. */
  session(id: string): Session {
    return new Session(this.#context, id);
  }

  /** One page of sessions, sorted by id. */
  async listSessions(options: ListOptions = {}): Promise<SessionList> {
    const query: Record<string, string | number | undefined> = {
      archived: options.archived === undefined ? undefined : String(options.archived),
      cursor: options.cursor,
      limit: options.limit,
    };
    for (const [name, value] of Object.entries(options.metadata ?? {})) query[`metadata[${name}]`] = value;
    const page = await this.#context.http.json<SessionPage>("GET", "/v1/sessions", { query, signal: options.signal });
    return { sessions: page.sessions, nextCursor: page.next_cursor };
  }

  /** Every session the filters match, page after page. */
  async *allSessions(options: Omit<ListOptions, "cursor"> = {}): AsyncGenerator<SessionInfo> {
    let cursor: string | undefined;
    do {
      const page = await this.listSessions({ ...options, cursor });
      yield* page.sessions;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /** Header changes after `cursor`, then live, resuming like a tail (cursors skip values). */
  lifecycle(options: { cursor?: number; signal?: AbortSignal } = {}): AsyncGenerator<LifecycleEntry> {
    return follow(this.#context, new LifecycleFeed(options.cursor ?? 0), options.signal);
  }
}

class LifecycleFeed implements Feed<LifecycleEntry> {
  readonly path = "/v1/lifecycle";
  #cursor: number;

  constructor(cursor: number) {
    this.#cursor = cursor;
  }

  query() {
    return { cursor: this.#cursor };
  }

  take(frame: unknown): { items: LifecycleEntry[]; intact: boolean } {
    const cursor: unknown = (frame as LifecycleEntry | undefined)?.cursor;
    if (typeof cursor !== "number") return { items: [], intact: false };
    if (cursor <= this.#cursor) return { items: [], intact: true };
    this.#cursor = cursor;
    return { items: [frame as LifecycleEntry], intact: true };
  }
}

/** An id shaped like the gateway's own: `ses_` and 12 random bytes in unpadded base64url. */
function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  const base64 = btoa(String.fromCharCode(...bytes));
  return `ses_${base64.replaceAll("+", "-").replaceAll("/", "_")}`;
}
