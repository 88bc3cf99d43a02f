import { retryAfterSeconds } from "./backoff.js";
/** Calls `onExpire` when `kick` has not been called for `ms`. */
export class Watchdog {
    #ms;
    #onExpire;
    #timer;
    constructor(ms, onExpire) {
        this.#ms = ms;
        this.#onExpire = onExpire;
    }
    kick() {
        this.stop();
        this.#timer = setTimeout(this.#onExpire, this.#ms);
    }
    stop() {
        if (this.#timer !== undefined)
            clearTimeout(this.#timer);
        this.#timer = undefined;
    }
}
/** An unbounded queue read by one async consumer. */
export class Inbox {
    #items = [];
    #waiting;
    push(item) {
        const waiting = this.#waiting;
        if (waiting) {
            this.#waiting = undefined;
            waiting(item);
        }
        else {
            this.#items.push(item);
        }
    }
    next() {
        const item = this.#items.shift();
        if (item !== undefined)
            return Promise.resolve(item);
        return new Promise((resolve) => {
            this.#waiting = resolve;
        });
    }
}
/**
 * Opens a Server-Sent Events stream with `fetch`, presenting it like a WebSocket: each event's
 * data is a message, keep-alive comments are activity, and the gateway's last messages
 * (`going_away`, `storage_error`, `overflow`, `token_expired`) end it with the WebSocket close
 * code they stand for.
 */
export function openEventStream(fetchImpl, url, token, handlers) {
    const aborter = new AbortController();
    let ended = false;
    const end = (how) => {
        if (ended)
            return;
        ended = true;
        aborter.abort();
        handlers.onEnd(how);
    };
    const headers = { accept: "text/event-stream" };
    if (token)
        headers.authorization = `Bearer ${token}`;
    void (async () => {
        const response = await fetchImpl(url, { headers, signal: aborter.signal });
        if (response.status !== 200 || !response.body) {
            const text = await response.text();
            end({
                status: response.status,
                body: parseJson(text),
                retryAfter: retryAfterSeconds(response.headers.get("retry-after")),
            });
            return;
        }
        handlers.onOpen();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffered = "";
        let event = "message";
        let data = [];
        for (;;) {
            const { value, done } = await reader.read();
            if (done)
                break;
            buffered += value;
            let newline;
            while ((newline = buffered.search(/\r\n|\r|\n/)) >= 0) {
                const line = buffered.slice(0, newline);
                buffered = buffered.slice(newline + (buffered.startsWith("\r\n", newline) ? 2 : 1));
                if (line === "") {
                    if (data.length > 0) {
                        const ending = SSE_ENDINGS[event];
                        if (ending !== undefined) {
                            end({ code: ending });
                            return;
                        }
                        handlers.onMessage(data.join("\n"));
                    }
                    event = "message";
                    data = [];
                }
                else if (line.startsWith(":")) {
                    handlers.onActivity();
                }
                else {
                    const colon = line.indexOf(":");
                    const field = colon < 0 ? line : line.slice(0, colon);
                    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
                    if (field === "event")
                        event = value;
                    if (field === "data")
                        data.push(value);
                }
            }
        }
        end({});
    })().catch(() => end({}));
    return {
        send() {
            throw new Error("a Server-Sent Events stream only reads");
        },
        close: () => end({}),
    };
}
const SSE_ENDINGS = {
    going_away: 1001,
    storage_error: 1011,
    token_expired: 4001,
    overflow: 4002,
};
export function parseJson(text) {
    try {
        return JSON.parse(text);
    }
    catch {
        return undefined;
    }
}
