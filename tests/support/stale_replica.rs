//! A replica that has not caught up, as Direct Get callers see it: it listens to a stream's
//! Direct Get requests on one server and answers each "nothing from there on", as a real
//! follower does while it still lacks the newest messages. On a node that holds no replica,
//! of a cluster whose nodes are far apart (`TestCluster::start_with`), its answer reaches the
//! node's clients long before the real replicas' answers: where a real lagging follower
//! answers stale only sometimes, this one does every time. (The servers reserve JetStream's own queue group for themselves, so it
//! listens beside the group rather than in it.)
//!
//! It speaks the NATS client protocol by hand because replies need a status line
//! (`NATS/1.0 404`) that the client crate does not send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};

pub struct StaleReplica {
    socket: TcpStream,
}

impl StaleReplica {
    /// Answers the Direct Gets of `stream` on the node at `url` (`nats://host:port`), from a
    /// thread of its own so that it answers as promptly as a server would.
    pub async fn start(url: &str, stream: &str) -> StaleReplica {
        let address = url.trim_start_matches("nats://").to_owned();
        let stream = stream.to_owned();
        tokio::task::spawn_blocking(move || StaleReplica::listen(&address, &stream))
            .await
            .unwrap()
    }

    fn listen(address: &str, stream: &str) -> StaleReplica {
        let socket = TcpStream::connect(address).unwrap();
        socket.set_nodelay(true).unwrap();
        let mut read = BufReader::new(socket.try_clone().unwrap());
        let mut write = socket.try_clone().unwrap();
        let mut info = String::new();
        read.read_line(&mut info).unwrap();
        assert!(info.starts_with("INFO "), "not a NATS server: {info}");
        let subscribe = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}}\r\n\
             SUB $JS.API.DIRECT.GET.{stream} 1\r\n\
             SUB $JS.API.DIRECT.GET.{stream}.> 2\r\n\
             PING\r\n"
        );
        write.write_all(subscribe.as_bytes()).unwrap();
        // The PONG says the subscriptions are in place on the server.
        loop {
            let mut line = String::new();
            read.read_line(&mut line).unwrap();
            if line.starts_with("PONG") {
                break;
            }
            assert!(!line.starts_with("-ERR"), "refused: {line}");
        }
        std::thread::spawn(move || answer(read, write));
        StaleReplica { socket }
    }
}

/// Answers until the connection closes.
fn answer(mut read: BufReader<TcpStream>, mut write: TcpStream) {
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["PING"] => "PONG\r\n".to_owned(),
            // MSG <subject> <sid> <reply> <bytes>, HMSG … <header bytes> <total bytes>.
            ["MSG", _, _, reply, size] | ["HMSG", _, _, reply, _, size] => {
                let size: usize = size.parse().unwrap();
                let mut payload = vec![0; size + 2];
                if read.read_exact(&mut payload).is_err() {
                    return;
                }
                let header = "NATS/1.0 404 Message Not Found\r\n\r\n";
                format!("HPUB {reply} {0} {0}\r\n{header}\r\n", header.len())
            }
            _ => continue,
        };
        if write.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for StaleReplica {
    fn drop(&mut self) {
        // Ends the answering thread: its reads fail.
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}
