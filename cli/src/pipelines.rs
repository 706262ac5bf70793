//! The shipped `pipelines/*.pipeline` descriptions, loaded and expanded in-process with the same
//! rules as `pipelines/run`, so tests and QA run exactly what users run.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines")
}

#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    pub summary: String,
    /// Variable name -> default (None: required).
    pub vars: BTreeMap<String, Option<String>>,
    pub body: String,
}

pub fn load(name: &str) -> Result<Description> {
    let path = dir().join(format!("{name}.pipeline"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no pipeline '{name}' ({})", path.display()))?;
    let mut summary = String::new();
    let mut vars = BTreeMap::new();
    let mut body = String::new();
    let mut in_header = true;
    for line in text.lines() {
        if in_header && line.starts_with('#') {
            let l = line.trim_start_matches('#').trim();
            if let Some((var, rest)) = l.split_once(':')
                && !var.is_empty()
                && var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                let default = if rest.trim_end().ends_with("(required)") {
                    None
                } else {
                    rest.rsplit_once("(default:")
                        .map(|(_, d)| d.trim_end().trim_end_matches(')').trim().to_string())
                };
                vars.insert(var.to_string(), default);
            } else if summary.is_empty() {
                summary = l.to_string();
            }
            continue;
        }
        in_header = false;
        if line.trim_start().starts_with('#') {
            continue;
        }
        body.push_str(line.trim_end().trim_end_matches('\\'));
        body.push('\n');
    }
    Ok(Description {
        name: name.to_string(),
        summary,
        vars,
        body,
    })
}

impl Description {
    /// Substitute `${VAR}`; unknown or missing required variables are errors.
    pub fn expand(&self, values: &[(&str, &str)]) -> Result<String> {
        let mut all: BTreeMap<&str, String> = BTreeMap::new();
        for (k, v) in values {
            if !self.vars.contains_key(*k) {
                bail!(
                    "pipeline '{}' has no variable {k} (it has: {})",
                    self.name,
                    self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            all.insert(k, v.to_string());
        }
        for (k, default) in &self.vars {
            if !all.contains_key(k.as_str()) {
                match default {
                    Some(d) => {
                        all.insert(k, d.clone());
                    }
                    None => bail!("pipeline '{}' needs {k}", self.name),
                }
            }
        }
        let mut out = self.body.clone();
        for (k, v) in all {
            out = out.replace(&format!("${{{k}}}"), &v);
        }
        if let Some(pos) = out.find("${") {
            bail!(
                "undeclared variable near '{}'",
                &out[pos..out.len().min(pos + 20)]
            );
        }
        Ok(out)
    }
}
