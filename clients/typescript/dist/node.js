// The package's entry in Node: WebSockets on Node's own `http` (`websocket.ts`), which shows
// the gateway's pings.
import { Client as PortableClient } from "./client.js";
import { openNodeWebSocket } from "./websocket.js";
export * from "./index.js";
const node = { idleTimeoutMs: 45_000, openWebSocket: openNodeWebSocket };
/** A client of one gateway; see `ClientOptions`. */
export class Client extends PortableClient {
    constructor(baseUrl, options = {}) {
        super(baseUrl, options, node);
    }
}
