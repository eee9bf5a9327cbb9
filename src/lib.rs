//! avatar-edge: an HTTP origin for user avatars.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the code map.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cache;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod events;
pub mod fallback;
pub mod http;
pub mod identicon;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod negotiate;
pub mod ops;
pub mod pipeline;
pub mod policy;
pub mod service;
pub mod spec;
pub mod store;
pub mod workers;
