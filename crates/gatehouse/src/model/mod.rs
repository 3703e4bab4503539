//! The bottom layer: ids, newtypes and secrets (`types`), the audit
//! vocabulary (`audit`) and paging cursors (`cursor`). The domain (`auth`),
//! the stores (`store`) and the configuration import it; it imports none of
//! them.

pub mod audit;
pub mod cursor;
pub mod types;
