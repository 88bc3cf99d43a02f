// The package's entry in Node: WebSockets from the `ws` package, which shows the gateway's pings.
import WebSocket from "ws";
import { retryAfterSeconds } from "./backoff.js";
import { Client as PortableClient } from "./client.js";
import { parseJson } from "./socket.js";
export * from "./index.js";
const node = {
    idleTimeoutMs: 45_000,
    openWebSocket(url, handlers) {
        const socket = new WebSocket(url, { perMessageDeflate: false });
        let ended = false;
        const end = (how) => {
            if (ended)
                return;
            ended = true;
            handlers.onEnd(how);
        };
        socket.on("open", () => handlers.onOpen());
        socket.on("message", (data, isBinary) => {
            if (!isBinary)
                handlers.onMessage(data.toString());
        });
        socket.on("ping", () => handlers.onActivity());
        socket.on("close", (code) => end({ code }));
        socket.on("error", () => {
            socket.terminate();
            end({});
        });
        // A refused upgrade says why in an HTTP answer: keep its status and error body.
        socket.on("unexpected-response", (request, response) => {
            const chunks = [];
            response.on("data", (chunk) => chunks.push(chunk));
            const finish = () => {
                request.destroy();
                end({
                    status: response.statusCode,
                    body: parseJson(Buffer.concat(chunks).toString()),
                    retryAfter: retryAfterSeconds(response.headers["retry-after"]),
                });
            };
            response.on("end", finish);
            response.on("error", finish);
        });
        return {
            send: (text) => socket.send(text),
            close: () => {
                socket.terminate();
                end({});
            },
        };
    },
};
/** A client of one gateway; see `ClientOptions`. */
export class Client extends PortableClient {
    constructor(baseUrl, options = {}) {
        super(baseUrl, options, node);
    }
}
