//! A TCP proxy on loopback that a test can cut: every connection through it drops, and new
//! ones are refused until it heals. Stands between one gateway and NATS to make that gateway
//! alone miss what happens meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub url: String,
    refusing: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards `127.0.0.1:<new port>` to `target` (`host:port`).
    pub async fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let refusing = Arc::new(AtomicBool::new(false));
        let connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = target.to_owned();
        let accepting = tokio::spawn({
            let (refusing, connections) = (refusing.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if refusing.load(Ordering::Acquire) {
                        continue;
                    }
                    let target = target.clone();
                    let piping = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(piping);
                }
            }
        });
        TcpProxy {
            url,
            refusing,
            connections,
            accepting,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::Release);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn heal(&self) {
        self.refusing.store(false, Ordering::Release);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
