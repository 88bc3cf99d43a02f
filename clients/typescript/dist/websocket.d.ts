import { type LiveSocket, type SocketHandlers } from "./socket.js";
declare const enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10
}
export declare function openNodeWebSocket(url: string, handlers: SocketHandlers): LiveSocket;
/** Reassembles the server's frames from stream chunks into messages and control frames. */
export declare class FrameReader {
    #private;
    constructor(deliver: (opcode: Opcode, payload: Buffer) => void);
    /** Takes a chunk; false when the stream breaks the protocol. */
    push(chunk: Buffer): boolean;
}
export {};
