import { type LiveContext } from "./live.js";
import type { ProducerStateStore } from "./state.js";
/** An event to append; the producer adds `producer_id` and `producer_seq`. */
export interface NewEvent {
    type: string;
    payload: Record<string, unknown>;
    /** Required with authentication off; with a token it defaults to the token's `sub`. */
    actor?: string;
    source?: string;
    metadata?: Record<string, unknown>;
    refs?: Record<string, unknown>;
    idempotencyKey?: string;
    /** Append only if the session's `last_seq` is this: else `ExpectedSeqConflict`. */
    expectedSeq?: number;
}
/** Where an append was stored. `deduped` is true when the gateway already had it (a resend). */
export interface Ack {
    seq: number;
    producerSeq: number;
    lastSeq: number;
    deduped: boolean;
}
export interface ProducerOptions {
    /** Keeps the producer's numbering across reloads and restarts (`webStorageStore`, …). */
    state?: ProducerStateStore;
    /** Ends the producer: pending appends reject with the signal's reason. */
    signal?: AbortSignal;
}
export declare class Producer {
    #private;
    readonly sessionId: string;
    readonly producerId: string;
    constructor(context: LiveContext, sessionId: string, producerId: string, options?: ProducerOptions);
    /** Appends one event: resolves with its seq once stored, after every earlier call resolved. */
    append(event: NewEvent): Promise<Ack>;
    /** Appends events all or none, in order: one `Ack` per event. */
    appendBatch(events: NewEvent[]): Promise<Ack[]>;
    /** Waits for every pending append to resolve, then closes the socket. */
    close(): Promise<void>;
}
