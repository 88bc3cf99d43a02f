// Plain HTTP calls to the gateway, retried until answered: network errors, 5xx and 429 wait and
// try again (honouring `Retry-After`), a 401 asks the token callback for a fresh token once, and
// any other refusal is a typed error.

import { Backoff, type BackoffOptions, retryAfterSeconds } from "./backoff.js";
import { isRetryable, refusal } from "./errors.js";

/** A bearer token, or a function returning one: called again when the gateway refuses it. */
export type TokenOption = string | (() => string | Promise<string>);

/** The current token, fetched from the user's callback on first use and when refused. */
export class Tokens {
  readonly #option: TokenOption | undefined;
  #current: Promise<string> | undefined;

  constructor(option: TokenOption | undefined) {
    this.#option = option;
  }

  async current(): Promise<string | undefined> {
    if (this.#option === undefined) return undefined;
    this.#current ??= this.#fetch();
    return this.#current;
  }

  /** Drops the current token, so the next use asks the callback again. */
  refresh(): void {
    this.#current = undefined;
  }

  async #fetch(): Promise<string> {
    const option = this.#option;
    const token = typeof option === "function" ? option() : option;
    return (await token) ?? "";
  }
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  signal?: AbortSignal;
}

export class Http {
  readonly baseUrl: string;
  readonly tokens: Tokens;
  readonly backoff: BackoffOptions;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string, tokens: Tokens, backoff: BackoffOptions, fetchImpl: typeof fetch) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.tokens = tokens;
    this.backoff = backoff;
    this.#fetch = fetchImpl;
  }

  url(path: string, query: Query = {}): URL {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url;
  }

  /** `fetch` with the token, retried as the module says, up to an answer worth reading. */
  async open(
    method: string,
    path: string,
    options: RequestOptions = {},
    accept = "application/json",
    attempts = { count: 0 },
  ): Promise<Response> {
    const backoff = new Backoff(this.backoff);
    let refreshed = false;
    for (; ; attempts.count += 1) {
      const headers: Record<string, string> = { accept };
      const token = await this.tokens.current();
      if (token) headers.authorization = `Bearer ${token}`;
      if (options.body !== undefined) headers["content-type"] = "application/json";
      let response: Response;
      try {
        response = await this.#fetch(this.url(path, options.query), {
          method,
          headers,
          body: options.body === undefined ? undefined : JSON.stringify(options.body),
          signal: options.signal,
        });
      } catch {
        if (options.signal?.aborted) throw options.signal.reason;
        await backoff.wait(options.signal);
        continue;
      }
      if (response.status === 401 && !refreshed && token !== undefined) {
        refreshed = true;
        this.tokens.refresh();
        await response.body?.cancel();
        continue;
      }
      if (isRetryable(response.status)) {
        await response.body?.cancel();
        await backoff.wait(options.signal, retryAfterSeconds(response.headers.get("retry-after")));
        continue;
      }
      return response;
    }
  }

  /**
   * A JSON call: the status and parsed body of the first answer read whole, and whether an
   * earlier attempt may have reached the gateway (its answer lost on the way back).
   */
  async call(method: string, path: string, options: RequestOptions = {}): Promise<Answer> {
    const backoff = new Backoff(this.backoff);
    const attempts = { count: 0 };
    for (; ; attempts.count += 1) {
      const response = await this.open(method, path, options, "application/json", attempts);
      let text: string;
      try {
        text = await response.text();
      } catch {
        if (options.signal?.aborted) throw options.signal.reason;
        await backoff.wait(options.signal);
        continue;
      }
      const body: unknown = text === "" ? undefined : JSON.parse(text);
      return { status: response.status, body, retried: attempts.count > 0 };
    }
  }

  /** The parsed body of a 2xx answer, or the typed error of the refusal. */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const answer = await this.call(method, path, options);
    if (answer.status >= 300) throw refusal(answer.status, answer.body);
    return answer.body as T;
  }
}

export interface Answer {
  status: number;
  body: unknown;
  retried: boolean;
}
