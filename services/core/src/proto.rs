//! The contract's generated types, from `proto/guichet/v1`.
//!
//! Messages are prost structs with serde implementations that follow the
//! proto3 JSON mapping (pbjson), so the same types serve the wire, golden
//! files and the JSON samples of `guichet rules test`.

/// Package `guichet.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::unwrap_used, missing_docs)]
    tonic::include_proto!("guichet.v1");
    include!(concat!(env!("OUT_DIR"), "/guichet.v1.serde.rs"));
}

/// The encoded file descriptor set of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guichet_descriptor.bin"));

/// Converts a chrono instant to the protobuf timestamp used in the contract.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Converts a protobuf timestamp back; `None` when out of range.
pub fn to_datetime(ts: &pbjson_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

impl v1::Channel {
    /// The subject token of the channel: `guichet.intake.<token>`.
    pub fn token(self) -> &'static str {
        match self {
            v1::Channel::Unspecified => "unspecified",
            v1::Channel::Email => "email",
            v1::Channel::Web => "web",
            v1::Channel::Phone => "phone",
            v1::Channel::Counter => "counter",
            v1::Channel::Postal => "postal",
        }
    }

    /// Parses a subject token or a lower-case name ("email", "counter" ...).
    pub fn from_token(token: &str) -> Option<Self> {
        Some(match token.trim().to_ascii_lowercase().as_str() {
            "email" | "mail" | "e-mail" => v1::Channel::Email,
            "web" => v1::Channel::Web,
            "phone" => v1::Channel::Phone,
            "counter" => v1::Channel::Counter,
            "postal" => v1::Channel::Postal,
            _ => return None,
        })
    }
}
