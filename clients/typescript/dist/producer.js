// One producer of one session: numbers its appends, pipelines them over the producer socket,
// and recovers from any drop so that every call resolves once, with the seq it was stored at.
//
// Every append goes over the socket (`GET /v1/sessions/{id}/produce`), one at a time or many
// in flight alike. After a drop, a 5xx or a 429 the producer reconnects with backoff, reads the
// `ready` frame's `(producer_seq, seq)`, reads back with `GET /events` the seqs of what was
// stored but not answered, and sends the rest again with the same numbers.
//
// A refusal that retrying cannot fix rejects that call with a typed error; the appends queued
// behind it were not stored (the gateway refuses a producer's requests after a gap in its
// numbering), so they are renumbered to take its place and sent again: they are never wedged.
import { Backoff, retryAfterSeconds } from "./backoff.js";
import { isRetryable, refusal, StarciteError, statusOf } from "./errors.js";
import { beforeReconnecting } from "./live.js";
import { Inbox, parseJson, Watchdog } from "./socket.js";
/** Retries of a resent call refused `producer_seq_conflict` before the refusal is believed. */
const CONFLICTS_TOLERATED = 10;
export class Producer {
    sessionId;
    producerId;
    #context;
    #store;
    #signal;
    /** Unresolved calls, in call order; while connected and ready, all of them are sent. */
    #pending = [];
    #nextProducerSeq;
    /** No unresolved call was stored at or before this seq: where reading back starts. */
    #scanFrom = 0;
    /** The socket of the current connection, from its opening. */
    #open;
    /** The same once its `ready` frame is reconciled: calls are sent on it. */
    #socket;
    #watchdog;
    /** Set after a refusal: the current connection's remaining answers are ignored. */
    #recovering = false;
    #retryAfter;
    #running = false;
    #closing = false;
    #tokenRefreshed = { after401: false };
    #wake;
    /** Whoever waits in `close()` for the pending calls to resolve. */
    #drained = [];
    constructor(context, sessionId, producerId, options = {}) {
        this.#context = context;
        this.sessionId = sessionId;
        this.producerId = producerId;
        this.#store = options.state;
        this.#signal = options.signal;
        this.#watchdog = new Watchdog(context.platform.idleTimeoutMs, () => this.#open?.close());
        this.#signal?.addEventListener("abort", () => this.#abort(), { once: true });
    }
    /** Appends one event: resolves with its seq once stored, after every earlier call resolved. */
    async append(event) {
        const [ack] = await this.#enqueue([event], false);
        return ack;
    }
    /** Appends events all or none, in order: one `Ack` per event. */
    appendBatch(events) {
        return this.#enqueue(events, true);
    }
    /** Waits for every pending append to resolve, then closes the socket. */
    async close() {
        this.#closing = true;
        if (this.#pending.length > 0) {
            await new Promise((resolve) => this.#drained.push(resolve));
        }
        this.#open?.close();
        this.#wake?.();
    }
    #enqueue(events, batch) {
        if (this.#closing || this.#signal?.aborted) {
            return Promise.reject(this.#signal?.reason ?? new Error("the producer is closed"));
        }
        return new Promise((resolve, reject) => {
            const call = { events, batch, sent: false, sentBefore: false, conflicts: 0, resolve, reject };
            this.#pending.push(call);
            this.#number(call);
            if (this.#socket)
                this.#send(call);
            this.#wake?.();
            if (!this.#running)
                void this.#run();
        });
    }
    #number(call) {
        if (this.#nextProducerSeq === undefined || call.firstProducerSeq !== undefined)
            return;
        call.firstProducerSeq = this.#nextProducerSeq;
        this.#nextProducerSeq += call.events.length;
    }
    #send(call) {
        const socket = this.#socket;
        const first = call.firstProducerSeq;
        if (!socket || first === undefined)
            return;
        const bodies = call.events.map((event, index) => this.#body(event, first + index));
        if (!this.#pending.some((other) => other.sent))
            this.#watchdog.kick();
        call.sent = true;
        socket.send(JSON.stringify(call.batch ? bodies : bodies[0]));
    }
    #body(event, producerSeq) {
        const body = {
            type: event.type,
            payload: event.payload,
            actor: event.actor,
            source: event.source,
            metadata: event.metadata,
            refs: event.refs,
            idempotency_key: event.idempotencyKey,
            expected_seq: event.expectedSeq,
            producer_id: this.producerId,
            producer_seq: producerSeq,
        };
        for (const [name, value] of Object.entries(body))
            if (value === undefined)
                delete body[name];
        return body;
    }
    /** Keeps a connection while there are calls to resolve, reconnecting after every drop. */
    async #run() {
        this.#running = true;
        const backoff = new Backoff(this.#context.http.backoff);
        try {
            while (!this.#signal?.aborted) {
                if (this.#pending.length === 0) {
                    if (this.#closing)
                        return;
                    await new Promise((resolve) => {
                        this.#wake = resolve;
                    });
                    this.#wake = undefined;
                    continue;
                }
                let end;
                try {
                    end = await this.#connection(backoff);
                }
                catch (error) {
                    this.#rejectAll(error);
                    continue;
                }
                for (const call of this.#pending) {
                    if (call.sent)
                        call.sentBefore = true;
                    call.sent = false;
                }
                if (this.#signal?.aborted)
                    return;
                const retryAfter = this.#retryAfter;
                this.#retryAfter = undefined;
                try {
                    await beforeReconnecting(end, this.#context.http, backoff, this.#tokenRefreshed, undefined, retryAfter);
                }
                catch (refused) {
                    this.#rejectAll(refused);
                }
            }
        }
        finally {
            this.#running = false;
        }
    }
    /** One socket from its `ready` frame to its end. */
    async #connection(backoff) {
        const { http, platform } = this.#context;
        const open = platform.openWebSocket;
        if (!open)
            throw new StarciteError("websocket_unavailable", 0, "a producer needs a WebSocket");
        const token = await http.tokens.current();
        const url = http.url(`/v1/sessions/${encodeURIComponent(this.sessionId)}/produce`, {
            producer_id: this.producerId,
            access_token: token || undefined,
        });
        url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        const inbox = new Inbox();
        const socket = open(url.toString(), {
            onOpen: () => this.#watchdog.kick(),
            onMessage: (text) => inbox.push({ text }),
            onActivity: () => {
                if (this.#pending.some((call) => call.sent))
                    this.#watchdog.kick();
            },
            onEnd: (end) => inbox.push({ end }),
        });
        this.#open = socket;
        this.#watchdog.kick();
        this.#recovering = false;
        let ready = false;
        try {
            for (;;) {
                const delivery = await inbox.next();
                if ("end" in delivery)
                    return delivery.end;
                if (this.#recovering)
                    continue;
                const frame = parseJson(delivery.text);
                if (!ready) {
                    ready = true;
                    this.#watchdog.stop();
                    await this.#reconcile(frame ?? {});
                    backoff.reset();
                    this.#tokenRefreshed.after401 = false;
                    this.#socket = socket;
                    for (const call of this.#pending)
                        this.#send(call);
                    this.#settled();
                    continue;
                }
                this.#answer(frame ?? {});
            }
        }
        catch {
            // Reconciling was aborted, or a page of the log was unreadable: start over.
            socket.close();
            for (;;) {
                const delivery = await inbox.next();
                if ("end" in delivery)
                    return {};
            }
        }
        finally {
            this.#open = undefined;
            this.#socket = undefined;
            this.#watchdog.stop();
        }
    }
    /**
     * Brings the calls in line with the `ready` frame: the numbering starts after the latest of
     * the server's and the saved state's, calls the server stored are resolved from `GET
     * /events`, and the rest will be sent.
     */
    async #reconcile(ready) {
        const latest = typeof ready.producer_seq === "number" ? ready.producer_seq : undefined;
        const readySeq = typeof ready.seq === "number" ? ready.seq : 0;
        if (this.#nextProducerSeq === undefined) {
            // A store that cannot be read leaves the numbering to the `ready` frame alone.
            const saved = await Promise.resolve(this.#store?.get(this.#stateKey())).catch(() => undefined);
            this.#nextProducerSeq = Math.max(saved?.producerSeq ?? 0, latest ?? 0) + 1;
            this.#scanFrom = readySeq;
            for (const call of this.#pending)
                this.#number(call);
        }
        // Calls sent before come first, in order; those the server counts were stored.
        const stored = this.#pending.filter((call) => call.sentBefore && latest !== undefined && lastProducerSeq(call) <= latest);
        if (stored.length > 0)
            await this.#readBack(stored, readySeq);
        const next = this.#pending[0];
        const first = next?.firstProducerSeq;
        if (latest !== undefined && first !== undefined && (first > latest + 1 || (!next?.sentBefore && first <= latest))) {
            // The server's numbering differs from ours for calls it cannot have stored (another
            // writer went ahead with this producer id, or the server forgot it): the server wins.
            this.#renumber(latest + 1);
        }
        this.#scanFrom = Math.max(this.#scanFrom, readySeq);
        if (latest !== undefined)
            this.#save(latest);
    }
    /** Resolves `calls`, stored at or before `until`, with the seqs the session's log gives them. */
    async #readBack(calls, until) {
        const seqs = new Map();
        const wanted = new Set(calls.flatMap((call) => producerSeqs(call)));
        let cursor = this.#scanFrom;
        while (cursor < until && seqs.size < wanted.size) {
            let page;
            try {
                page = await this.#context.http.json("GET", `/v1/sessions/${encodeURIComponent(this.sessionId)}/events`, { query: { cursor, limit: 1000 }, signal: this.#signal });
            }
            catch (error) {
                if (!(error instanceof StarciteError))
                    throw error;
                // Stored, but this token may not read the log (no `session:read`): say so, once.
                for (const call of calls)
                    call.reject(error);
                this.#pending.splice(0, calls.length);
                return;
            }
            for (const event of page.events) {
                if (event.producer_id === this.producerId && wanted.has(event.producer_seq)) {
                    seqs.set(event.producer_seq, { seq: event.seq, last_seq: page.last_seq });
                }
            }
            if (page.events.length === 0)
                break;
            cursor = page.next_cursor;
        }
        for (const call of calls) {
            this.#pending.shift();
            const found = producerSeqs(call).map((producerSeq) => {
                const reply = seqs.get(producerSeq);
                return reply && { seq: reply.seq, producerSeq, lastSeq: reply.last_seq, deduped: true };
            });
            if (found.every((ack) => ack !== undefined)) {
                this.#scanFrom = Math.max(this.#scanFrom, ...found.map((ack) => ack.seq));
                call.resolve(found);
            }
            else {
                call.reject(new StarciteError("append_outcome_unknown", 0, `producer ${this.producerId}'s appends up to ${lastProducerSeq(call)} were stored, but the log no longer holds them`));
            }
        }
    }
    /** The answer to the oldest sent call. */
    #answer(frame) {
        const call = this.#pending[0];
        if (!call?.sent) {
            this.#recover();
            return;
        }
        if (typeof frame.error === "string") {
            const status = statusOf(frame.error);
            if (isRetryable(status)) {
                this.#retryAfter = retryAfterSeconds(frame.retry_after);
                this.#recover();
                return;
            }
            if (frame.error === "producer_seq_conflict" && call.sentBefore && call.conflicts < CONFLICTS_TOLERATED) {
                call.conflicts += 1;
                this.#recover();
                return;
            }
            this.#pending.shift();
            call.reject(refusal(status, frame));
            // The calls behind it were not stored: they take its numbers, on a fresh socket.
            if (call.firstProducerSeq !== undefined)
                this.#renumber(call.firstProducerSeq);
            this.#settled();
            this.#recover();
            return;
        }
        this.#pending.shift();
        const first = call.firstProducerSeq ?? 0;
        const replies = (call.batch ? frame.events : [frame]);
        const lastSeq = typeof frame.last_seq === "number" ? frame.last_seq : 0;
        const acks = replies.map((reply, index) => ({
            seq: reply.seq,
            producerSeq: first + index,
            lastSeq,
            deduped: reply.deduped,
        }));
        this.#scanFrom = Math.max(this.#scanFrom, ...acks.map((ack) => ack.seq));
        this.#save(lastProducerSeq(call));
        call.resolve(acks);
        if (this.#pending.some((other) => other.sent))
            this.#watchdog.kick();
        else
            this.#watchdog.stop();
        this.#settled();
    }
    /** Drops the current socket; the run loop reconnects and reconciles. */
    #recover() {
        this.#recovering = true;
        this.#socket = undefined;
        this.#open?.close();
    }
    /** Numbers every pending call afresh from `producerSeq`: none of them is stored. */
    #renumber(producerSeq) {
        this.#nextProducerSeq = producerSeq;
        for (const call of this.#pending) {
            call.firstProducerSeq = undefined;
            call.sentBefore = false;
            call.conflicts = 0;
            this.#number(call);
        }
    }
    #save(producerSeq) {
        const saving = this.#store?.set(this.#stateKey(), { producerSeq });
        // A store that fails costs the next restart a read of the `ready` frame, not an append.
        void Promise.resolve(saving).catch(() => undefined);
    }
    #stateKey() {
        return `${this.sessionId}/${this.producerId}`;
    }
    #settled() {
        if (this.#pending.length === 0)
            for (const resolve of this.#drained.splice(0))
                resolve();
    }
    #rejectAll(error) {
        const calls = this.#pending.splice(0);
        for (const call of calls)
            call.reject(error);
        this.#settled();
    }
    #abort() {
        this.#rejectAll(this.#signal?.reason);
        this.#open?.close();
        this.#wake?.();
    }
}
function producerSeqs(call) {
    const first = call.firstProducerSeq ?? 0;
    return call.events.map((_, index) => first + index);
}
function lastProducerSeq(call) {
    return (call.firstProducerSeq ?? 0) + call.events.length - 1;
}
