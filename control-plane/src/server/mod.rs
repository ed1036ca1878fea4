//! The HTTP(S) server.

pub mod http;
