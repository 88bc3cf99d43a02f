// A WebSocket client (RFC 6455) on Node's own `http`, for Node 20, which has no global
// WebSocket. Written here rather than taken from a package so that the package has no runtime
// dependency (installing it from a folder needs nothing more) and so that the gateway's pings
// are seen: they are what tells a dead connection from a quiet one.
import { createHash, randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { retryAfterSeconds } from "./backoff.js";
import { parseJson } from "./socket.js";
const HANDSHAKE_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** No close code in the close frame, or no close frame at all. */
const NO_STATUS = 1005;
const ABNORMAL = 1006;
export function openNodeWebSocket(url, handlers) {
    const target = new URL(url);
    const key = randomBytes(16).toString("base64");
    const request = (target.protocol === "wss:" ? httpsRequest : httpRequest)({
        hostname: target.hostname,
        port: target.port,
        path: target.pathname + target.search,
        headers: {
            connection: "Upgrade",
            upgrade: "websocket",
            "sec-websocket-key": key,
            "sec-websocket-version": "13",
        },
    });
    let stream;
    let ended = false;
    const end = (how) => {
        if (ended)
            return;
        ended = true;
        stream?.destroy();
        request.destroy();
        handlers.onEnd(how);
    };
    const send = (opcode, payload) => stream?.write(frame(opcode, payload));
    // A refused upgrade is an ordinary HTTP answer: keep its status and error body.
    request.on("response", (response) => {
        const chunks = [];
        response.on("data", (chunk) => chunks.push(chunk));
        response.on("end", () => end({
            status: response.statusCode,
            body: parseJson(Buffer.concat(chunks).toString()),
            retryAfter: retryAfterSeconds(response.headers["retry-after"]),
        }));
        response.on("error", () => end({}));
    });
    request.on("upgrade", (response, upgraded, head) => {
        stream = upgraded;
        const accept = createHash("sha1").update(key + HANDSHAKE_GUID).digest("base64");
        if (response.headers["sec-websocket-accept"] !== accept) {
            end({});
            return;
        }
        handlers.onOpen();
        const reader = new FrameReader((opcode, payload) => {
            if (opcode === 1 /* Opcode.Text */)
                handlers.onMessage(payload.toString("utf8"));
            if (opcode === 9 /* Opcode.Ping */) {
                handlers.onActivity();
                send(10 /* Opcode.Pong */, payload);
            }
            if (opcode === 10 /* Opcode.Pong */)
                handlers.onActivity();
            if (opcode === 8 /* Opcode.Close */) {
                const code = payload.length >= 2 ? payload.readUInt16BE(0) : NO_STATUS;
                send(8 /* Opcode.Close */, payload.subarray(0, 2));
                end({ code });
            }
        });
        upgraded.on("data", (chunk) => {
            if (!reader.push(chunk))
                end({});
        });
        upgraded.on("close", () => end({ code: ABNORMAL }));
        upgraded.on("error", () => end({}));
        if (head.length > 0 && !reader.push(head))
            end({});
    });
    request.on("error", () => end({}));
    request.end();
    return {
        send: (text) => void send(1 /* Opcode.Text */, Buffer.from(text, "utf8")),
        close: () => end({}),
    };
}
/** A client frame: final, masked as the protocol requires of clients. */
function frame(opcode, payload) {
    const length = payload.length;
    const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
    const header = Buffer.alloc(2 + lengthBytes + 4);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | (lengthBytes === 0 ? length : lengthBytes === 2 ? 126 : 127);
    if (lengthBytes === 2)
        header.writeUInt16BE(length, 2);
    if (lengthBytes === 8)
        header.writeBigUInt64BE(BigInt(length), 2);
    const mask = randomBytes(4);
    mask.copy(header, 2 + lengthBytes);
    const masked = Buffer.alloc(length);
    for (let index = 0; index < length; index += 1)
        masked[index] = payload[index] ^ mask[index & 3];
    return Buffer.concat([header, masked]);
}
/** Reassembles the server's frames from stream chunks into messages and control frames. */
export class FrameReader {
    #buffered = Buffer.alloc(0);
    #fragments = [];
    #fragmentedOpcode;
    #deliver;
    constructor(deliver) {
        this.#deliver = deliver;
    }
    /** Takes a chunk; false when the stream breaks the protocol. */
    push(chunk) {
        this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
        for (;;) {
            const buffered = this.#buffered;
            if (buffered.length < 2)
                return true;
            const first = buffered[0];
            const second = buffered[1];
            const final = (first & 0x80) !== 0;
            const opcode = (first & 0x0f);
            const masked = (second & 0x80) !== 0;
            let length = second & 0x7f;
            let offset = 2;
            if (length === 126) {
                if (buffered.length < 4)
                    return true;
                length = buffered.readUInt16BE(2);
                offset = 4;
            }
            else if (length === 127) {
                if (buffered.length < 10)
                    return true;
                length = Number(buffered.readBigUInt64BE(2));
                offset = 10;
            }
            const maskOffset = offset;
            if (masked)
                offset += 4;
            if (buffered.length < offset + length)
                return true;
            const payload = Buffer.from(buffered.subarray(offset, offset + length));
            if (masked) {
                for (let index = 0; index < length; index += 1) {
                    payload[index] = payload[index] ^ buffered[maskOffset + (index & 3)];
                }
            }
            this.#buffered = buffered.subarray(offset + length);
            if (!this.#take(final, opcode, payload))
                return false;
        }
    }
    #take(final, opcode, payload) {
        if (opcode >= 8 /* Opcode.Close */) {
            this.#deliver(opcode, payload);
            return true;
        }
        if (opcode === 0 /* Opcode.Continuation */) {
            if (this.#fragmentedOpcode === undefined)
                return false;
        }
        else {
            if (this.#fragmentedOpcode !== undefined)
                return false;
            this.#fragmentedOpcode = opcode;
        }
        this.#fragments.push(payload);
        if (final) {
            const message = Buffer.concat(this.#fragments);
            const messageOpcode = this.#fragmentedOpcode;
            this.#fragments = [];
            this.#fragmentedOpcode = undefined;
            this.#deliver(messageOpcode, message);
        }
        return true;
    }
}
