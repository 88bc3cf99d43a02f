// A live stream that resumes by itself: tails and the lifecycle feed. Each connection starts
// from the position of the last item handed to the caller, so a reconnect never repeats an
// item and never skips one.

import { Backoff } from "./backoff.js";
import { isRetryable, refusal } from "./errors.js";
import type { Http, Query } from "./http.js";
import { Inbox, type LiveSocket, openEventStream, parseJson, type Platform, type SocketEnd, Watchdog } from "./socket.js";

export type Transport = "websocket" | "sse";

/** What a stream reads: where from (its query, cursor included) and how its frames become items. */
export interface Feed<T> {
  path: string;
  /** The query for the next connection, from the position reached so far. */
  query(): Query;
  /**
   * The items of one frame, in order, that continue the stream; `intact` is false when the
   * frame breaks the order (a hole, something unreadable): the stream then reconnects from the
   * last item taken.
   */
  take(frame: unknown): { items: T[]; intact: boolean };
}

export interface LiveContext {
  http: Http;
  platform: Platform;
  fetch: typeof fetch;
  transport: Transport;
}

/** Close code of a stream whose token expired: reconnect with a fresh one at once. */
const TOKEN_EXPIRED = 4001;

export async function* follow<T>(context: LiveContext, feed: Feed<T>, signal?: AbortSignal): AsyncGenerator<T> {
  const { http, platform } = context;
  const backoff = new Backoff(http.backoff);
  const tokenRefreshed = { after401: false };
  for (;;) {
    signal?.throwIfAborted();
    const inbox = new Inbox<{ frame: unknown } | { end: SocketEnd }>();
    let opened: LiveSocket | undefined;
    const watchdog = new Watchdog(platform.idleTimeoutMs, () => opened?.close());
    const socket = await connect(context, feed, {
      onOpen: () => watchdog.kick(),
      onMessage: (text) => {
        watchdog.kick();
        inbox.push({ frame: parseJson(text) });
      },
      onActivity: () => watchdog.kick(),
      onEnd: (end) => {
        watchdog.stop();
        inbox.push({ end });
      },
    });
    // A handshake that never completes is as dead as a silent connection.
    opened = socket;
    watchdog.kick();
    const abort = () => socket.close();
    signal?.addEventListener("abort", abort, { once: true });
    try {
      for (;;) {
        const delivery = await inbox.next();
        if ("end" in delivery) {
          signal?.throwIfAborted();
          await beforeReconnecting(delivery.end, http, backoff, tokenRefreshed, signal);
          break;
        }
        const { items, intact } = feed.take(delivery.frame);
        if (!intact) socket.close();
        backoff.reset();
        tokenRefreshed.after401 = false;
        yield* items;
      }
    } finally {
      signal?.removeEventListener("abort", abort);
      socket.close();
      watchdog.stop();
    }
  }
}

/**
 * Between a connection's end and the next attempt: a first 401 or a token expiry (close code
 * 4001) asks for a fresh token and reconnects at once, a refusal that retrying cannot fix is
 * thrown, anything else waits its backoff (or `retryAfter`, or the refusal's `Retry-After`).
 */
export async function beforeReconnecting(
  end: SocketEnd,
  http: Http,
  backoff: Backoff,
  tokenRefreshed: { after401: boolean },
  signal?: AbortSignal,
  retryAfter?: number,
): Promise<void> {
  if (end.status === 401 && !tokenRefreshed.after401) {
    tokenRefreshed.after401 = true;
    http.tokens.refresh();
  } else if (end.status !== undefined && !isRetryable(end.status)) {
    throw refusal(end.status, end.body);
  } else if (end.code === TOKEN_EXPIRED) {
    http.tokens.refresh();
  } else {
    await backoff.wait(signal, retryAfter ?? end.retryAfter);
  }
}

async function connect<T>(context: LiveContext, feed: Feed<T>, handlers: Parameters<typeof openEventStream>[3]): Promise<LiveSocket> {
  const token = await context.http.tokens.current();
  const openWebSocket = context.platform.openWebSocket;
  if (context.transport === "websocket" && openWebSocket) {
    const url = context.http.url(feed.path, { ...feed.query(), access_token: token || undefined });
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return openWebSocket(url.toString(), handlers);
  }
  const url = context.http.url(feed.path, feed.query());
  return openEventStream(context.fetch, url.toString(), token, handlers);
}
