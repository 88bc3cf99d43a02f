/** The latest `producer_seq` the gateway acknowledged for a producer. */
export interface ProducerState {
    producerSeq: number;
}
/**
 * Where producer states are kept, by key (`<session id>/<producer id>`). `get` and `set` may be
 * synchronous or return promises; `set` is called after every acknowledged append.
 */
export interface ProducerStateStore {
    get(key: string): ProducerState | undefined | Promise<ProducerState | undefined>;
    set(key: string, state: ProducerState): void | Promise<void>;
}
/** The part of the Web Storage API (`localStorage`, `sessionStorage`) a store needs. */
export interface WebStorage {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
}
/**
 * Keeps producer states in `localStorage` (across reloads and tabs of an origin) or
 * `sessionStorage` (across reloads of one tab), under `prefix` + key.
 */
export declare function webStorageStore(storage: WebStorage, prefix?: string): ProducerStateStore;
/** Keeps producer states in this process only: a new `Producer` object continues an old one's. */
export declare function memoryStore(): ProducerStateStore;
