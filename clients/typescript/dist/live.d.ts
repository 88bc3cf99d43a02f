import { Backoff } from "./backoff.js";
import type { Http, Query } from "./http.js";
import { type Platform, type SocketEnd } from "./socket.js";
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
    take(frame: unknown): {
        items: T[];
        intact: boolean;
    };
}
export interface LiveContext {
    http: Http;
    platform: Platform;
    fetch: typeof fetch;
    transport: Transport;
}
export declare function follow<T>(context: LiveContext, feed: Feed<T>, signal?: AbortSignal): AsyncGenerator<T>;
/**
 * Between a connection's end and the next attempt: a first 401 or a token expiry (close code
 * 4001) asks for a fresh token and reconnects at once, a refusal that retrying cannot fix is
 * thrown, anything else waits its backoff (or `retryAfter`, or the refusal's `Retry-After`).
 */
export declare function beforeReconnecting(end: SocketEnd, http: Http, backoff: Backoff, tokenRefreshed: {
    after401: boolean;
}, signal?: AbortSignal, retryAfter?: number): Promise<void>;
