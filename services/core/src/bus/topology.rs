//! Creating and reconciling the JetStream topology, idempotently.
//!
//! Streams are created when missing and updated when a setting guichet
//! owns has changed (retention, duplicate window, replicas, size limit).
//! KV buckets and the object store are streams too (`KV_<bucket>`,
//! `OBJ_<bucket>`): their replicas, age limit (TTL) and history are
//! reconciled the same way, so moving to `topology.replicas = 3` moves
//! identities, requests and files to three nodes, and a new
//! `replay_guard_ttl` applies. What JetStream cannot change in place
//! (storage type, subjects taken by another stream, retention policy, a
//! replica count the cluster cannot hold) is reported as
//! [`Error::Incompatible`] with the fix, never "repaired" by deleting data.
//!
//! Several processes may start together: a stream or bucket created by a
//! peer meanwhile is found (and reconciled) at the next attempt, and
//! failures that an election or a busy cluster explains (time-outs, "temporarily
//! unavailable") are [`Error::Topology`], which `Bus::start` retries.

use std::time::Duration;

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

/// A stream's configuration as the server has it; `None` when missing.
async fn existing_config(js: &jetstream::Context, name: &str) -> Result<Option<stream::Config>, Error> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::Topology {
            what: format!("looking up stream {name}"),
            reason: e.to_string(),
        }),
    }
}

/// An update the server refused: retried when an election or a busy
/// cluster explains it, otherwise the configuration must change.
fn update_refused(kind: &'static str, name: &str, e: &jetstream::context::UpdateStreamError, fix: &str) -> Error {
    use jetstream::context::CreateStreamErrorKind as Kind;
    let transient = match e.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(js) => js.code() == 503,
        _ => false,
    };
    if transient {
        Error::Topology {
            what: format!("updating {kind} {name}"),
            reason: e.to_string(),
        }
    } else {
        Error::Incompatible {
            kind,
            name: name.to_owned(),
            detail: format!("the server refused the update: {e}"),
            fix: fix.to_owned(),
        }
    }
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), Error> {
    let name = wanted.name.clone();
    if let Some(have) = existing_config(js, &name).await? {
        return reconcile_stream(js, &wanted, have).await;
    }
    tracing::info!(stream = %name, "creating stream");
    let Err(e) = js.create_stream(wanted.clone()).await else {
        return Ok(());
    };
    let reason = e.to_string();
    if reason.contains("overlap") {
        return Err(Error::Incompatible {
            kind: "stream",
            name,
            detail: format!("its subjects are taken by another stream ({reason})"),
            fix: "remove or narrow the other stream's subjects (`nats stream ls`, `nats stream info`)".into(),
        });
    }
    // A peer starting at the same time may have created it first ("already
    // in use"): that is success once its settings are reconciled.
    match existing_config(js, &name).await {
        Ok(Some(have)) => reconcile_stream(js, &wanted, have).await,
        _ => Err(Error::Topology {
            what: format!("creating stream {name}"),
            reason,
        }),
    }
}

/// Brings an existing stream to `wanted`, or says why it cannot be.
async fn reconcile_stream(js: &jetstream::Context, wanted: &stream::Config, have: stream::Config) -> Result<(), Error> {
    let name = wanted.name.clone();
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
        js.update_stream(wanted).await.map_err(|e| {
            update_refused(
                "stream",
                &name,
                &e,
                "compare `nats stream info` with the `topology` section and align them",
            )
        })?;
    }
    Ok(())
}

/// The settings guichet owns in a KV bucket's or the object store's stream.
struct StoreSettings<'a> {
    /// "key-value bucket" or "object store".
    kind: &'static str,
    bucket: &'a str,
    stream: String,
    storage: StorageType,
    replicas: usize,
    /// Zero: no expiry.
    max_age: Duration,
    /// Values kept per key (KV only).
    history: Option<i64>,
}

