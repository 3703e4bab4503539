//! gatehouse: a self-hosted authentication and authorization server.
//!
//! Layers, top to bottom: [`http`] (axum routers), [`auth`] (the domain),
//! [`store`] (storage traits and backends), [`config`]. See
//! `docs/architecture.md`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fanout;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod revocation;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use app::Application;
pub use config::Config;
