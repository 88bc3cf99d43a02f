import type { components } from "./generated/schema.js";
import { type Feed, type LiveContext } from "./live.js";
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
export declare class Gap {
    readonly reason: string;
    readonly fromCursor: number;
    readonly nextCursor: number;
    readonly earliestAvailableCursor: number;
    readonly committedCursor: number;
    constructor(body: GapBody);
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
export declare class Session {
    #private;
    readonly id: string;
    constructor(context: LiveContext, id: string);
    get(options?: {
        signal?: AbortSignal;
    }): Promise<SessionInfo>;
    patch(options: PatchOptions): Promise<SessionInfo>;
    archive(options?: {
        signal?: AbortSignal;
    }): Promise<SessionInfo>;
    unarchive(options?: {
        signal?: AbortSignal;
    }): Promise<SessionInfo>;
    /** The producer `producerId` of this session; `close()` it when done. */
    producer(producerId: string, options?: ProducerOptions): Producer;
    /** One page of events after `cursor` (plain HTTP; `wait` seconds long-polls an empty page). */
    events(options?: {
        cursor?: number;
        limit?: number;
        wait?: number;
        signal?: AbortSignal;
    }): Promise<EventPage>;
    /**
     * Every event after `cursor` in seq order, then new ones live, forever: each once, a `Gap`
     * where the log cannot continue, and reconnection from the last event yielded.
     */
    tail(options?: TailOptions): AsyncGenerator<TailEvent | Gap>;
}
export declare class TailFeed implements Feed<TailEvent | Gap> {
    #private;
    readonly path: string;
    constructor(path: string, options: TailOptions);
    query(): {
        cursor: number;
        batch_size: number;
    };
    take(frame: unknown): {
        items: (TailEvent | Gap)[];
        intact: boolean;
    };
}
export {};
