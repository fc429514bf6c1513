//! lq6 configuration (TOML). OWNED BY THE SERVER WORK (issue 4) except
//! `responder.rs` (issue 5). Placeholder until the server config lands.

pub mod responder;
pub use responder::{BulkConfig, LeasequeryConfig, MetricsConfig, QueryTypeName, RequestorPolicy};
