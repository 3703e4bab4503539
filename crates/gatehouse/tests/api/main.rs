//! Black-box tests: the real gatehouse on port 0, over real HTTP.

mod helpers;

mod accounts;
mod cli;
mod csrf;
mod hostile;
mod keys;
mod sessions;
mod throttling;
mod token_attacks;
mod tokens;
