// Refusals that retrying cannot fix, as typed errors. Retryable conditions (network errors,
// dropped sockets, 5xx, 429) never surface: the client waits and tries again until the caller
// aborts.
/** Any refusal from the gateway: `code` is the API's error code, `status` the HTTP status. */
export class StarciteError extends Error {
    code;
    status;
    /** The whole error body, e.g. `current_version` on an `expected_version_conflict`. */
    body;
    constructor(code, status, message, body = {}) {
        super(message);
        this.name = new.target.name;
        this.code = code;
        this.status = status;
        this.body = body;
    }
}
/** 409 `expected_seq_conflict`: the session's `last_seq` was not the `expectedSeq` given. */
export class ExpectedSeqConflict extends StarciteError {
}
/** 409 `producer_seq_conflict` or `producer_replay_conflict`: another writer is using this producer id. */
export class ProducerSeqConflict extends StarciteError {
}
/** 409 `expected_version_conflict`: the session's `version` is now `currentVersion`. */
export class ExpectedVersionConflict extends StarciteError {
    get currentVersion() {
        const version = this.body.current_version;
        return typeof version === "number" ? version : undefined;
    }
}
/** 409 `session_exists`: a session with this id already exists. */
export class SessionExists extends StarciteError {
}
/** 400 with any `invalid_*` code: the request breaks a rule of the API. */
export class InvalidEvent extends StarciteError {
}
/** 401 `unauthorized`, after the token callback was asked once for a fresh token. */
export class Unauthorized extends StarciteError {
}
/** 403 `forbidden_scope` or `forbidden_session`. */
export class Forbidden extends StarciteError {
}
/** 404: no such session (or another tenant's). */
export class NotFound extends StarciteError {
}
const KIND_OF_CODE = {
    expected_seq_conflict: ExpectedSeqConflict,
    producer_seq_conflict: ProducerSeqConflict,
    producer_replay_conflict: ProducerSeqConflict,
    expected_version_conflict: ExpectedVersionConflict,
    session_exists: SessionExists,
};
const KIND_OF_STATUS = {
    400: InvalidEvent,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
};
/** The typed error for a refusal with `status` and the API's `{error, message}` body. */
export function refusal(status, body) {
    const fields = typeof body === "object" && body !== null ? body : {};
    const code = typeof fields.error === "string" ? fields.error : `http_${status}`;
    const message = typeof fields.message === "string" ? fields.message : `the gateway answered ${status}`;
    const kind = KIND_OF_CODE[code] ?? KIND_OF_STATUS[status] ?? StarciteError;
    return new kind(code, status, message, fields);
}
// A producer socket's refusal frame carries the code alone: the status `POST /append` would give.
const STATUS_OF_CODE = {
    expected_seq_conflict: 409,
    producer_seq_conflict: 409,
    producer_replay_conflict: 409,
    session_not_found: 404,
    forbidden_scope: 403,
    forbidden_session: 403,
    unauthorized: 401,
    event_too_large: 413,
    payload_too_large: 413,
    rate_limited: 429,
    internal_error: 500,
    nats_unavailable: 503,
    nats_timeout: 503,
};
/** The status an API error `code` is answered with over HTTP. */
export function statusOf(code) {
    return STATUS_OF_CODE[code] ?? (code.startsWith("invalid_") ? 400 : 500);
}
/** Whether a refusal is worth the same request again later: overload, unavailability, a crash. */
export function isRetryable(status) {
    return status === 429 || status >= 500;
}
