//! What a Durable Streams request says in its headers and query, read strictly: a value the
//! protocol does not allow is a 400 before anything is read or written.

use poem::Request;

use super::super::error::{ApiError, ErrorCode};
use crate::sessions::model::{Expiry, Seq, SessionId};
use crate::sessions::streams::{EpochProducer, ForkSource, parse_instant};

/// The offset of a stream at `seq`: the reader has everything up to and including it. Fixed
/// width, so offsets compare as strings the way their seqs compare.
pub fn offset(seq: Seq) -> String {
    format!("{seq:020}")
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this seq (`-1` and no offset are 0).
    After(Seq),
    /// At the stream's tail, whatever it is when the read is served.
    Now,
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveMode {
    CatchUp,
    LongPoll,
    ServerSentEvents,
}

/// A read's query: `offset`, `live` and `cursor`; other parameters are ignored.
pub struct ReadQuery {
    pub start: Start,
    /// The offset as the client sent it, for the ETag.
    pub offset_text: String,
    pub live: LiveMode,
    pub cursor: Option<String>,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

pub fn read_query(request: &Request) -> Result<ReadQuery, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
            .map_err(|err| bad_request(format!("Invalid query: {err}")))?;
    let values = |name: &str| {
        pairs
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect::<Vec<_>>()
    };
    let (start, offset_given, offset_text) = match values("offset").as_slice() {
        [] => (Start::After(0), false, "-1".to_owned()),
        [raw] => (parse_offset(raw)?, true, (*raw).to_owned()),
        _ => return Err(bad_request("Give at most one `offset`")),
    };
    let live = match values("live").as_slice() {
        [] => LiveMode::CatchUp,
        ["long-poll"] => LiveMode::LongPoll,
        ["sse"] => LiveMode::ServerSentEvents,
        _ => return Err(bad_request("`live` is `long-poll` or `sse`")),
    };
    if live != LiveMode::CatchUp && !offset_given {
        return Err(bad_request("A live read needs an `offset`"));
    }
    let cursor = values("cursor").first().map(|cursor| (*cursor).to_owned());
    Ok(ReadQuery {
        start,
        offset_text,
        live,
        cursor,
    })
}

fn parse_offset(raw: &str) -> Result<Start, ApiError> {
    match raw {
        "-1" => Ok(Start::After(0)),
        "now" => Ok(Start::Now),
        _ => offset_seq(raw).map(Start::After),
    }
}

/// The seq an offset names: ours (digits), or `<seq>_<0>`, the shape other servers use at an
/// append's boundary.
fn offset_seq(raw: &str) -> Result<Seq, ApiError> {
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    let seq = match raw.split_once('_') {
        None if digits(raw) => raw,
        Some((seq, within))
            if digits(seq) && digits(within) && within.bytes().all(|b| b == b'0') =>
        {
            seq
        }
        _ => {
            return Err(bad_request(
                "Invalid offset: `-1`, `now` or an offset the stream gave",
            ));
        }
    };
    seq.parse()
        .map_err(|_| bad_request("Invalid offset: too large"))
}

/// `Stream-Forked-From` (a stream's path or URL), `Stream-Fork-Offset` and
/// `Stream-Fork-Sub-Offset`.
pub fn fork(request: &Request) -> Result<Option<ForkSource>, ApiError> {
    let from = header(request, "stream-forked-from")?;
    let at = header(request, "stream-fork-offset")?;
    let sub_offset = header(request, "stream-fork-sub-offset")?;
    let Some(from) = from else {
        if at.is_some() || sub_offset.is_some() {
            return Err(bad_request("Fork offsets need `Stream-Forked-From`"));
        }
        return Ok(None);
    };
    let path = match from.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |slash| &rest[slash..]),
        None => from,
    };
    let name = path.strip_prefix(super::PREFIX).unwrap_or(path);
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .map_err(|_| bad_request("`Stream-Forked-From` is not a stream"))?;
    let session =
        SessionId::parse(&name).map_err(|_| bad_request("`Stream-Forked-From` is not a stream"))?;
    let seq = at.map(offset_seq).transpose()?;
    let sub_offset = sub_offset
        .map(|raw| strict_integer(raw, "Stream-Fork-Sub-Offset"))
        .transpose()?
        .unwrap_or(0);
    if sub_offset > 0 && seq.is_none() {
        return Err(bad_request(
            "`Stream-Fork-Sub-Offset` needs `Stream-Fork-Offset`",
        ));
    }
    Ok(Some(ForkSource {
        session,
        seq,
        sub_offset,
    }))
}