/// Reconciles an existing store's stream with `wanted`, in place.
/// `Ok(false)`: the store does not exist.
async fn reconcile_store(js: &jetstream::Context, wanted: &StoreSettings<'_>) -> Result<bool, Error> {
    let Some(have) = existing_config(js, &wanted.stream).await? else {
        return Ok(false);
    };
    let (kind, bucket) = (wanted.kind, wanted.bucket);
    if have.storage != wanted.storage {
        return Err(Error::Incompatible {
            kind,
            name: bucket.to_owned(),
            detail: format!(
                "storage is {:?}, the configuration asks for {:?} (JetStream cannot change it in place)",
                have.storage, wanted.storage
            ),
            fix: format!(
                "set `topology.storage` back, or back up `{bucket}` (`nats stream backup {}`), delete it so guichet recreates it, and restore its content",
                wanted.stream
            ),
        });
    }
    let mut updated = have.clone();
    updated.num_replicas = wanted.replicas;
    updated.max_age = wanted.max_age;
    if let Some(history) = wanted.history {
        updated.max_messages_per_subject = history;
    }
    // The server refuses a duplicate window longer than the age limit.
    if !updated.max_age.is_zero() && updated.duplicate_window > updated.max_age {
        updated.duplicate_window = updated.max_age;
    }
    if updated != have {
        tracing::info!(
            store = bucket,
            replicas = format!("{} -> {}", have.num_replicas, updated.num_replicas),
            max_age = ?updated.max_age,
            history = updated.max_messages_per_subject,
            "updating {kind} settings to the configuration"
        );
        js.update_stream(&updated).await.map_err(|e| {
            update_refused(
                kind,
                bucket,
                &e,
                "`topology.replicas` must not exceed the JetStream nodes of the cluster; compare `nats stream info` with the `topology` section and align them",
            )
        })?;
    }
    Ok(true)
}

async fn ensure_kv(js: &jetstream::Context, wanted: kv::Config) -> Result<kv::Store, Error> {
    let bucket = wanted.bucket.clone();
    let settings = StoreSettings {
        kind: "key-value bucket",
        bucket: &bucket,
        stream: format!("KV_{bucket}"),
        storage: wanted.storage,
        replicas: wanted.num_replicas,
        max_age: wanted.max_age,
        history: Some(wanted.history),
    };
    if reconcile_store(js, &settings).await? {
        return js.get_key_value(&bucket).await.map_err(|e| Error::Topology {
            what: format!("opening key-value bucket {bucket}"),
            reason: e.to_string(),
        });
    }
    tracing::info!(bucket = %bucket, "creating key-value bucket");
    let reason = match js.create_key_value(wanted).await {
        Ok(store) => return Ok(store),
        Err(e) => e.to_string(),
    };
    // Created by a peer meanwhile: success once reconciled.
    if reconcile_store(js, &settings).await? {
        return js.get_key_value(&bucket).await.map_err(|e| Error::Topology {
            what: format!("opening key-value bucket {bucket}"),
            reason: e.to_string(),
        });
    }
    Err(Error::Topology {
        what: format!("creating key-value bucket {bucket}"),
        reason,
    })
}

async fn ensure_object_store(
    js: &jetstream::Context,
    config: &TopologyConfig,
) -> Result<object_store::ObjectStore, Error> {
    let wanted = object_store::Config {
        bucket: ATTACHMENTS_STORE.to_owned(),
        description: Some("guichet: raw e-mails and attachments, by SHA-256".into()),
        storage: storage(config),
        num_replicas: config.replicas,
        // Aligned with the streams that point at the files (see why there).
        max_age: config.attachments_max_age(),
        ..Default::default()
    };
    let settings = StoreSettings {
        kind: "object store",
        bucket: ATTACHMENTS_STORE,
        stream: format!("OBJ_{ATTACHMENTS_STORE}"),
        storage: wanted.storage,
        replicas: wanted.num_replicas,
        max_age: wanted.max_age,
        history: None,
    };
    let opened = if reconcile_store(js, &settings).await? {
        js.get_object_store(ATTACHMENTS_STORE).await.map_err(|e| e.to_string())
    } else {
        tracing::info!(store = ATTACHMENTS_STORE, "creating object store");
        match js.create_object_store(wanted).await {
            Ok(store) => Ok(store),
            // Created by a peer meanwhile: success once reconciled.
            Err(e) if reconcile_store(js, &settings).await? => {
                tracing::debug!(error = %e, "object store created by a peer");
                js.get_object_store(ATTACHMENTS_STORE).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    opened.map_err(|reason| Error::Topology {
        what: format!("opening object store {ATTACHMENTS_STORE}"),
        reason,
    })
}
