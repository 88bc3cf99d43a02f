// Durable producer state: where a producer's numbering stands, kept across page reloads and
// process restarts so a new `Producer` with the same id goes on without a duplicate.

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
export function webStorageStore(storage: WebStorage, prefix = "starcite:producer:"): ProducerStateStore {
  return {
    get(key) {
      const saved = storage.getItem(prefix + key);
      const producerSeq: unknown = saved === null ? undefined : (JSON.parse(saved) as ProducerState).producerSeq;
      return typeof producerSeq === "number" ? { producerSeq } : undefined;
    },
    set(key, state) {
      storage.setItem(prefix + key, JSON.stringify(state));
    },
  };
}

/** Keeps producer states in this process only: a new `Producer` object continues an old one's. */
export function memoryStore(): ProducerStateStore {
  const states = new Map<string, ProducerState>();
  return {
    get: (key) => states.get(key),
    set: (key, state) => void states.set(key, state),
  };
}
