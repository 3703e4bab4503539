//! A TCP proxy that can partition the path it carries: cut, it forwards
//! nothing in either direction and resets nothing (as a firewall that drops
//! packets would), so both ends see an open connection that has gone
//! silent; healed, it forwards again what it held back. Connections opened
//! while it is cut are accepted (the kernel completes the handshake) but
//! reach the upstream only once it heals.
//!
//! It runs on a thread and runtime of its own, so a test that blocks its
//! own runtime never stalls the path.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct PartitionProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    /// Dropping it stops the proxy's runtime, closing every connection.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PartitionProxy {
    /// A proxy to `upstream`, forwarding.
    pub fn start(upstream: SocketAddr) -> Self {
        let (cut, watching) = watch::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                bound
                    .send(listener.local_addr().expect("bound address"))
                    .expect("the test waits for the address");
                tokio::select! {
                    _ = stopped => {}
                    () = accept_loop(listener, upstream, watching) => {}
                }
            });
        });
        Self {
            addr: addr
                .recv_timeout(Duration::from_secs(5))
                .expect("the proxy binds"),
            cut,
            _stop: stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding, without closing anything.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let mut cut = cut.clone();
        tokio::spawn(async move {
            open(&mut cut).await;
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                pump(in_read, out_write, cut.clone()),
                pump(out_read, in_write, cut),
            );
        });
    }
}

/// Waits until the path is not cut.
async fn open(cut: &mut watch::Receiver<bool>) {
    let _ = cut.wait_for(|is_cut| !is_cut).await;
}

/// Copies `from` to `to`, holding each chunk back while the path is cut
/// (and reading nothing more meanwhile, so the sender's buffers fill as
/// they would behind a black hole).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        open(&mut cut).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        open(&mut cut).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    open(&mut cut).await;
    let _ = to.shutdown().await;
}
