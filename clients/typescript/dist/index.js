// What both entries (Node and browsers) export beside their `Client`.
export { ExpectedSeqConflict, ExpectedVersionConflict, Forbidden, InvalidEvent, NotFound, ProducerSeqConflict, SessionExists, StarciteError, Unauthorized, } from "./errors.js";
export { Gap } from "./session.js";
export { memoryStore, webStorageStore } from "./state.js";
