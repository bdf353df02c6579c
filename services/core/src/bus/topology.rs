//! Creating and reconciling the JetStream topology, idempotently.
//!
//! Streams are created when missing and updated when a setting guichet
//! owns has changed (retention, duplicate window, replicas, size limit).
//! What JetStream cannot change in place (storage type, subjects taken by
//! another stream, retention policy) is reported as [`Error::Incompatible`]
//! with the fix, never "repaired" by deleting data.

use async_nats::jetstream::{
    self, kv, object_store,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};

use super::{Stores, subjects::*};
use crate::{
    Error,
    config::{StorageKind, TopologyConfig},
};

fn storage(config: &TopologyConfig) -> StorageType {
    match config.storage {
        StorageKind::File => StorageType::File,
        StorageKind::Memory => StorageType::Memory,
    }
}

/// The stream configurations guichet wants.
pub fn stream_configs(config: &TopologyConfig) -> Vec<stream::Config> {
    let base = |name: &str, subject: &str, max_age| stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: storage(config),
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_age,
        max_message_size: config.max_message_size,
        discard: DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    };
    vec![
        stream::Config {
            description: Some("guichet: every contact as received, normalized by its adapter".into()),
            ..base(INTAKE_STREAM, INTAKE_ALL, config.intake_max_age)
        },
        stream::Config {
            description: Some("guichet: routed requests; the journal and the service queues".into()),
            ..base(ROUTED_STREAM, ROUTED_ALL, config.routed_max_age)
        },
        stream::Config {
            description: Some("guichet: messages that could not be processed, with the reason".into()),
            ..base(DEADLETTER_STREAM, DEADLETTER_ALL, config.deadletter_max_age)
        },
        stream::Config {
            description: Some("guichet: review and audit events".into()),
            ..base(EVENTS_STREAM, EVENTS_ALL, config.routed_max_age)
        },
    ]
}

/// Creates what is missing, updates what drifted, opens the stores.
pub async fn ensure_topology(js: &jetstream::Context, config: &TopologyConfig) -> Result<Stores, Error> {
    for wanted in stream_configs(config) {
        ensure_stream(js, wanted).await?;
    }
    let kv = |bucket: &str, history: i64, max_age| kv::Config {
        bucket: bucket.to_owned(),
        history,
        max_age,
        storage: storage(config),
        num_replicas: config.replicas,
        ..Default::default()
    };
    let no_expiry = std::time::Duration::ZERO;
    Ok(Stores {
        identity: ensure_kv(js, kv(IDENTITY_BUCKET, 5, no_expiry)).await?,
        requests: ensure_kv(js, kv(REQUESTS_BUCKET, 5, no_expiry)).await?,
        checkpoints: ensure_kv(js, kv(CHECKPOINTS_BUCKET, 5, no_expiry)).await?,
        config: ensure_kv(js, kv(CONFIG_BUCKET, 64, no_expiry)).await?,
        replay_guard: ensure_kv(js, kv(REPLAY_GUARD_BUCKET, 1, config.replay_guard_ttl)).await?,
        leases: ensure_kv(js, kv(LEASES_BUCKET, 1, std::time::Duration::from_secs(30))).await?,
        attachments: ensure_object_store(js, config).await?,
    })
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), Error> {
    let name = wanted.name.clone();
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let have = existing
                .info()
                .await
                .map_err(|e| Error::Topology {
                    what: format!("reading stream {name}"),
                    reason: e.to_string(),
                })?
                .config
                .clone();
            if have.storage != wanted.storage {
                return Err(Error::Incompatible {
                    kind: "stream",
                    name,
                    detail: format!("storage is {:?}, the configuration asks for {:?}", have.storage, wanted.storage),
                    fix: "set `topology.storage` to match, or back up and delete the stream (`nats stream rm`) so guichet recreates it".into(),
                });
            }
            if have.retention != wanted.retention {
                return Err(Error::Incompatible {
                    kind: "stream",
                    name,
                    detail: format!("retention policy is {:?}, guichet needs Limits", have.retention),
                    fix: "back up and delete the stream so guichet recreates it".into(),
                });
            }
            let drifted = have.subjects != wanted.subjects
                || have.max_age != wanted.max_age
                || have.duplicate_window != wanted.duplicate_window
                || have.num_replicas != wanted.num_replicas
                || have.max_message_size != wanted.max_message_size
                || have.allow_direct != wanted.allow_direct;
            if drifted {
                tracing::info!(stream = %name, "updating stream settings to the configuration");
                js.update_stream(&wanted).await.map_err(|e| Error::Incompatible {
                    kind: "stream",
                    name: name.clone(),
                    detail: format!("the server refused the update: {e}"),
                    fix: "compare `nats stream info` with the `topology` section and align them".into(),
                })?;
            }
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            tracing::info!(stream = %name, "creating stream");
            js.create_stream(wanted).await.map(|_| ()).map_err(|e| {
                let reason = e.to_string();
                if reason.contains("overlap") {
                    Error::Incompatible {
                        kind: "stream",
                        name: name.clone(),
                        detail: format!("its subjects are taken by another stream ({reason})"),
                        fix: "remove or narrow the other stream's subjects (`nats stream ls`, `nats stream info`)"
                            .into(),
                    }
                } else {
                    Error::Topology {
                        what: format!("creating stream {name}"),
                        reason,
                    }
                }
            })
        }
        Err(e) => Err(Error::Topology {
            what: format!("looking up stream {name}"),
            reason: e.to_string(),
        }),
    }
}

async fn ensure_kv(js: &jetstream::Context, wanted: kv::Config) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(&wanted.bucket).await {
        return Ok(store);
    }
    let bucket = wanted.bucket.clone();
    js.create_key_value(wanted).await.map_err(|e| Error::Topology {
        what: format!("creating key-value bucket {bucket}"),
        reason: e.to_string(),
    })
}

async fn ensure_object_store(
    js: &jetstream::Context,
    config: &TopologyConfig,
) -> Result<object_store::ObjectStore, Error> {
    if let Ok(store) = js.get_object_store(ATTACHMENTS_STORE).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: ATTACHMENTS_STORE.to_owned(),
        description: Some("guichet: raw e-mails and attachments, by SHA-256".into()),
        storage: storage(config),
        num_replicas: config.replicas,
        // Aligned with the streams that point at the files (see why there).
        max_age: config.attachments_max_age(),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Topology {
        what: format!("creating object store {ATTACHMENTS_STORE}"),
        reason: e.to_string(),
    })
}
