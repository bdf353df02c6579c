//! What the operators' commands do: merge and forget usagers, review
//! identity conflicts, explain a routing decision, look at a service's
//! queue. The `guichet` binary prints the reports these return.

mod conflicts;
mod erasure;
mod explain;
mod merge;
mod queue;
mod streams;

use guichet_core::bus::subjects::is_token;

pub use conflicts::{Decision, ResolveReport, conflicts, resolve};
pub use erasure::{ForgetReport, forget};
pub use explain::{Explanation, explain, rfc3339};
pub use merge::{MergeReport, merge};
pub use queue::{QueueView, pull_queue};
pub use streams::read_subject;
pub(crate) use streams::{read_stored, scan_messages};

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
