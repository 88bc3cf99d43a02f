// Waiting between attempts: exponential backoff with full jitter, so clients cut off together
// do not come back together, and `Retry-After` when the gateway names a delay.

export interface BackoffOptions {
  /** The first delay's upper bound, in milliseconds (100 by default). */
  initialMs?: number;
  /** The largest delay, in milliseconds (5,000 by default). */
  maxMs?: number;
}

export class Backoff {
  #attempt = 0;
  readonly #initialMs: number;
  readonly #maxMs: number;

  constructor(options: BackoffOptions = {}) {
    this.#initialMs = options.initialMs ?? 100;
    this.#maxMs = options.maxMs ?? 5_000;
  }

  /** Waits before the next attempt: `retryAfterSeconds` when given, plus jitter. */
  async wait(signal?: AbortSignal, retryAfterSeconds?: number): Promise<void> {
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt += 1;
    const floor = retryAfterSeconds !== undefined ? retryAfterSeconds * 1_000 : 0;
    await sleep(floor + Math.random() * ceiling, signal);
  }

  /** After a success, the next failure starts from the shortest delay again. */
  reset(): void {
    this.#attempt = 0;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    const abort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** Seconds from a `Retry-After` header or a frame's `retry_after`, when it names a number. */
export function retryAfterSeconds(value: unknown): number | undefined {
  const seconds = typeof value === "string" ? Number(value) : value;
  return typeof seconds === "number" && Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}
