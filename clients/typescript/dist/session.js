// One session: its header, its producers and its tails.
import { StarciteError } from "./errors.js";
import { follow } from "./live.js";
import { Producer } from "./producer.js";
/**
 * A tail could not continue right after its cursor: retention dropped events
 * (`cursor_expired`), or the cursor was past the session's head (`resume_invalidated`).
 * Delivery goes on after `nextCursor`.
 */
export class Gap {
    reason;
    fromCursor;
    nextCursor;
    earliestAvailableCursor;
    committedCursor;
    constructor(body) {
        this.reason = body.reason;
        this.fromCursor = body.from_cursor;
        this.nextCursor = body.next_cursor;
        this.earliestAvailableCursor = body.earliest_available_cursor;
        this.committedCursor = body.committed_cursor;
    }
}
export class Session {
    id;
    #context;
    constructor(context, id) {
        this.#context = context;
        this.id = id;
    }
    get(options = {}) {
        return this.#context.http.json("GET", this.#path(), options);
    }
    patch(options) {
        const body = {};
        if (options.title !== undefined)
            body.title = options.title;
        if (options.metadata !== undefined)
            body.metadata = options.metadata;
        if (options.expectedVersion !== undefined)
            body.expected_version = options.expectedVersion;
        return this.#context.http.json("PATCH", this.#path(), { body, signal: options.signal });
    }
    archive(options = {}) {
        return this.#context.http.json("POST", this.#path("/archive"), options);
    }
    unarchive(options = {}) {
        return this.#context.http.json("POST", this.#path("/unarchive"), options);
    }
    /** The producer `producerId` of this session; `close()` it when done. */
    producer(producerId, options = {}) {
        return new Producer(this.#context, this.id, producerId, options);
    }
    /** One page of events after `cursor` (plain HTTP; `wait` seconds long-polls an empty page). */
    events(options = {}) {
        const { signal, ...query } = options;
        return this.#context.http.json("GET", this.#path("/events"), { query, signal });
    }
    /**
     * Every event after `cursor` in seq order, then new ones live, forever: each once, a `Gap`
     * where the log cannot continue, and reconnection from the last event yielded.
     */
    tail(options = {}) {
        return follow(this.#context, new TailFeed(this.#path("/tail"), options), options.signal);
    }
    #path(suffix = "") {
        return `/v1/sessions/${encodeURIComponent(this.id)}${suffix}`;
    }
}
export class TailFeed {
    path;
    #cursor;
    #batchSize;
    constructor(path, options) {
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
    take(frame) {
        const items = [];
        for (const entry of Array.isArray(frame) ? frame : [frame]) {
            if (isGap(entry)) {
                const gap = new Gap(entry);
                this.#cursor = gap.nextCursor;
                items.push(gap);
                continue;
            }
            const seq = entry?.seq;
            if (typeof seq !== "number")
                return { items, intact: false };
            if (seq <= this.#cursor)
                continue;
            // Never a silent hole: anything but the next seq means reading again from the cursor.
            if (seq !== this.#cursor + 1)
                return { items, intact: false };
            this.#cursor = seq;
            items.push(entry);
        }
        return { items, intact: true };
    }
}
function isGap(entry) {
    return typeof entry === "object" && entry !== null && !("seq" in entry) && "from_cursor" in entry;
}
