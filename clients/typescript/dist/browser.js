// The package's entry in browsers (bundlers pick it through the `browser` export condition):
// the platform's WebSocket, or Server-Sent Events where there is none.
import { Client as PortableClient } from "./client.js";
export * from "./index.js";
const browser = {
    idleTimeoutMs: 60_000,
    openWebSocket: typeof WebSocket === "undefined"
        ? undefined
        : (url, handlers) => {
            const socket = new WebSocket(url);
            let ended = false;
            const end = (how) => {
                if (ended)
                    return;
                ended = true;
                handlers.onEnd(how);
            };
            socket.onopen = () => handlers.onOpen();
            socket.onmessage = (message) => {
                if (typeof message.data === "string")
                    handlers.onMessage(message.data);
            };
            // A browser hides why an upgrade was refused: it looks like a network failure.
            socket.onclose = (closed) => end({ code: closed.code });
            return {
                send: (text) => socket.send(text),
                close: () => {
                    socket.close();
                    end({});
                },
            };
        },
};
/** A client of one gateway; see `ClientOptions`. */
export class Client extends PortableClient {
    constructor(baseUrl, options = {}) {
        super(baseUrl, options, browser);
    }
}
