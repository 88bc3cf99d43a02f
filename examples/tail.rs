//! `tail`: prints a session's events from a cursor, one JSON line each, then follows live.
//!
//! cargo run -q -p starcite-examples --bin tail -- <session id> [cursor] [gateway url]
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// A session id may hold any character, `/` and `?` included, so it goes into the path
/// percent-encoded; only the unreserved characters of RFC 3986 stay as they are.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(session_id) = args.first() else {
        eprintln!("usage: tail <session id> [cursor] [gateway url, default http://127.0.0.1:4000]");
        return ExitCode::from(2);
    };
    let cursor = args.get(1).map_or("0", String::as_str);
    let base = args.get(2).map_or("http://127.0.0.1:4000", String::as_str);
    let url = format!(
        "{}/v1/sessions/{}/tail?cursor={cursor}",
        base.replacen("http", "ws", 1),
        utf8_percent_encode(session_id, PATH_SEGMENT)
    );
    let mut socket = match connect_async(url.as_str()).await {
        Ok((socket, _)) => socket,
        Err(err) => {
            eprintln!("tail: cannot open {url}: {err}");
            return ExitCode::FAILURE;
        }
    };
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(event)) => println!("{event}"),
            Ok(Message::Close(frame)) => {
                eprintln!("tail: closed by the gateway: {frame:?}");
                break;
            }
            Ok(_) => {}
            Err(err) => {
                eprintln!("tail: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
