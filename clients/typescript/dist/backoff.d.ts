export interface BackoffOptions {
    /** The first delay's upper bound, in milliseconds (100 by default). */
    initialMs?: number;
    /** The largest delay, in milliseconds (5,000 by default). */
    maxMs?: number;
}
export declare class Backoff {
    #private;
    constructor(options?: BackoffOptions);
    /** Waits before the next attempt: `retryAfterSeconds` when given, plus jitter. */
    wait(signal?: AbortSignal, retryAfterSeconds?: number): Promise<void>;
    /** After a success, the next failure starts from the shortest delay again. */
    reset(): void;
}
export declare function sleep(ms: number, signal?: AbortSignal): Promise<void>;
/** Seconds from a `Retry-After` header or a frame's `retry_after`, when it names a number. */
export declare function retryAfterSeconds(value: unknown): number | undefined;
