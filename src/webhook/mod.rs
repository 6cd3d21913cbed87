//! The webhook (`entourage serve`): the HTTPS server, its TLS, the certificate and config reload, the CA bundle
//! patcher, metrics and the request log.

pub mod accept;
pub mod cli;
pub mod conn;
pub mod jsonlog;
pub mod limitranges;
pub mod logsink;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod tls;
