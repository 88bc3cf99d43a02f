// What both entries (Node and browsers) export beside their `Client`.
export { ExpectedSeqConflict, Forbidden, InvalidEvent, NotFound, ProducerSeqConflict, StarciteError, Unauthorized, } from "./errors.js";
export { Gap } from "./session.js";
export { memoryStore, webStorageStore } from "./state.js";
