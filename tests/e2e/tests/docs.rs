//! The documentation holds together: every relative link of `README.md`
//! and `docs/*.md` (and every runbook link of the Prometheus alerts)
//! points at a file that exists and, with `#anchor`, at a heading of it;
//! every page of `docs/` is reachable from the README.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use guichet_harness::repo_root;

/// GitHub's anchor of a heading: lower case, punctuation dropped but `-`
/// and `_`, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The `(target)` of every `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

fn pages(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("an entry of docs/").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a page");
            (p.canonicalize().expect("a page's path"), text)
        })
        .collect()
}

/// The page and anchor `target` points at from `from`, or why not.
fn resolve(
    from: &Path,
    target: &str,
    pages: &BTreeMap<PathBuf, String>,
    root: &Path,
) -> Result<Option<PathBuf>, String> {
    let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
    let path = if file.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().unwrap_or(root).join(file)
    };
    let Ok(path) = path.canonicalize() else {
        return Err(format!("{target}: no such file"));
    };
    if !anchor.is_empty() {
        let text = pages
            .get(&path)
            .cloned()
            .or_else(|| std::fs::read_to_string(&path).ok())
            .unwrap_or_default();
        if !anchors(&text).contains(anchor) {
            return Err(format!("{target}: no heading with anchor #{anchor}"));
        }
    }
    Ok(pages.contains_key(&path).then_some(path))
}

#[test]
fn every_link_resolves_and_every_page_is_reachable_from_the_readme() {
    let root = repo_root().canonicalize().expect("the repository");
    let pages = pages(&root);
    let mut broken = Vec::new();
    let mut edges: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for (page, text) in &pages {
        for target in links(text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            match resolve(page, &target, &pages, &root) {
                Ok(Some(to)) => edges.entry(page.clone()).or_default().push(to),
                Ok(None) => {}
                Err(why) => broken.push(format!("{}: {why}", page.display())),
            }
        }
    }
    // The alerts' runbook links, relative to the repository.
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    let mut runbooks = 0;
    for line in alerts.lines() {
        if let Some(target) = line.trim().strip_prefix("runbook: ") {
            runbooks += 1;
            if let Err(why) = resolve(&root.join("README.md"), target.trim_matches('"'), &pages, &root) {
                broken.push(format!("deploy/prometheus/alerts.yml: {why}"));
            }
        }
    }
    assert!(runbooks >= 10, "every alert has a runbook link");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));

    let start = root.join("README.md");
    let mut seen = BTreeSet::from([start.clone()]);
    let mut todo = vec![start];
    while let Some(page) = todo.pop() {
        for next in edges.get(&page).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    let unreachable: Vec<_> = pages.keys().filter(|p| !seen.contains(*p)).collect();
    assert!(unreachable.is_empty(), "pages no link leads to: {unreachable:?}");
}

#[test]
fn the_readme_is_a_front_page() {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    // Two screens: what, the two commands, the architecture, where next.
    assert!(
        text.lines().count() <= 120,
        "README.md has {} lines",
        text.lines().count()
    );
    for heading in ["## Two commands", "## Architecture", "## Documentation"] {
        assert!(text.contains(heading), "README.md lacks {heading}");
    }
}
