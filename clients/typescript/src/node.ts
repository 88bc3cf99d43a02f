// The package's entry in Node: WebSockets on Node's own `http` (`websocket.ts`), which shows
// the gateway's pings.

import { Client as PortableClient, type ClientOptions } from "./client.js";
import type { Platform } from "./socket.js";
import { openNodeWebSocket } from "./websocket.js";

export * from "./index.js";

const node: Platform = { idleTimeoutMs: 45_000, openWebSocket: openNodeWebSocket };

/** A client of one gateway; see `ClientOptions`. */
export class Client extends PortableClient {
  constructor(baseUrl: string, options: ClientOptions = {}) {
    super(baseUrl, options, node);
  }
}
