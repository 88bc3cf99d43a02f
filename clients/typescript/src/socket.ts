import { retryAfterSeconds } from "./backoff.js";

// One live connection to the gateway, whatever carries it: a WebSocket (the `ws` package in
// Node, the platform's own in browsers) or a Server-Sent Events response read through `fetch`.

/** How a connection ended: a close `code`, or the HTTP `status` that refused it, or neither. */
export interface SocketEnd {
  code?: number;
  status?: number;
  body?: unknown;
  retryAfter?: number;
}

export interface SocketHandlers {
  onOpen(): void;
  onMessage(text: string): void;
  /** Traffic that carries no message: a ping, a keep-alive comment. */
  onActivity(): void;
  /** Called once, last. */
  onEnd(end: SocketEnd): void;
}

export interface LiveSocket {
  send(text: string): void;
  /** Ends the connection at once; `onEnd` follows. */
  close(): void;
}

/** Opens a WebSocket to `url` (its token, if any, already in the `access_token` query). */
export type OpenWebSocket = (url: string, handlers: SocketHandlers) => LiveSocket;

/** What differs between Node and browsers. */
export interface Platform {
  openWebSocket: OpenWebSocket | undefined;
  /**
   * How long a connection may stay silent before it is presumed dead and reopened. Where
   * WebSocket pings are visible (Node) this is three missed pings; browsers answer pings
   * without telling the page, so there a quiet session's tail reopens after this long.
   */
  idleTimeoutMs: number;
}

/** Calls `onExpire` when `kick` has not been called for `ms`. */
export class Watchdog {
  readonly #ms: number;
  readonly #onExpire: () => void;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(ms: number, onExpire: () => void) {
    this.#ms = ms;
    this.#onExpire = onExpire;
  }

  kick(): void {
    this.stop();
    this.#timer = setTimeout(this.#onExpire, this.#ms);
  }

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** An unbounded queue read by one async consumer. */
export class Inbox<T> {
  readonly #items: T[] = [];
  #waiting: ((item: T) => void) | undefined;

  push(item: T): void {
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      waiting(item);
    } else {
      this.#items.push(item);
    }
  }

  next(): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => {
      this.#waiting = resolve;
    });
  }
}

/**
 * Opens a Server-Sent Events stream with `fetch`, presenting it like a WebSocket: each event's
 * data is a message, keep-alive comments are activity, and the gateway's last messages
 * (`going_away`, `storage_error`, `overflow`, `token_expired`) end it with the WebSocket close
 * code they stand for.
 */
export function openEventStream(
  fetchImpl: typeof fetch,
  url: string,
  token: string | undefined,
  handlers: SocketHandlers,
): LiveSocket {
  const aborter = new AbortController();
  let ended = false;
  const end = (how: SocketEnd) => {
    if (ended) return;
    ended = true;
    aborter.abort();
    handlers.onEnd(how);
  };
  const headers: Record<string, string> = { accept: "text/event-stream" };
  if (token) headers.authorization = `Bearer ${token}`;
  void (async () => {
    const response = await fetchImpl(url, { headers, signal: aborter.signal });
    if (response.status !== 200 || !response.body) {
      const text = await response.text();
      end({
        status: response.status,
        body: parseJson(text),
        retryAfter: retryAfterSeconds(response.headers.get("retry-after")),
      });
      return;
    }
    handlers.onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    let event = "message";
    let data: string[] = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      let newline: number;
      while ((newline = buffered.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + (buffered.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) {
            const ending = SSE_ENDINGS[event];
            if (ending !== undefined) {
              end({ code: ending });
              return;
            }
            handlers.onMessage(data.join("\n"));
          }
          event = "message";
          data = [];
        } else if (line.startsWith(":")) {
          handlers.onActivity();
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          if (field === "data") data.push(value);
        }
      }
    }
    end({});
  })().catch(() => end({}));
  return {
    send() {
      throw new Error("a Server-Sent Events stream only reads");
    },
    close: () => end({}),
  };
}

const SSE_ENDINGS: Record<string, number> = {
  going_away: 1001,
  storage_error: 1011,
  token_expired: 4001,
  overflow: 4002,
};

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
