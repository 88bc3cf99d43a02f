/** Any refusal from the gateway: `code` is the API's error code, `status` the HTTP status. */
export declare class StarciteError extends Error {
    readonly code: string;
    readonly status: number;
    /** The whole error body, e.g. `current_version` on an `expected_version_conflict`. */
    readonly body: Record<string, unknown>;
    constructor(code: string, status: number, message: string, body?: Record<string, unknown>);
}
/** 409 `expected_seq_conflict`: the session's `last_seq` was not the `expectedSeq` given. */
export declare class ExpectedSeqConflict extends StarciteError {
}
/** 409 `producer_seq_conflict` or `producer_replay_conflict`: another writer is using this producer id. */
export declare class ProducerSeqConflict extends StarciteError {
}
/** 409 `expected_version_conflict`: the session's `version` is now `currentVersion`. */
export declare class ExpectedVersionConflict extends StarciteError {
    get currentVersion(): number | undefined;
}
/** 409 `session_exists`: a session with this id already exists. */
export declare class SessionExists extends StarciteError {
}
/** 400 with any `invalid_*` code: the request breaks a rule of the API. */
export declare class InvalidEvent extends StarciteError {
}
/** 401 `unauthorized`, after the token callback was asked once for a fresh token. */
export declare class Unauthorized extends StarciteError {
}
/** 403 `forbidden_scope` or `forbidden_session`. */
export declare class Forbidden extends StarciteError {
}
/** 404: no such session (or another tenant's). */
export declare class NotFound extends StarciteError {
}
/** The typed error for a refusal with `status` and the API's `{error, message}` body. */
export declare function refusal(status: number, body: unknown): StarciteError;
/** The status an API error `code` is answered with over HTTP. */
export declare function statusOf(code: string): number;
/** Whether a refusal is worth the same request again later: overload, unavailability, a crash. */
export declare function isRetryable(status: number): boolean;
