//! What every guichet service shares.
//!
//! - [`proto`]: the contract's generated types (messages, gRPC stubs, JSON);
//! - [`config`] and [`secret`]: typed configuration, validated once at start;
//! - [`telemetry`]: logs, metrics, and the pseudonymization that keeps
//!   personal data out of them;
//! - [`bus`]: the NATS connection, the JetStream topology, and the one
//!   publish path that every adapter uses;
//! - [`ids`] and [`identity`]: contact ids, request references, and the
//!   normalization of the identifiers that make one usager;
//! - [`privacy`]: the keyed pseudonyms of logs and identity keys;
//! - [`request`]: the request record the router and the lifecycle share;
//! - [`admin`]: health, readiness and Prometheus metrics over HTTP;
//! - [`grpc`]: what the gRPC services share (bearer tokens, TLS, limits,
//!   health following the broker);
//! - [`backoff`]: the doubling delay of retry loops;
//! - [`nats_server`]: a `nats-server` child process (embedded mode, tests).

pub mod admin;
pub mod backoff;
pub mod bus;
pub mod config;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod ids;
pub mod nats_server;
pub mod privacy;
pub mod proto;
pub mod request;
pub mod secret;
pub mod service;
pub mod telemetry;

pub use bus::Bus;
pub use error::{Error, Result};
pub use service::ServiceContext;
