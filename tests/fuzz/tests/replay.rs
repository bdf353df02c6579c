//! Every seed of every target's corpus, and every crash a campaign found
//! (fixed since), run through the target: a regression is caught by
//! `scripts/test` without AFL++.

use std::path::PathBuf;

#[test]
fn every_corpus_and_crash_file_runs_clean() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, target) in guichet_fuzz::TARGETS {
        let mut seeds = 0;
        for folder in ["corpus", "crashes"] {
            let dir = root.join(folder).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                if !path.is_file() || path.file_name().is_some_and(|n| n == "README.txt") {
                    continue;
                }
                let data = std::fs::read(&path).expect("a corpus file");
                target(&data);
                seeds += usize::from(folder == "corpus");
                ran += 1;
            }
        }
        assert!(seeds >= 3, "target {name} has only {seeds} seeds in corpus/{name}");
    }
    assert!(ran > 0);
}
