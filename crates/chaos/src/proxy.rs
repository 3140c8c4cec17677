//! A TCP proxy in front of PostgreSQL that can make it unreachable: while cut, new
//! connections are refused (nothing listens) and open ones are closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// A proxy from `listen` to `target`.
#[derive(Debug)]
pub(crate) struct Proxy {
    listen: SocketAddr,
    target: SocketAddr,
    running: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:`listen_port` to `target`.
    pub(crate) async fn start(listen_port: u16, target: SocketAddr) -> anyhow::Result<Self> {
        let proxy = Self {
            listen: SocketAddr::from(([127, 0, 0, 1], listen_port)),
            target,
            running: Arc::default(),
        };
        proxy.restore().await?;
        Ok(proxy)
    }

    /// Refuses new connections and closes the open ones.
    pub(crate) async fn cut(&self) {
        if let Some(task) = self.running.lock().await.take() {
            // Aborting the accept loop drops the listener and every connection task.
            task.abort();
            let _ = task.await;
        }
    }

    /// Accepts connections again.
    pub(crate) async fn restore(&self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.listen).await?;
        let target = self.target;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(forward(client, target));
            }
        });
        *self.running.lock().await = Some(task);
        Ok(())
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}
