//! `tail`: prints a session's events from a cursor, one JSON line each, then follows live.
//!
//! cargo run -q -p starcite-tests --bin tail -- <session id> [cursor] [gateway url]
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use futures::StreamExt;
use starcite_tests::path_segment;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

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
        path_segment(session_id)
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
