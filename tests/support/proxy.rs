//! A TCP proxy on loopback that a test can cut: every connection through it drops, and new
//! ones are refused until it heals. Stands between one gateway and NATS to make that gateway
//! alone miss what happens meanwhile. It can also freeze its open connections: they stay open
//! but carry nothing more, as after a NAT or Wi-Fi change that neither end is told of. Or it
//! can stop only what the target sends: requests still arrive, and their answers are lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct TcpProxy {
    pub url: String,
    /// `host:port` that new connections are forwarded to.
    target: Arc<std::sync::Mutex<String>>,
    refusing: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    /// Counts `freeze` calls; each connection stops forwarding when it changes.
    freezes: watch::Sender<u64>,
    /// Counts `stop_replies` calls; each connection stops forwarding the target's bytes when
    /// it changes.
    reply_stops: watch::Sender<u64>,
    /// Frozen connections' sockets, held open until `cut`.
    frozen: Arc<std::sync::Mutex<Vec<(TcpStream, TcpStream)>>>,
    accepting: JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards `127.0.0.1:<new port>` to `target` (`host:port`).
    pub async fn start(target: &str) -> TcpProxy {
        TcpProxy::start_with_latency(target, Duration::ZERO).await
    }

    /// Like `start`, but every byte arrives `latency` late, in both directions: a link to a
    /// distant site.
    pub async fn start_with_latency(target: &str, latency: Duration) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let refusing = Arc::new(AtomicBool::new(false));
        let connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = Arc::new(std::sync::Mutex::new(target.to_owned()));
        let (freezes, freezing) = watch::channel(0);
        let (reply_stops, stopping_replies) = watch::channel(0);
        let frozen: Arc<std::sync::Mutex<Vec<(TcpStream, TcpStream)>>> = Arc::default();
        let accepting = tokio::spawn({
            let (refusing, connections, target, frozen) = (
                refusing.clone(),
                connections.clone(),
                target.clone(),
                frozen.clone(),
            );
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if refusing.load(Ordering::Acquire) {
                        continue;
                    }
                    let target = target.lock().unwrap().clone();
                    let (mut freezing, frozen) = (freezing.clone(), frozen.clone());
                    freezing.mark_unchanged();
                    let mut stopping_replies = stopping_replies.clone();
                    stopping_replies.mark_unchanged();
                    let piping = tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        // Forwarded as it comes: Nagle's algorithm would hold back the tail of
                        // each message for the peer's delayed ACK.
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        if latency.is_zero() {
                            let (froze, replies_stopped) = tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => (false, false),
                                changed = freezing.changed() => (changed.is_ok(), false),
                                changed = stopping_replies.changed() => (false, changed.is_ok()),
                            };
                            if froze {
                                frozen.lock().unwrap().push((client, server));
                            } else if replies_stopped {
                                // What was read from either side and not yet written is lost.
                                let _ = tokio::io::copy(&mut client, &mut server).await;
                            }
                            return;
                        }
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pipe_late(client_read, server_write, latency),
                            pipe_late(server_read, client_write, latency)
                        );
                    });
                    connections.lock().unwrap().push(piping);
                }
            }
        });
        TcpProxy {
            url,
            target,
            refusing,
            connections,
            freezes,
            reply_stops,
            frozen,
            accepting,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::Release);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        self.frozen.lock().unwrap().clear();
    }

    /// Stops forwarding on every open connection without closing it, until `cut` (a proxy
    /// started without latency only); new connections work as before.
    pub fn freeze(&self) {
        self.freezes.send_modify(|freezes| *freezes += 1);
    }

    /// Stops forwarding what the target sends on every open connection, while what clients
    /// send still reaches it, until `cut` (a proxy started without latency only).
    pub fn stop_replies(&self) {
        self.reply_stops.send_modify(|stops| *stops += 1);
    }

    pub fn heal(&self) {
        self.refusing.store(false, Ordering::Release);
    }

    /// Forwards connections made from now on to `target` (`host:port`): the same address for
    /// clients while what stands behind it moves, as a load balancer would.
    pub fn retarget(&self, target: &str) {
        *self.target.lock().unwrap() = target.to_owned();
    }
}

/// Copies `from` to `to`, each chunk `latency` after it was read, in order.
async fn pipe_late(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, latency: Duration) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            if chunks
                .send((Instant::now() + latency, buffer[..read].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let writing = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reading, writing);
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
