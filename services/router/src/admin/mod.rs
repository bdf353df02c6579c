//! What the operators' commands do: merge and forget usagers, review
//! identity conflicts, explain a routing decision, look at a service's
//! queue. The `guichet` binary prints the reports these return.

mod conflicts;
mod erasure;
mod explain;
mod merge;
mod queue;

use guichet_core::bus::subjects::is_token;

/// Kept here too: operators' tests read a subject through `admin`.
pub use crate::streams::read_subject;
pub use conflicts::{Decision, ResolveReport, conflicts, resolve};
pub use erasure::{ForgetReport, forget};
pub use explain::{Explanation, explain, rfc3339};
pub use merge::{MergeReport, merge};
pub use queue::{QueueView, pull_queue};

use crate::RouterError;

fn check_id(what: &str, id: &str) -> Result<(), RouterError> {
    if is_token(id) {
        Ok(())
    } else {
        Err(RouterError::Invalid(format!(
            "{what} `{}` is not a usager id (e.g. U01J…: letters, digits, - and _ only)",
            id.escape_default()
        )))
    }
}
