//! `guichet templates check DIR|FILE` and `guichet templates preview
//! TEMPLATE SAMPLE.json`: the notification templates' ops workflow, on
//! files, without a broker (see docs/notify.md).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Subcommand;
use guichet_notify::templates::{self, Templates};

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
}

pub fn run(command: TemplatesCommand) -> anyhow::Result<()> {
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
