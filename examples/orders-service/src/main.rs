//! `orders-service`: the example resource service on its own.
//!
//! Configuration from the environment (not `GATEHOUSE_*`, which gatehouse
//! itself reads and checks):
//! - `ORDERS_ISSUER`: gatehouse's issuer (default `http://127.0.0.1:8080`);
//! - `ORDERS_LISTEN`: where to serve (default `127.0.0.1:3000`);
//! - `ORDERS_FEED_KEY`: a resource-server key (`gatehouse resource-server
//!   create orders`), to refuse logged-out sessions' tokens at once; without
//!   it they are accepted until they expire.

use anyhow::Context as _;
use gatehouse_verify::Verifier;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issuer =
        std::env::var("ORDERS_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let listen = std::env::var("ORDERS_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let mut builder = Verifier::builder(issuer);
    if let Ok(key) = std::env::var("ORDERS_FEED_KEY") {
        builder = builder.revocation_feed(key);
    }
    let verifier = builder.build().context("configuring the verifier")?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("ORDERS_LISTEN: cannot bind {listen}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, orders_service::app(verifier))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(())
}
