// The client of one gateway: sessions, the catalog and the lifecycle feed.
import { refusal } from "./errors.js";
import { Http, Tokens } from "./http.js";
import { follow } from "./live.js";
import { Session } from "./session.js";
/** The client for one gateway; the package's entry gives it the platform's WebSocket. */
export class Client {
    #context;
    constructor(baseUrl, options, platform) {
        const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
        this.#context = {
            http: new Http(baseUrl, new Tokens(options.token), options.backoff ?? {}, fetchImpl),
            platform: { ...platform, idleTimeoutMs: options.idleTimeoutMs ?? platform.idleTimeoutMs },
            fetch: fetchImpl,
            transport: options.transport ?? (platform.openWebSocket ? "websocket" : "sse"),
        };
    }
    /**
     * Creates a session. Without an `id` the client picks a random one (`ses_…`, like the
     * gateway's), so that retrying after a lost answer cannot create two; with one, a retry that
     * finds it taken returns it.
     */
    async createSession(options = {}) {
        const { signal, ...fields } = options;
        const body = { ...fields, id: fields.id ?? randomId() };
        const answer = await this.#context.http.call("POST", "/v1/sessions", { body, signal });
        if (answer.status < 300)
            return answer.body;
        const taken = answer.body?.error === "session_exists";
        if (taken && answer.retried)
            return this.session(body.id).get({ signal });
        throw refusal(answer.status, answer.body);
    }
    /** An existing session, without a request. */
    session(id) {
        return new Session(this.#context, id);
    }
    /** One page of sessions, sorted by id. */
    async listSessions(options = {}) {
        const query = {
            archived: options.archived === undefined ? undefined : String(options.archived),
            cursor: options.cursor,
            limit: options.limit,
        };
        for (const [name, value] of Object.entries(options.metadata ?? {}))
            query[`metadata[${name}]`] = value;
        const page = await this.#context.http.json("GET", "/v1/sessions", { query, signal: options.signal });
        return { sessions: page.sessions, nextCursor: page.next_cursor };
    }
    /** Every session the filters match, page after page. */
    async *allSessions(options = {}) {
        let cursor;
        do {
            const page = await this.listSessions({ ...options, cursor });
            yield* page.sessions;
            cursor = page.nextCursor ?? undefined;
        } while (cursor !== undefined);
    }
    /** Header changes after `cursor`, then live, resuming like a tail (cursors skip values). */
    lifecycle(options = {}) {
        return follow(this.#context, new LifecycleFeed(options.cursor ?? 0), options.signal);
    }
}
class LifecycleFeed {
    path = "/v1/lifecycle";
    #cursor;
    constructor(cursor) {
        this.#cursor = cursor;
    }
    query() {
        return { cursor: this.#cursor };
    }
    take(frame) {
        const cursor = frame?.cursor;
        if (typeof cursor !== "number")
            return { items: [], intact: false };
        if (cursor <= this.#cursor)
            return { items: [], intact: true };
        this.#cursor = cursor;
        return { items: [frame], intact: true };
    }
}
/** An id shaped like the gateway's own: `ses_` and 12 random bytes in unpadded base64url. */
function randomId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    const base64 = btoa(String.fromCharCode(...bytes));
    return `ses_${base64.replaceAll("+", "-").replaceAll("/", "_")}`;
}
