//! What `rules` and `templates` share for their revisions in the config
//! bucket: who pushes, and how the history is shown.

use guichet_core::bus::revisions::Revision;

/// `user@host` of whoever runs the command, recorded with a push.
pub fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// One line per revision, oldest first; the newest valid one is "in force".
pub fn print_history(revisions: &[Revision]) {
    let latest_valid = revisions
        .iter()
        .rev()
        .find(|r| !r.deleted && r.invalid.is_none())
        .map(|r| r.revision);
    for r in revisions {
        let state = if r.deleted {
            "deleted".to_owned()
        } else if let Some(why) = &r.invalid {
            format!("INVALID (never activated): {}", why.lines().next().unwrap_or_default())
        } else if Some(r.revision) == latest_valid {
            "in force".to_owned()
        } else {
            "valid".to_owned()
        };
        println!(
            "{:>6}  {}  {}  {}  {}  {}",
            r.revision,
            r.pushed_at,
            if r.pushed_by.is_empty() { "-" } else { &r.pushed_by },
            r.sha256.get(..12).unwrap_or("-"),
            r.origin,
            state
        );
    }
}
