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
export declare class Watchdog {
    #private;
    constructor(ms: number, onExpire: () => void);
    kick(): void;
    stop(): void;
}
/** An unbounded queue read by one async consumer. */
export declare class Inbox<T> {
    #private;
    push(item: T): void;
    next(): Promise<T>;
}
/**
 * Opens a Server-Sent Events stream with `fetch`, presenting it like a WebSocket: each event's
 * data is a message, keep-alive comments are activity, and the gateway's last messages
 * (`going_away`, `storage_error`, `overflow`, `token_expired`) end it with the WebSocket close
 * code they stand for.
 */
export declare function openEventStream(fetchImpl: typeof fetch, url: string, token: string | undefined, handlers: SocketHandlers): LiveSocket;
export declare function parseJson(text: string): unknown;
