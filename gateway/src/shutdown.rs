//! One shutdown signal that reaches every open tail, so sockets close with "going away", and
//! a way to wait until every holder has finished.

use tokio::sync::{mpsc, watch};

/// Fires once; every clone sees it. Each clone also counts as a holder the trigger waits for.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
    _holder: mpsc::Sender<()>,
}

/// The sending side, held by whoever decides to stop.
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
    holders: mpsc::Receiver<()>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        let (holder, holders) = mpsc::channel(1);
        (
            ShutdownTrigger { sender, holders },
            Shutdown {
                receiver,
                _holder: holder,
            },
        )
    }

    /// Resolves once shutdown has begun (or its trigger is gone).
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped, which also means stop.
        let _ = self.receiver.wait_for(|stopping| *stopping).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves when every `Shutdown` clone is gone: each open tail holds one until its last
    /// frame is written.
    pub async fn drained(mut self) {
        // Nobody sends; `recv` returns `None` once the last holder is dropped.
        while self.holders.recv().await.is_some() {}
    }
}