/// A header's value, if present and readable as text.
pub fn header<'a>(request: &'a Request, name: &str) -> Result<Option<&'a str>, ApiError> {
    request
        .headers()
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| bad_request(format!("`{name}` is not text")))
        })
        .transpose()
}

/// A non-negative integer in plain decimal: no sign, no leading zero, no fraction.
fn strict_integer(raw: &str, name: &str) -> Result<u64, ApiError> {
    let canonical = raw == "0" || (!raw.starts_with('0') && !raw.is_empty());
    if !canonical || !raw.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad_request(format!(
            "`{name}` must be a non-negative integer"
        )));
    }
    raw.parse::<u64>()
        .ok()
        .filter(|value| *value <= crate::sessions::limits::MAX_INTEGER)
        .ok_or_else(|| bad_request(format!("`{name}` is too large")))
}

/// `Stream-TTL` (seconds idle) or `Stream-Expires-At` (an instant), not both.
pub fn expiry(request: &Request) -> Result<Option<Expiry>, ApiError> {
    match (
        header(request, "stream-ttl")?,
        header(request, "stream-expires-at")?,
    ) {
        (Some(_), Some(_)) => Err(bad_request(
            "Give `Stream-TTL` or `Stream-Expires-At`, not both",
        )),
        (Some(ttl), None) => Ok(Some(Expiry::IdleSeconds(strict_integer(
            ttl,
            "Stream-TTL",
        )?))),
        (None, Some(at)) => match parse_instant(at) {
            Some(_) => Ok(Some(Expiry::At(at.to_owned()))),
            None => Err(bad_request(
                "`Stream-Expires-At` must be an RFC 3339 timestamp",
            )),
        },
        (None, None) => Ok(None),
    }
}

/// `Stream-Closed: true`.
pub fn closes(request: &Request) -> Result<bool, ApiError> {
    Ok(header(request, "stream-closed")?.is_some_and(|value| value.eq_ignore_ascii_case("true")))
}

/// `Producer-Id`, `Producer-Epoch` and `Producer-Seq`, all or none.
pub fn producer(request: &Request) -> Result<Option<EpochProducer>, ApiError> {
    match (
        header(request, "producer-id")?,
        header(request, "producer-epoch")?,
        header(request, "producer-seq")?,
    ) {
        (None, None, None) => Ok(None),
        (Some(""), Some(_), Some(_)) => Err(bad_request("`Producer-Id` must not be empty")),
        (Some(id), Some(epoch), Some(seq)) => Ok(Some(EpochProducer {
            id: id.to_owned(),
            epoch: strict_integer(epoch, "Producer-Epoch")?,
            seq: strict_integer(seq, "Producer-Seq")?,
        })),
        _ => Err(bad_request(
            "`Producer-Id`, `Producer-Epoch` and `Producer-Seq` go together",
        )),
    }
}

/// The request's content type, if it names a `type/subtype`.
pub fn content_type(request: &Request) -> Result<Option<String>, ApiError> {
    Ok(header(request, "content-type")?
        .map(str::trim)
        .filter(|value| {
            let essence = value.split(';').next().unwrap_or_default();
            essence
                .split_once('/')
                .is_some_and(|(kind, sub)| !kind.trim().is_empty() && !sub.trim().is_empty())
        })
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_like_their_seqs_and_parse_back() {
        assert!(offset(9) < offset(10));
        assert_eq!(parse_offset(&offset(42)).ok(), Some(Start::After(42)));
        assert_eq!(parse_offset("0000_0000").ok(), Some(Start::After(0)));
        for bad in ["", " 1", "1,2", "../1", "-2", "abc", "1_2", "_0", "1_"] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_plain_decimals() {
        assert_eq!(strict_integer("0", "x").ok(), Some(0));
        assert_eq!(strict_integer("60", "x").ok(), Some(60));
        for bad in ["", "01", "+1", "-1", "1.5", "1e3", " 1"] {
            assert!(strict_integer(bad, "x").is_err(), "{bad:?}");
        }
    }
}
