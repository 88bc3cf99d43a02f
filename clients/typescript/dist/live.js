// A live stream that resumes by itself: tails and the lifecycle feed. Each connection starts
// from the position of the last item handed to the caller, so a reconnect never repeats an
// item and never skips one.
import { Backoff } from "./backoff.js";
import { isRetryable, refusal } from "./errors.js";
import { Inbox, openEventStream, parseJson, Watchdog } from "./socket.js";
/** Close code of a stream whose token expired: reconnect with a fresh one at once. */
const TOKEN_EXPIRED = 4001;
export async function* follow(context, feed, signal) {
    const { http, platform } = context;
    const backoff = new Backoff(http.backoff);
    let refreshed = false;
    for (;;) {
        signal?.throwIfAborted();
        const inbox = new Inbox();
        let opened;
        const watchdog = new Watchdog(platform.idleTimeoutMs, () => opened?.close());
        const socket = await connect(context, feed, {
            onOpen: () => watchdog.kick(),
            onMessage: (text) => {
                watchdog.kick();
                inbox.push({ frame: parseJson(text) });
            },
            onActivity: () => watchdog.kick(),
            onEnd: (end) => {
                watchdog.stop();
                inbox.push({ end });
            },
        });
        opened = socket;
        const abort = () => socket.close();
        signal?.addEventListener("abort", abort, { once: true });
        try {
            for (;;) {
                const delivery = await inbox.next();
                if ("end" in delivery) {
                    const { status, code } = delivery.end;
                    signal?.throwIfAborted();
                    if (status === 401 && !refreshed) {
                        refreshed = true;
                        http.tokens.refresh();
                    }
                    else if (status !== undefined && !isRetryable(status)) {
                        throw refusal(status, delivery.end.body);
                    }
                    else if (code === TOKEN_EXPIRED) {
                        http.tokens.refresh();
                    }
                    else {
                        await backoff.wait(signal, delivery.end.retryAfter);
                    }
                    break;
                }
                const { items, intact } = feed.take(delivery.frame);
                if (!intact)
                    socket.close();
                backoff.reset();
                refreshed = false;
                yield* items;
            }
        }
        finally {
            signal?.removeEventListener("abort", abort);
            socket.close();
        }
    }
}
async function connect(context, feed, handlers) {
    const token = await context.http.tokens.current();
    const openWebSocket = context.platform.openWebSocket;
    if (context.transport === "websocket" && openWebSocket) {
        const url = context.http.url(feed.path, { ...feed.query(), access_token: token || undefined });
        url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        return openWebSocket(url.toString(), handlers);
    }
    const url = context.http.url(feed.path, feed.query());
    return openEventStream(context.fetch, url.toString(), token, handlers);
}
