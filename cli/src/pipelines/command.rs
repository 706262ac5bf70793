// SPDX-License-Identifier: MPL-2.0
//! `gopswarm pipeline`: list, describe, print and run the `.pipeline` descriptions
//! (`pipelines/run` is a thin wrapper over it).

use super::runner::{self, Launcher, Reporter};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(
    long_about = "List, describe, print and run the gst-launch-1.0 descriptions in \
    pipelines/NAME.pipeline.\n\nA .pipeline file starts with a header of '#' lines: a \
    description, then one line per variable, '# VAR: what it is (default: value)' or \
    '# VAR: what it is (required)', followed by a gst-launch-1.0 description using ${VAR} \
    placeholders ('#' lines in the body are comments; a trailing backslash continues a line). \
    The body is split into words like a shell would (quotes respected) and then ${VAR} is \
    replaced inside each word, so a value is one piece of one word: a value with spaces needs \
    no extra quoting and is never re-split or evaluated.\n\nExit status: 2 for usage errors \
    (unknown or missing variables, a missing input file, an unknown pipeline)."
)]
pub struct PipelineArgs {
    /// Folder of the NAME.pipeline files [default: <bin>/../share/gopswarm/pipelines when
    /// installed, pipelines/ of the source checkout when run from its target/]
    #[arg(long, env = "GOPSWARM_PIPELINES", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Name for messages and hints (pipelines/run passes its own)
    #[arg(long, hide = true)]
    pub runner_name: Option<String>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Run pipeline NAME to its end. Before it starts: SRC and *_FILE must name readable files
    /// (values with :// are not checked), *_DIR is created, and for OUT (a path prefix) its
    /// folder and OUT-hls/ when the pipeline writes there. TIMEOUT (every pipeline takes it,
    /// default 600; 90s, 5m, 1.5h; 0 = none) is a watchdog: on expiry the pipeline gets EOS so
    /// files are finished, and is killed 10 s later. Exit status: 0 after EOS, 1 on error, 2
    /// for usage errors, 124 on watchdog expiry, 137 if it then had to be killed.
    Run {
        /// The pipeline (see `gopswarm pipeline list`)
        name: String,
        /// Who runs the description: gst-launch-1.0 kills a launcher still running 3 s after
        /// its first "ERROR:" line (gst-launch-1.0 1.22 sometimes hangs there)
        #[arg(long, env = "PIPELINES_LAUNCHER", value_enum, default_value_t)]
        launcher: Launcher,
        /// Variables, e.g. SRC=in.mp4 OUT=out/x TIMEOUT=5m
        #[arg(
            value_name = "VAR=value",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        vars: Vec<String>,
    },
    /// Print NAME's expanded `gst-launch-1.0 -e` line, shell-quoted to copy; nothing runs and
    /// no file is checked.
    Print {
        name: String,
        #[arg(
            value_name = "VAR=value",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        vars: Vec<String>,
    },
    /// List the pipelines with their descriptions.
    List,
    /// Show NAME's description, notes and variables with their defaults.
    Describe { name: String },
}

impl PipelineArgs {
    /// Carry out the action; returns the exit status.
    pub fn run(self) -> i32 {
        let (reporter, run_command) = match self.runner_name {
            Some(name) => (
                Reporter {
                    prefix: name.clone(),
                },
                name,
            ),
            None => (
                Reporter {
                    prefix: "gopswarm pipeline".into(),
                },
                "gopswarm pipeline run".into(),
            ),
        };
        let dir = match self.dir.map_or_else(super::dir, Ok) {
            Ok(dir) => dir,
            Err(e) => {
                reporter.error(&format!("{e:#}"));
                return 2;
            }
        };
        let load = |name: &str| {
            super::load_from(&dir, name).map_err(|e| {
                reporter.error(&format!("{e:#}"));
                2
            })
        };
        let result = match self.action {
            Action::List => list(&dir, &reporter),
            Action::Describe { name } => load(&name).map(|d| {
                print!("{}", d.describe(&run_command));
                0
            }),
            Action::Print { name, vars } | Action::Run { name, vars, .. }
                if vars.iter().any(|v| v == "--help" || v == "-h") =>
            {
                load(&name).map(|d| {
                    print!("{}", d.describe(&run_command));
                    0
                })
            }
            Action::Print { name, vars } => load(&name).and_then(|d| {
                let inv = d.bind_args(&vars).map_err(|e| {
                    reporter.error(&format!("{e:#}"));
                    2
                })?;
                match std::env::var("GST_PLUGIN_PATH") {
                    Ok(path) if !path.is_empty() => reporter.say(&format!("GST_PLUGIN_PATH={path}")),
                    _ => reporter.say(
                        "note: gst-launch-1.0 needs the gopswarm plugin's folder on GST_PLUGIN_PATH",
                    ),
                }
                println!("{}", super::shell_line(&inv.words));
                Ok(0)
            }),
            Action::Run {
                name,
                launcher,
                vars,
            } => load(&name).and_then(|d| {
                let inv = d
                    .bind_args(&vars)
                    .and_then(|inv| inv.prepare(&d).map(|()| inv))
                    .map_err(|e| {
                        reporter.error(&format!("{e:#}"));
                        2
                    })?;
                Ok(runner::run(&name, &inv, launcher, &reporter))
            }),
        };
        result.unwrap_or_else(|rc| rc)
    }
}

fn list(dir: &std::path::Path, reporter: &Reporter) -> Result<i32, i32> {
    let names = super::names(dir).map_err(|e| {
        reporter.error(&format!("{e:#}"));
        2
    })?;
    let mut rc = 0;
    for name in names {
        match super::load_from(dir, &name) {
            Ok(d) => println!("  {name:<20} {}", d.summary),
            Err(e) => {
                reporter.error(&format!("{e:#}"));
                rc = 2;
            }
        }
    }
    Ok(rc)
}
