// What both entries (Node and browsers) export beside their `Client`.

export type { BackoffOptions } from "./backoff.js";
export type { ClientOptions, LifecycleEntry, ListOptions, SessionList } from "./client.js";
export {
  ExpectedSeqConflict,
  ExpectedVersionConflict,
  Forbidden,
  InvalidEvent,
  NotFound,
  ProducerSeqConflict,
  SessionExists,
  StarciteError,
  Unauthorized,
} from "./errors.js";
export type { components, paths } from "./generated/schema.js";
export type { TokenOption } from "./http.js";
export type { Transport } from "./live.js";
export type { Ack, NewEvent, Producer, ProducerOptions } from "./producer.js";
export { Gap, type EventPage, type PatchOptions, type Session, type SessionInfo, type TailEvent, type TailOptions } from "./session.js";
export { memoryStore, type ProducerState, type ProducerStateStore, type WebStorage, webStorageStore } from "./state.js";
