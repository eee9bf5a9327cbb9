//! avatar-edge: an HTTP origin for user avatars.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the code map.
#![forbid(unsafe_code)]

pub mod identicon;
pub mod model;
pub mod pipeline;
