import { type LiveSocket, type SocketHandlers } from "./socket.js";
export declare function openNodeWebSocket(url: string, handlers: SocketHandlers): LiveSocket;
