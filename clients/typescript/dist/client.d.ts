import type { BackoffOptions } from "./backoff.js";
import { type TokenOption } from "./http.js";
import { type Transport } from "./live.js";
import { Session, type SessionInfo } from "./session.js";
import type { Platform } from "./socket.js";
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
export declare class Client {
    #private;
    constructor(baseUrl: string, options: ClientOptions, platform: Platform);
    /**
     * Creates a session. Without an `id` the client picks a random one (`ses_…`, like the
     * gateway's), so that retrying after a lost answer cannot create two; with one, a retry that
     * finds it taken returns it.
     */
    createSession(options?: {
        id?: string;
        title?: string;
        metadata?: Record<string, unknown>;
        signal?: AbortSignal;
    }): Promise<SessionInfo>;
    /** An existing session, without a request. */
    session(id: string): Session;
    /** One page of sessions, sorted by id. */
    listSessions(options?: ListOptions): Promise<SessionList>;
    /** Every session the filters match, page after page. */
    allSessions(options?: Omit<ListOptions, "cursor">): AsyncGenerator<SessionInfo>;
    /** Header changes after `cursor`, then live, resuming like a tail (cursors skip values). */
    lifecycle(options?: {
        cursor?: number;
        signal?: AbortSignal;
    }): AsyncGenerator<LifecycleEntry>;
}
