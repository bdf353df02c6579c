//! `guichet templates check DIR|FILE` and `guichet templates preview
//! TEMPLATE SAMPLE.json`: the notification templates' ops workflow on
//! files, without a broker; `push DIR|FILE`, `history`, `rollback REV`:
//! the revisions every notify renders with, live (see docs/notify.md).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Subcommand;
use guichet_notify::{
    template_revisions,
    templates::{self, Templates},
};

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Render every template against a sample of each kind; refuse
    /// undefined variables and an acknowledgment missing an R112-5 mention.
    /// A single FILE is checked in place of its namesake among the
    /// built-in templates.
    Check {
        /// A directory of templates (deploy/templates) or one template file.
        path: PathBuf,
    },
    /// Render one template file with a context in JSON
    /// (deploy/templates/acknowledgment.sample.json).
    Preview { template: PathBuf, sample: PathBuf },
    /// Check DIR (or FILE, with the built-in templates) like `check` and
    /// make it the set every running notify renders with (a new revision,
    /// picked up live). Refused: nothing stored.
    Push { path: PathBuf },
    /// List the pushed templates revisions, oldest first.
    History,
    /// Push the set of an older revision again (checked) as a new one.
    Rollback {
        /// The revision, as listed by `guichet templates history`.
        revision: u64,
    },
}

pub async fn run(config_path: &Path, command: TemplatesCommand) -> anyhow::Result<()> {
    match command {
        TemplatesCommand::Check { path } => {
            let sources = load(&path)?;
            match templates::check(&sources) {
                Ok(checked) => {
                    for set in checked {
                        println!("{}: {set}: renders, every R112-5 mention present", path.display());
                    }
                    Ok(())
                }
                Err(problems) => {
                    for problem in &problems {
                        eprintln!("{}: {problem}", path.display());
                    }
                    anyhow::bail!("{}: {} problem(s); nothing was changed", path.display(), problems.len())
                }
            }
        }
        TemplatesCommand::Preview { template, sample } => {
            let name = file_name(&template)?;
            let source =
                std::fs::read_to_string(&template).with_context(|| format!("cannot read {}", template.display()))?;
            let text = std::fs::read_to_string(&sample).with_context(|| format!("cannot read {}", sample.display()))?;
            let context: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON (a template context)", sample.display()))?;
            let compiled = Templates::compile(BTreeMap::from([(name.clone(), source)]))?;
            println!("{}", compiled.render_one(&name, &context)?);
            Ok(())
        }
        TemplatesCommand::Push { path } => {
            let sources = load(&path)?;
            let key = super::load_config(config_path)?.notify.templates_key;
            let bus = super::connect_bus(config_path).await?;
            let origin = path.display().to_string();
            let pushed = template_revisions::push(&bus, &key, &sources, &origin, &super::revisions::who()).await?;
            println!(
                "pushed {origin} ({} templates) as templates revision {} (sha256 {}); running notify processes switch to it now",
                sources.len(),
                pushed.revision,
                pushed.sha256.get(..12).unwrap_or_default()
            );
            Ok(())
        }
        TemplatesCommand::History => {
            let key = super::load_config(config_path)?.notify.templates_key;
            let bus = super::connect_bus(config_path).await?;
            let revisions = template_revisions::history(&bus, &key).await?;
            if revisions.is_empty() {
                println!(
                    "no templates pushed yet under `{key}`: notify renders with notify.templates_dir or the built-in ones"
                );
            }
            super::revisions::print_history(&revisions);
            Ok(())
        }
        TemplatesCommand::Rollback { revision } => {
            let key = super::load_config(config_path)?.notify.templates_key;
            let bus = super::connect_bus(config_path).await?;
            let pushed = template_revisions::rollback(&bus, &key, revision, &super::revisions::who()).await?;
            println!(
                "rolled back: the set of revision {revision} is now templates revision {}; running notify processes switch to it now",
                pushed.revision
            );
            Ok(())
        }
    }
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: not a template file name", path.display()))
}

fn load(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    if path.is_dir() {
        return Ok(templates::read_dir(path)?);
    }
    let name = file_name(path)?;
    if !templates::PARTS.iter().any(|p| name.ends_with(&format!(".{p}"))) {
        anyhow::bail!("{name}: a template is named <kind>[.<service>[.<typology>]].<lang>.subject|txt|html");
    }
    let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut sources = templates::builtin();
    sources.insert(name, source);
    Ok(sources)
}
