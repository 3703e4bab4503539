//! Mail: the templates mails are written from (`templates`), the SMTP
//! transport (`smtp`), and the outbox's sender (`sender`), which every node
//! runs: it claims due mails from the store, sends them, and retries with
//! backoff. What a mail says and when one is written is the domain's
//! (`auth::mail`, `auth::notices`); this layer imports the model, the
//! store's traits, the configuration, the clock and the metrics.

pub mod sender;
pub mod smtp;
pub mod templates;

pub use sender::Sender;
pub use smtp::Smtp;
pub use templates::{Rendered, Templates};
