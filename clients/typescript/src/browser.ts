// The package's entry in browsers (bundlers pick it through the `browser` export condition):
// the platform's WebSocket, or Server-Sent Events where there is none.

import { Client as PortableClient, type ClientOptions } from "./client.js";
import type { Platform, SocketEnd, SocketHandlers } from "./socket.js";

export * from "./index.js";

const browser: Platform = {
  idleTimeoutMs: 60_000,
  openWebSocket:
    typeof WebSocket === "undefined"
      ? undefined
      : (url: string, handlers: SocketHandlers) => {
          const socket = new WebSocket(url);
          let ended = false;
          const end = (how: SocketEnd) => {
            if (ended) return;
            ended = true;
            handlers.onEnd(how);
          };
          socket.onopen = () => handlers.onOpen();
          socket.onmessage = (message) => {
            if (typeof message.data === "string") handlers.onMessage(message.data);
          };
          // A browser hides why an upgrade was refused: it looks like a network failure.
          socket.onclose = (closed) => end({ code: closed.code });
          return {
            send: (text: string) => socket.send(text),
            close: () => {
              socket.close();
              end({});
            },
          };
        },
};

/** A client of one gateway; see `ClientOptions`. */
export class Client extends PortableClient {
  constructor(baseUrl: string, options: ClientOptions = {}) {
    super(baseUrl, options, browser);
  }
}
