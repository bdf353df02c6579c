//! The load of a forms platform: signed submissions at a steady rate, each
//! retried with the same `Idempotency-Key` on 503, 429, 408 and connection
//! errors until it gets its 202, as a platform would.
//!
//! Each attempt is signed again (`v2`, which covers the key) with the
//! current time, as a platform must: a retry after a long outage would
//! otherwise fall out of the signature window.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{sync::Semaphore, time::Instant};

/// The form every scenario submits to.
pub const FORM: &str = "contact";
/// Its secret (shared with the "platform", i.e. this load).
pub const SECRET: &str = "faults-web-secret-0123456789abcdef";

/// Submissions awaiting an answer at most (the platform's own bound).
const MAX_IN_FLIGHT: usize = 256;
/// Attempts per submission at most (a bound; the deadline usually ends it).
const MAX_ATTEMPTS: u32 = 1000;

/// What the load does.
#[derive(Debug, Clone)]
pub struct WebLoad {
    pub url: String,
    /// Submissions per second.
    pub rate: f64,
    /// How long new submissions are made.
    pub duration: Duration,
    /// How long a submission made during `duration` keeps being retried
    /// after it (an outage at the end must be waited out, not counted lost).
    pub retry_after_end: Duration,
    /// Idempotency keys are `<prefix>-<n>`.
    pub prefix: String,
    pub seed: u64,
}

/// One submission and what the platform was told.
#[derive(Debug, Clone)]
pub struct Submission {
    pub key: String,
    /// Given with the 202.
    pub contact_id: Option<String>,
    pub acked_at: Option<SystemTime>,
    pub attempts: u32,
    /// An answer that no retry can change (a 4xx other than 408/429):
    /// guichet refused a valid submission, which the run reports.
    pub refused: Option<String>,
}

impl WebLoad {
    /// Runs the load; returns every submission made, acknowledged or not.
    pub async fn run(self) -> Vec<Submission> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let start = Instant::now();
        let end = start + self.duration;
        let retry_deadline = end + self.retry_after_end;
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate.max(1.0)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let most = (self.rate * self.duration.as_secs_f64()).ceil() as usize + 1;
        let mut tasks = Vec::with_capacity(most);
        for n in 0..most {
            ticks.tick().await;
            if Instant::now() >= end {
                break;
            }
            // Waiting for a slot is bounded by the end of the load.
            let Ok(Ok(permit)) = tokio::time::timeout_at(end, slots.clone().acquire_owned()).await else {
                break;
            };
            let key = format!("{}-{n}", self.prefix);
            // A few hundred usagers write several times: follow-ups and
            // known identities are routed too, not only new people.
            let usager = rng.random_range(0..300);
            let body = serde_json::json!({
                "email": format!("usager{usager}@example.fr"),
                "message": format!("Demande {key} : le lampadaire du 12 rue des Lilas est éteint."),
            })
            .to_string();
            let client = client.clone();
            let url = self.url.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = submit(&client, &url, key, body.into_bytes(), retry_deadline).await;
                drop(permit);
                outcome
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(submission) = task.await {
                out.push(submission);
            }
        }
        out
    }
}

/// One submission, retried until its 202, a final refusal or `deadline`.
async fn submit(client: &reqwest::Client, url: &str, key: String, body: Vec<u8>, deadline: Instant) -> Submission {
    let mut submission = Submission {
        key,
        contact_id: None,
        acked_at: None,
        attempts: 0,
        refused: None,
    };
    let mut backoff = Duration::from_millis(50);
    while submission.attempts < MAX_ATTEMPTS && Instant::now() < deadline {
        submission.attempts += 1;
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or_default())
            .unwrap_or_default();
        let signature = guichet_web::signature::header_value_v2(SECRET.as_bytes(), t, &submission.key, &body);
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header(guichet_web::signature::HEADER, signature)
            .header("idempotency-key", &submission.key)
            .body(body.clone())
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 202 => {
                let answer: serde_json::Value = response.json().await.unwrap_or_default();
                // A 202 whose body was cut is asked again: the retry
                // returns the same contact.
                if let Some(id) = answer["contact_id"].as_str() {
                    submission.contact_id = Some(id.to_owned());
                    submission.acked_at = Some(SystemTime::now());
                    return submission;
                }
            }
            Ok(response) if [408, 429, 503].contains(&response.status().as_u16()) => {}
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                submission.refused = Some(format!("{status}: {text}"));
                return submission;
            }
            // Refused connection (gateway down), reset, timeout: retry.
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
    submission
}
