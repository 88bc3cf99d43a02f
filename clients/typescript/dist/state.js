// Durable producer state: where a producer's numbering stands, kept across page reloads and
// process restarts so a new `Producer` with the same id goes on without a duplicate.
/**
 * Keeps producer states in `localStorage` (across reloads and tabs of an origin) or
 * `sessionStorage` (across reloads of one tab), under `prefix` + key.
 */
export function webStorageStore(storage, prefix = "starcite:producer:") {
    return {
        get(key) {
            const saved = storage.getItem(prefix + key);
            const producerSeq = saved === null ? undefined : JSON.parse(saved).producerSeq;
            return typeof producerSeq === "number" ? { producerSeq } : undefined;
        },
        set(key, state) {
            storage.setItem(prefix + key, JSON.stringify(state));
        },
    };
}
/** Keeps producer states in this process only: a new `Producer` object continues an old one's. */
export function memoryStore() {
    const states = new Map();
    return {
        get: (key) => states.get(key),
        set: (key, state) => void states.set(key, state),
    };
}
