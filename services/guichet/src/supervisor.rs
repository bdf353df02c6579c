//! Starting, supervising and stopping the services of one process.
//!
//! Each service is a task. One that returns an error or panics is logged,
//! marked unready, and started again with exponential backoff, so a
//! failing mailbox server or a broker outage never needs an operator to
//! restart the process. On shutdown every task's token is cancelled and
//! the supervisor waits, up to the grace period, for each to finish; past
//! it, the services are dropped before [`Supervisor::join`] returns, so
//! none outlives the embedded broker `run` stops next.

use std::{future::Future, net::TcpListener as StdListener, pin::Pin, str::FromStr, sync::Arc, time::Duration};

use futures::FutureExt;
use guichet_core::{ServiceContext, admin::Health};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Config, Listeners, RunError};

/// The services `guichet run` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Mail,
    Web,
    Desk,
    Router,
    Requests,
    Notify,
    Console,
}

impl ServiceName {
    pub const ALL: [ServiceName; 7] = [
        ServiceName::Mail,
        ServiceName::Web,
        ServiceName::Desk,
        ServiceName::Router,
        ServiceName::Requests,
        ServiceName::Notify,
        ServiceName::Console,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Mail => "mail",
            ServiceName::Web => "web",
            ServiceName::Desk => "desk",
            ServiceName::Router => "router",
            ServiceName::Requests => "requests",
            ServiceName::Notify => "notify",
            ServiceName::Console => "console",
        }
    }

    /// Parses `mail,web,…`; unknown names are an error, duplicates collapse.
    pub fn parse_list(list: &str) -> Result<Vec<ServiceName>, RunError> {
        let mut out: Vec<ServiceName> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(ServiceName::from_str)
            .collect::<Result<_, _>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl FromStr for ServiceName {
    type Err = RunError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| RunError::UnknownService(s.to_owned()))
    }
}

/// What a service task returns; the error is logged by the supervisor.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Builds a fresh run of a service for each (re)start.
pub type ServiceFactory = Arc<dyn Fn(CancellationToken) -> ServiceFuture + Send + Sync>;

/// The running services of this process.
pub struct Supervisor {
    tasks: JoinSet<()>,
}

impl Supervisor {
    /// Starts every chosen service.
    pub fn start(
        config: &Config,
        context: ServiceContext,
        services: &[ServiceName],
        listeners: Listeners,
        shutdown: &CancellationToken,
    ) -> Result<Self, RunError> {
        let mut supervisor = Self { tasks: JoinSet::new() };
        for &name in services {
            let factory = factory(name, config, &context, &listeners)?;
            supervisor.spawn(name.as_str(), context.health.clone(), shutdown.child_token(), factory);
        }
        Ok(supervisor)
    }

    /// Supervises one service until `shutdown`.
    pub fn spawn(&mut self, name: &'static str, health: Health, shutdown: CancellationToken, factory: ServiceFactory) {
        // Not ready until the service says so (each sets itself ready once
        // it serves): `/readyz` must not answer 200 while a router is still
        // loading its cache or creating its consumer.
        health.set_ready(name, false);
        self.tasks
            .spawn(supervise(name, health, shutdown, factory, Backoff::default()));
    }

