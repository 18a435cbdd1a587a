//! A loopback TCP proxy that tests can break on purpose: refuse new
//! connections, cut open ones, or freeze them (bytes stop flowing but the
//! sockets stay open: the silent stall a read timeout must catch).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const FREEZE: u8 = 1;
const CUT: u8 = 2;

/// A running proxy to `upstream`; stops when dropped.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(PASS));
        let (epoch, _) = watch::channel(0u64);
        let m = mode.clone();
        let e = epoch.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (m, mut rx) = (m.clone(), e.subscribe());
                match m.load(Ordering::SeqCst) {
                    // A stalled server still completes the TCP handshake but
                    // never says hello: hold the socket until healed.
                    FREEZE => {
                        tokio::spawn(async move {
                            hold(&mut rx).await;
                            drop(client);
                        });
                        continue;
                    }
                    CUT => {
                        drop(client);
                        continue;
                    }
                    _ => {}
                }
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, m, rx).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            mode,
            epoch,
            task,
        })
    }

    /// Stops forwarding on open connections without closing them; new
    /// connections are accepted but hear nothing (a stalled server).
    pub fn freeze(&self) {
        self.mode.store(FREEZE, Ordering::SeqCst);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Forwards again (frozen connections stay dead: their peers gave up).
    pub fn heal(&self) {
        self.epoch.send_modify(|e| *e += 1);
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.epoch.send_modify(|e| *e += 1);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mode: Arc<AtomicU8>,
    mut epoch: watch::Receiver<u64>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = epoch.changed() => return,
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if mode.load(Ordering::SeqCst) == FREEZE { hold(&mut epoch).await; return; }
                    if sw.write_all(&a[..n]).await.is_err() { return; }
                }
            },
            n = sr.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if mode.load(Ordering::SeqCst) == FREEZE { hold(&mut epoch).await; return; }
                    if cw.write_all(&b[..n]).await.is_err() { return; }
                }
            },
        }
    }
}

/// A frozen connection: keep both sockets open, forward nothing, until the
/// proxy is healed or dropped.
async fn hold(epoch: &mut watch::Receiver<u64>) {
    let _ = epoch.changed().await;
}
