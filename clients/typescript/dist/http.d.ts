import { type BackoffOptions } from "./backoff.js";
/** A bearer token, or a function returning one: called again when the gateway refuses it. */
export type TokenOption = string | (() => string | Promise<string>);
/** The current token, fetched from the user's callback on first use and when refused. */
export declare class Tokens {
    #private;
    constructor(option: TokenOption | undefined);
    current(): Promise<string | undefined>;
    /** Drops the current token, so the next use asks the callback again. */
    refresh(): void;
}
export type Query = Record<string, string | number | boolean | undefined>;
export interface RequestOptions {
    query?: Query;
    body?: unknown;
    signal?: AbortSignal;
}
export declare class Http {
    #private;
    readonly baseUrl: string;
    readonly tokens: Tokens;
    readonly backoff: BackoffOptions;
    constructor(baseUrl: string, tokens: Tokens, backoff: BackoffOptions, fetchImpl: typeof fetch);
    url(path: string, query?: Query): URL;
    /** `fetch` with the token, retried as the module says, up to an answer worth reading. */
    open(method: string, path: string, options?: RequestOptions, accept?: string, attempts?: {
        count: number;
    }): Promise<Response>;
    /**
     * A JSON call: the status and parsed body of the first answer read whole, and whether an
     * earlier attempt may have reached the gateway (its answer lost on the way back).
     */
    call(method: string, path: string, options?: RequestOptions): Promise<Answer>;
    /** The parsed body of a 2xx answer, or the typed error of the refusal. */
    json<T>(method: string, path: string, options?: RequestOptions): Promise<T>;
}
export interface Answer {
    status: number;
    body: unknown;
    retried: boolean;
}
