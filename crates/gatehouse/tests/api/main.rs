//! Black-box tests: the real gatehouse on port 0, over real HTTP.

mod helpers;

mod accounts;
mod admin;
mod audit;
mod backends;
mod browser;
mod cli;
mod csrf;
mod damaged_store;
mod dependency_down;
mod disk_full;
mod hostile;
mod keys;
mod log_secrets;
mod memory;
mod metrics;
mod multinode;
mod nginx;
mod openapi;
mod packaging;
mod pages;
mod partition_proxy;
mod process;
mod redis_server;
mod revocation_feed;
mod route_matrix;
mod sessions;
mod slow_clients;
mod store_contract;
mod throttling;
mod tls;
mod token_attacks;
mod token_vectors;
mod tokens;
mod verify;