    /// Waits for every service to finish, at most `grace`; aborts the rest.
    pub async fn join(mut self, grace: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "services still running after the grace period; aborting them");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

#[derive(Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
    /// A run this long resets the backoff.
    healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

async fn supervise(
    name: &'static str,
    health: Health,
    shutdown: CancellationToken,
    factory: ServiceFactory,
    backoff: Backoff,
) {
    let mut delays = guichet_core::backoff::Backoff::new(backoff.first, backoff.max);
    loop {
        let started = tokio::time::Instant::now();
        // Run inside this task, not spawned: aborting this task then drops
        // the service too (a spawned one would run on, detached, after the
        // broker it uses is stopped).
        let run = std::panic::AssertUnwindSafe(factory(shutdown.child_token())).catch_unwind();
        let failure = match run.await {
            Ok(Ok(())) if shutdown.is_cancelled() => {
                tracing::info!(service = name, "stopped");
                return;
            }
            Ok(Ok(())) => "ended on its own".to_owned(),
            Ok(Err(e)) => e,
            Err(_) => "panicked".to_owned(),
        };
        health.set_ready(name, false);
        metrics::counter!("guichet_service_restarts_total", "service" => name).increment(1);
        if started.elapsed() >= backoff.healthy_after {
            delays.reset();
        }
        let delay = delays.next_delay();
        tracing::error!(service = name, error = %failure, retry_in = ?delay, "service failed; restarting");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The slot of each service: how to build one run of it.
fn factory(
    name: ServiceName,
    config: &Config,
    context: &ServiceContext,
    listeners: &Listeners,
) -> Result<ServiceFactory, RunError> {
    Ok(match name {
        ServiceName::Web => {
            let key = "web.listen";
            let addr = config.web.listen;
            let socket = match &listeners.web {
                Some(l) => l.try_clone().map_err(|source| RunError::Bind { key, addr, source })?,
                None => crate::bind(key, addr)?,
            };
            let socket = Arc::new(socket);
            let (context, web) = (context.clone(), config.web.clone());
            Arc::new(move |token: CancellationToken| {
                let (socket, context, web) = (socket.clone(), context.clone(), web.clone());
                Box::pin(async move {
                    let listener = listener_for_run(&socket).map_err(|e| format!("web listener: {e}"))?;
                    guichet_web::run(context, web, listener, token)
                        .await
                        .map_err(|e| e.to_string())
                }) as ServiceFuture
            })
        }
        ServiceName::Router => {
            let (context, router) = (context.clone(), config.router.clone());
            Arc::new(move |token: CancellationToken| {
                let (context, router) = (context.clone(), router.clone());
                Box::pin(async move {
                    guichet_router::run(context, router, token)
                        .await
                        .map_err(|e| e.to_string())
                }) as ServiceFuture
            })
        }
        ServiceName::Desk => {
            let key = "desk.listen";
            let addr = config.desk.listen;
            // Tokens and TLS files are checked once, here: a bad value
            // stops the start instead of failing every restart.
            guichet_desk::check(&config.desk).map_err(|e| RunError::Service {
                service: "desk",
                reason: e.to_string(),
            })?;
            let socket = match &listeners.grpc {
                Some(l) => l.try_clone().map_err(|source| RunError::Bind { key, addr, source })?,
                None => crate::bind(key, addr)?,
            };
            let socket = Arc::new(socket);
            let (context, desk) = (context.clone(), config.desk.clone());
            Arc::new(move |token: CancellationToken| {
                let (socket, context, desk) = (socket.clone(), context.clone(), desk.clone());
                Box::pin(async move {
                    let listener = listener_for_run(&socket).map_err(|e| format!("desk listener: {e}"))?;
                    guichet_desk::run(context, desk, listener, token)
                        .await
                        .map_err(|e| e.to_string())
                }) as ServiceFuture
            })
        }
        ServiceName::Requests => {
            let key = "requests.listen";
            let addr = config.requests.listen;
            // Tokens and TLS files are checked once, here.
            guichet_requests::check(&config.requests).map_err(|e| RunError::Service {
                service: "requests",
                reason: e.to_string(),
            })?;
            let socket = match &listeners.requests {
                Some(l) => l.try_clone().map_err(|source| RunError::Bind { key, addr, source })?,
                None => crate::bind(key, addr)?,
            };
            let socket = Arc::new(socket);
            let (context, requests) = (context.clone(), config.requests.clone());
            Arc::new(move |token: CancellationToken| {
                let (socket, context, requests) = (socket.clone(), context.clone(), requests.clone());
                Box::pin(async move {
                    let listener = listener_for_run(&socket).map_err(|e| format!("requests listener: {e}"))?;
                    guichet_requests::run(context, requests, listener, token)
                        .await
                        .map_err(|e| e.to_string())
                }) as ServiceFuture
            })
        }
        ServiceName::Notify => {
            // The watched mailboxes' logins are the town's own addresses:
            // never acknowledged (no loop between mail and notify).
            let watched: Vec<String> = config
                .mail
                .mailboxes
                .iter()
                .map(|m| m.user.clone())
                .filter(|u| u.contains('@'))
                .collect();
            let (context, notify) = (context.clone(), config.notify.clone());
            Arc::new(move |token: CancellationToken| {
                let (context, notify, watched) = (context.clone(), notify.clone(), watched.clone());
                Box::pin(async move {
                    guichet_notify::run(context, notify, watched, token)
                        .await
                        .map_err(|e| e.to_string())
                }) as ServiceFuture
            })
        }
        ServiceName::Console => {
            let (key, addr) = ("console.listen", config.console.listen);
            let socket = if config.console.auth.enabled() {
                Some(Arc::new(match &listeners.console {
                    Some(l) => l.try_clone().map_err(|source| RunError::Bind { key, addr, source })?,
                    None => crate::bind(key, addr)?,
                }))
            } else {
                tracing::warn!("console: no [console.auth] (proxy_header or accounts): the web console is off");
                None
            };
            let (context, console) = (context.clone(), config.console.clone());
            Arc::new(move |token: CancellationToken| {
                let (socket, context, console) = (socket.clone(), context.clone(), console.clone());
                Box::pin(async move {
                    let listener = socket
                        .as_deref()
                        .map(listener_for_run)
                        .transpose()
                        .map_err(|e| format!("console listener: {e}"))?;
                    guichet_console::run(context, console, listener, token)
                        .await
                        .map_err(|e| e.to_string())
                }) as ServiceFuture
            })
        }
        ServiceName::Mail => {
            let (context, mail) = (context.clone(), config.mail.clone());
            Arc::new(move |token: CancellationToken| {
                let (context, mail) = (context.clone(), mail.clone());
                Box::pin(async move { guichet_mail::run(context, mail, token).await.map_err(|e| e.to_string()) })
                    as ServiceFuture
            })
        }
    })
}

/// Clones a listener for one run of a service (each restart needs its own
/// handle on the same socket).
pub fn listener_for_run(listener: &StdListener) -> std::io::Result<tokio::net::TcpListener> {
    let clone = listener.try_clone()?;
    clone.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(clone)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn service_lists_parse_and_reject_unknown_names() {
        assert_eq!(
            ServiceName::parse_list("web, mail,web").unwrap(),
            vec![ServiceName::Mail, ServiceName::Web]
        );
        let err = ServiceName::parse_list("web,fax").unwrap_err().to_string();
        assert!(
            err.contains("`fax`") && err.contains("mail, web, desk, router, requests, notify, console"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_service_is_unready_until_it_says_it_is_ready() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor { tasks: JoinSet::new() };
        let ready = health.clone();
        let factory: ServiceFactory = Arc::new(move |token: CancellationToken| {
            let ready = ready.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ready.set_ready("t", true);
                token.cancelled().await;
                Ok(())
            }) as ServiceFuture
        });
        supervisor.spawn("t", health.clone(), shutdown.child_token(), factory);
        let (_, waiting) = health.check();
        assert!(
            waiting.contains(&"t".to_owned()),
            "ready before the service said so: {waiting:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while health.check().1.contains(&"t".to_owned()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("ready once the service says so");
        shutdown.cancel();
        supervisor.join(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_failing_service_is_restarted_and_stops_on_shutdown() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let factory: ServiceFactory = Arc::new(move |token: CancellationToken| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match n {
                    0 => Err("boom".to_owned()),
                    1 => panic!("second run panics"),
                    _ => {
                        token.cancelled().await;
                        Ok(())
                    }
                }
            }) as ServiceFuture
        });
        let shutdown = CancellationToken::new();
        let backoff = Backoff {
            first: Duration::from_millis(10),
            max: Duration::from_millis(20),
            healthy_after: Duration::from_secs(60),
        };
        let health = Health::default();
        let task = tokio::spawn(supervise("t", health.clone(), shutdown.clone(), factory, backoff));
        tokio::time::timeout(Duration::from_secs(5), async {
            while runs.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("restarted twice");
        let (_, waiting) = health.check();
        assert!(
            waiting.contains(&"t".to_owned()),
            "a failed service is unready: {waiting:?}"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// Sets its flag when dropped.
    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A service that ignores its token is gone once `join` returns after
    /// the grace period, not left running past the broker's stop.
    #[tokio::test]
    async fn a_service_past_the_grace_period_is_dropped_before_join_returns() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Arc::new(tokio::sync::Notify::new());
        let (flag, notify) = (dropped.clone(), started.clone());
        let factory: ServiceFactory = Arc::new(move |_token: CancellationToken| {
            let (guard, notify) = (DropFlag(flag.clone()), notify.clone());
            Box::pin(async move {
                let _guard = guard;
                notify.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }) as ServiceFuture
        });
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor { tasks: JoinSet::new() };
        supervisor.spawn("stubborn", Health::default(), shutdown.clone(), factory);
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the service started");
        shutdown.cancel();
        supervisor.join(Duration::from_millis(50)).await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the service still runs after join returned"
        );
    }
}
