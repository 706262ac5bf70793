// SPDX-License-Identifier: MPL-2.0
//! The `.pipeline` file format of the shipped `pipelines/*.pipeline` descriptions: the one
//! implementation, used by `gopswarm pipeline` (and so `pipelines/run`) and by tests and QA that
//! run the same descriptions in-process.
//!
//! A file starts with a header of `#` lines: a description, notes, then one line per variable,
//!
//! ```text
//! # VAR: what it is (default: value)
//! # VAR: what it is (required)
//! ```
//!
//! followed by a `gst-launch-1.0` description using `${VAR}` placeholders (`#` lines in the body
//! are comments; a trailing backslash continues a line). The body is split into words like a
//! shell would (quotes respected, a word starting with `#` comments out the rest of the line) and
//! only then is `${VAR}` replaced inside each word, so a value is one piece of one word: a value
//! with spaces needs no extra quoting and is never re-split or evaluated. Every pipeline also
//! takes the runner variable `TIMEOUT` (see [`parse_duration`]).

pub mod command;
mod runner;

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The folder of the shipped pipelines (see [`crate::pipelines_dir`]).
pub fn dir() -> Result<PathBuf> {
    crate::pipelines_dir()
}

/// Variables every pipeline accepts, used by the runner rather than the description.
const RUNNER_VARS: [(&str, &str, &str); 1] =
    [("TIMEOUT", "watchdog timeout in seconds [runner]", "600")];

/// One `# VAR: what (default: x)` or `# VAR: what (required)` header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub what: String,
    /// None: the variable is required.
    pub default: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    /// Where it was read from, for error messages.
    pub path: PathBuf,
    /// The first header line.
    pub summary: String,
    /// Further header lines that declare no variable.
    pub notes: Vec<String>,
    /// In declaration order, then the runner variables the file does not declare itself.
    pub vars: Vec<Var>,
    /// The description with comment lines removed (continuations not yet joined).
    pub body: String,
}

/// A description with all its variables bound: the `gst-launch-1.0` argv words, ready to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Every variable's value (given or default), in declaration order.
    pub values: Vec<(String, String)>,
    /// The watchdog; None for `TIMEOUT=0` (no watchdog, as with timeout(1)).
    pub timeout: Option<Duration>,
    /// `TIMEOUT` as given, for messages.
    pub timeout_text: String,
    pub words: Vec<String>,
}

/// Whether `name` can be a pipeline name (no paths, no hidden files).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The pipelines in `dir`, sorted by file name.
pub fn names(dir: &Path) -> Result<Vec<String>> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the pipelines folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|f| f.ends_with(".pipeline") && f.len() > ".pipeline".len())
        .collect();
    // By file name, so `host-file` comes before `host` as in a shell glob.
    files.sort();
    Ok(files
        .into_iter()
        .map(|f| f.trim_end_matches(".pipeline").to_string())
        .collect())
}

/// Load the shipped pipeline `name`.
pub fn load(name: &str) -> Result<Description> {
    load_from(&dir()?, name)
}

/// Load a shipped pipeline, bind `vars`, and play it in-process to EOS, an error or `timeout`.
pub fn play(
    name: &str,
    vars: &[(&str, &str)],
    timeout: Duration,
) -> Result<gopswarm_agents::pipeline::Outcome> {
    let words = load(name)?.expand(vars)?;
    let pipeline = gopswarm_agents::pipeline::parse_words(&words)?;
    gopswarm_agents::pipeline::play(&pipeline, timeout)
}

/// Load `dir/name.pipeline`; an unknown name lists the pipelines there.
pub fn load_from(dir: &Path, name: &str) -> Result<Description> {
    let path = dir.join(format!("{name}.pipeline"));
    if !valid_name(name) || !path.is_file() {
        let available = names(dir).unwrap_or_default().join(" ");
        bail!(
            "no pipeline '{name}' (expected {})\navailable: {available}",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Description::parse(name, &path, &text)
}

/// Parse a header variable line (`# VAR: what (default: x)` / `# VAR: what (required)`).
fn parse_var_line(line: &str) -> Option<Var> {
    let rest = line.strip_prefix('#')?.trim_start();
    let (name, rest) = rest.split_once(':')?;
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_uppercase())
        || !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let rest = rest.trim_start().trim_end();
    if !rest.ends_with(')') {
        return None;
    }
    // The first '(' that opens "(required)" or "(default: ...)" running to the end of the line;
    // what comes before is the explanation (which may hold parentheses of its own).
    let (open, default) = rest.match_indices('(').find_map(|(i, _)| {
        let tail = &rest[i..];
        if tail == "(required)" {
            Some((i, None))
        } else {
            let d = tail.strip_prefix("(default:")?;
            let d = d.strip_prefix([' ', '\t']).unwrap_or(d);
            Some((i, Some(d[..d.len() - 1].to_string())))
        }
    })?;
    Some(Var {
        name: name.to_string(),
        what: rest[..open].trim_end().to_string(),
        default,
    })
}

/// The `${NAME}` references in `text`: (start, end, NAME) for each.
fn references(text: &str) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("${") {
        let start = from + at;
        let name_start = start + 2;
        let name_len = text[name_start..]
            .char_indices()
            .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(text.len() - name_start, |(i, _)| i);
        let end = name_start + name_len;
        if name_len > 0 && text[end..].starts_with('}') {
            found.push((start, end + 1, &text[name_start..end]));
            from = end + 1;
        } else {
            from = start + 2;
        }
    }
    found
}

/// A `TIMEOUT` value: seconds, optionally fractional, with an optional unit s, m, h or d (the
/// syntax of timeout(1)): `600`, `90s`, `1.5h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = match text.char_indices().last()? {
        (i, 's') => (&text[..i], 1.0),
        (i, 'm') => (&text[..i], 60.0),
        (i, 'h') => (&text[..i], 3600.0),
        (i, 'd') => (&text[..i], 86400.0),
        _ => (text, 1.0),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    let seconds: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(seconds * unit).ok()
}

impl Description {
    /// Parse the text of `path` (named `name`).
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Self> {
        let mut summary: Option<String> = None;
        let mut notes = Vec::new();
        let mut vars: Vec<Var> = Vec::new();
        let mut body = Vec::new();
        let mut in_header = true;
        for line in text.lines() {
            if in_header && line.starts_with('#') {
                if line.starts_with("#!") {
                    continue;
                }
                if let Some(var) = parse_var_line(line) {
                    if vars.iter().any(|v| v.name == var.name) {
                        bail!("{}: variable {} declared twice", path.display(), var.name);
                    }
                    vars.push(var);
                    continue;
                }
                let text = line[1..].trim();
                match summary {
                    None if text.is_empty() => {}
                    None => summary = Some(text.to_string()),
                    Some(_) => notes.push(text.to_string()),
                }
                continue;
            }
            in_header = false;
            if line.trim_start().starts_with('#') {
                continue; // a comment inside the body
            }
            body.push(line);
        }
        for (var, what, default) in RUNNER_VARS {
            if !vars.iter().any(|v| v.name == var) {
                vars.push(Var {
                    name: var.to_string(),
                    what: what.to_string(),
                    default: Some(default.to_string()),
                });
            }
        }
        Ok(Description {
            name: name.to_string(),
            path: path.to_path_buf(),
            summary: summary.unwrap_or_else(|| "(no description)".to_string()),
            notes,
            vars,
            body: body.join("\n"),
        })
    }

    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|v| v.name == name)
    }

    /// One line per variable: name, what, default or "(required)".
    pub fn var_lines(&self) -> String {
        let mut out = String::new();
        for v in &self.vars {
            let tail = match &v.default {
                Some(d) => format!("(default: {d})"),
                None => "(required)".to_string(),
            };
            let _ = writeln!(out, "  {:<12} {} {tail}", v.name, v.what);
        }
        out
    }

    /// The variables, as usage errors show them.
    fn listing(&self) -> String {
        format!(
            "variables of '{}':\n{}",
            self.name,
            self.var_lines().trim_end()
        )
    }

    /// The `--help NAME` text: description, notes, variables and how to run it.
    pub fn describe(&self, run_command: &str) -> String {
        let mut out = format!("{} — {}\n", self.name, self.summary);
        for n in &self.notes {
            if n.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "  {n}");
            }
        }
        let _ = write!(
            out,
            "\nvariables:\n{}\nrun: {run_command} {} [VAR=value ...]\n",
            self.var_lines(),
            self.name
        );
        out
    }

    /// Bind `VAR=value` command-line arguments (see [`Description::bind`]).
    pub fn bind_args(&self, args: &[String]) -> Result<Invocation> {
        let mut pairs = Vec::with_capacity(args.len());
        for a in args {
            let valid = a.split_once('=').filter(|(var, _)| {
                let mut c = var.chars();
                c.next()
                    .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                    && c.all(|c| c == '_' || c.is_ascii_alphanumeric())
            });
            let Some((var, value)) = valid else {
                bail!("argument '{a}' is not VAR=value\n{}", self.listing());
            };
            pairs.push((var, value));
        }
        self.bind(&pairs)
    }

    /// Check the values against the header (unknown and missing variables, `TIMEOUT`, `${VAR}`
    /// the header does not declare), split the body into words and substitute the values. A
    /// variable given twice takes the last value. Touches no file: see [`Invocation::prepare`].
    pub fn bind(&self, given: &[(&str, &str)]) -> Result<Invocation> {
        for (var, _) in given {
            if self.var(var).is_none() {
                bail!(
                    "unknown variable '{var}' for pipeline '{}'\n{}",
                    self.name,
                    self.listing()
                );
            }
        }
        let mut values = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            let value = match given.iter().rev().find(|(var, _)| *var == v.name) {
                Some((_, value)) => value.to_string(),
                None => match &v.default {
                    Some(d) => d.clone(),
                    None => bail!(
                        "pipeline '{}' needs {}=...\n{}",
                        self.name,
                        v.name,
                        self.listing()
                    ),
                },
            };
            values.push((v.name.clone(), value));
        }
        let value_of = |var: &str| {
            values
                .iter()
                .find(|(v, _)| v == var)
                .map(|(_, value)| value.as_str())
        };
        let timeout_text = value_of("TIMEOUT").unwrap_or_default().to_string();
        let Some(timeout) = parse_duration(&timeout_text) else {
            bail!("TIMEOUT must be a duration like 600, 90s or 5m, not '{timeout_text}'");
        };
        for (_, _, var) in references(&self.body) {
            if self.var(var).is_none() {
                bail!(
                    "{} uses ${{{var}}} but its header does not declare it\n{}",
                    self.path.display(),
                    self.listing()
                );
            }
        }
        let text = self.body.replace("\\\n", " ");
        let Some(words) = shlex::split(&text) else {
            bail!(
                "{}: cannot split the description into words: a quote is not closed or a \
                 backslash ends it",
                self.path.display()
            );
        };
        if words.is_empty() {
            bail!("{} has an empty pipeline description", self.path.display());
        }
        let words = words
            .into_iter()
            .map(|w| {
                let mut out = String::with_capacity(w.len());
                let mut last = 0;
                for (start, end, var) in references(&w) {
                    out.push_str(&w[last..start]);
                    out.push_str(value_of(var).expect("declared variables have values"));
                    last = end;
                }
                out.push_str(&w[last..]);
                out
            })
            .collect();
        Ok(Invocation {
            timeout: (!timeout.is_zero()).then_some(timeout),
            timeout_text,
            words,
            values,
        })
    }

    /// The `gst-launch-1.0` argv words with `vars` bound: what in-process callers parse with
    /// `gst::parse::launchv` (as gst-launch-1.0 does), see [`gopswarm_agents::pipeline::parse_words`].
    pub fn expand(&self, vars: &[(&str, &str)]) -> Result<Vec<String>> {
        Ok(self.bind(vars)?.words)
    }
}

impl Invocation {
    /// What running needs from the file system: `SRC` and `*_FILE` name readable files (values
    /// with `://` are URIs, unchecked); `*_DIR` is created, and for `OUT` (a path prefix) its
    /// parent folder (or `OUT` itself when it ends with '/') and `OUT-hls/` when the description
    /// writes there.
    pub fn prepare(&self, desc: &Description) -> Result<()> {
        for (var, value) in &self.values {
            if !(var == "SRC" || var.ends_with("_FILE")) || value.contains("://") {
                continue;
            }
            if value.is_empty() {
                bail!("{var} is empty; it must name an input file");
            }
            let path = Path::new(value);
            if !path.exists() {
                bail!("{var}: input file '{value}' does not exist");
            }
            if !path.is_file() {
                bail!("{var}: input '{value}' is not a file");
            }
            if let Err(e) = std::fs::File::open(path) {
                bail!("{var}: input file '{value}' is not readable: {e}");
            }
        }
        for (var, value) in &self.values {
            if value.is_empty() || value.contains("://") {
                continue;
            }
            let mut dirs: Vec<PathBuf> = Vec::new();
            if var.ends_with("_DIR") {
                dirs.push(value.into());
            } else if var == "OUT" {
                if value.ends_with('/') {
                    dirs.push(value.into());
                } else if let Some(parent) = Path::new(value).parent()
                    && !parent.as_os_str().is_empty()
                {
                    dirs.push(parent.into());
                }
                // A description writing ${OUT}-hls/... (an HLS rendition) needs that folder too.
                if desc.body.contains("${OUT}-hls/") {
                    dirs.push(format!("{value}-hls").into());
                }
            }
            for d in dirs {
                std::fs::create_dir_all(&d)
                    .with_context(|| format!("{var}: cannot create directory '{}'", d.display()))?;
            }
        }
        Ok(())
    }
}

/// The words as one `gst-launch-1.0 -e` shell line to copy: words that a shell and
/// gst-launch-1.0 take as they are (elements, '!', properties, caps) stay bare, others are
/// single-quoted.
pub fn shell_line(words: &[String]) -> String {
    let bare = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./!-".contains(c))
    };
    let mut line = String::from("gst-launch-1.0 -e");
    for w in words {
        line.push(' ');
        if bare(w) {
            line.push_str(w);
        } else {
            line.push('\'');
            line.push_str(&w.replace('\'', r"'\''"));
            line.push('\'');
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(text: &str) -> Result<Description> {
        Description::parse("t", Path::new("t.pipeline"), text)
    }

    fn words(text: &str, vars: &[(&str, &str)]) -> Result<Vec<String>> {
        desc(text)?.expand(vars)
    }

    #[test]
    fn header_declares_description_notes_and_variables() {
        let d = desc(
            "#!/usr/bin/env gopswarm\n# Does a thing.\n# A note (with parentheses).\n\
             # SRC: input (file) to read (required)\n# N: count (default: 3)\n\
             # P: profile (default: h264, bitrate=(int)5)\n#\n# After a blank line.\n\
             fakesrc num-buffers=${N} ! fakesink\n",
        )
        .unwrap();
        assert_eq!(d.summary, "Does a thing.");
        assert_eq!(
            d.notes,
            ["A note (with parentheses).", "", "After a blank line."]
        );
        let vars: Vec<_> = d
            .vars
            .iter()
            .map(|v| (v.name.as_str(), v.what.as_str(), v.default.as_deref()))
            .collect();
        assert_eq!(
            vars,
            [
                ("SRC", "input (file) to read", None),
                ("N", "count", Some("3")),
                ("P", "profile", Some("h264, bitrate=(int)5")),
                (
                    "TIMEOUT",
                    "watchdog timeout in seconds [runner]",
                    Some("600")
                ),
            ]
        );
    }

    #[test]
    fn quoted_words_stay_whole_and_values_are_never_resplit() {
        let w = words(
            "# t\n# P: profile (default: a, b=1)\n# OUT: out (required)\n\
             enc profile=\"${P}\" name='x y' \\\n  ! sink location=${OUT}.mp4\n",
            &[("OUT", "dir with space/it's \"q\" ${P} $(rm -rf)")],
        )
        .unwrap();
        assert_eq!(
            w,
            [
                "enc",
                "profile=a, b=1",
                "name=x y",
                "!",
                "sink",
                "location=dir with space/it's \"q\" ${P} $(rm -rf).mp4",
            ]
        );
        assert_eq!(
            shell_line(&w),
            "gst-launch-1.0 -e enc 'profile=a, b=1' 'name=x y' ! sink \
             'location=dir with space/it'\\''s \"q\" ${P} $(rm -rf).mp4'"
        );
    }

    #[test]
    fn body_comments_and_continuations() {
        let w = words(
            "# t\na \\\n# a comment between\n  b\n  # indented comment\nc # trailing\nd\n",
            &[],
        )
        .unwrap();
        assert_eq!(w, ["a", "b", "c", "d"]);
    }

    #[test]
    fn undeclared_reference_is_an_error() {
        let e = words("# t\n# A: a (default: 1)\nx ${A} ${B}\n", &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("uses ${B} but its header does not declare it"),
            "{msg}"
        );
        assert!(msg.contains("variables of 't'"), "{msg}");
        // Not a reference: left as written.
        assert_eq!(
            words("# t\nx $A ${1} ${\n", &[]).unwrap(),
            ["x", "$A", "${1}", "${"]
        );
    }

    #[test]
    fn missing_required_and_unknown_variables_list_the_variables() {
        let d = desc("# t\n# SRC: input (required)\n# N: n (default: 1)\nx ${SRC} ${N}\n").unwrap();
        let msg = format!("{:#}", d.expand(&[("N", "2")]).unwrap_err());
        assert!(msg.starts_with("pipeline 't' needs SRC=..."), "{msg}");
        assert!(msg.contains("  SRC          input (required)"), "{msg}");
        assert!(msg.contains("  N            n (default: 1)"), "{msg}");
        let msg = format!("{:#}", d.expand(&[("SRC", "a"), ("NN", "2")]).unwrap_err());
        assert!(
            msg.starts_with("unknown variable 'NN' for pipeline 't'"),
            "{msg}"
        );
        assert!(msg.contains("TIMEOUT"), "{msg}");
        let msg = format!("{:#}", d.bind_args(&["SRC".into()]).unwrap_err());
        assert!(msg.starts_with("argument 'SRC' is not VAR=value"), "{msg}");
        // The last of two values wins; a value may hold '=' and newlines.
        let inv = d
            .bind_args(&["SRC=a".into(), "N=x=1\ny".into(), "SRC=b".into()])
            .unwrap();
        assert_eq!(inv.words, ["x", "b", "x=1\ny"]);
    }

    #[test]
    fn duplicate_declaration_is_an_error() {
        let e = desc("# t\n# A: a (default: 1)\n# A: again (required)\nx\n").unwrap_err();
        assert_eq!(e.to_string(), "t.pipeline: variable A declared twice");
    }

    #[test]
    fn timeout_takes_durations_like_timeout_1() {
        let d = desc("# t\nx\n").unwrap();
        let timeout = |t: &str| d.bind(&[("TIMEOUT", t)]).map(|i| i.timeout);
        assert_eq!(timeout("600").unwrap(), Some(Duration::from_secs(600)));
        assert_eq!(timeout("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(timeout("5m").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(timeout("1.5h").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(timeout("2d").unwrap(), Some(Duration::from_secs(172_800)));
        assert_eq!(timeout("0.25").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(timeout("0").unwrap(), None, "0 turns the watchdog off");
        assert_eq!(d.bind(&[]).unwrap().timeout, Some(Duration::from_secs(600)));
        for bad in ["", "abc", "-1", "1.", ".5", "5x", "5 m", "1e3", "m"] {
            let msg = timeout(bad).unwrap_err().to_string();
            assert!(msg.contains("TIMEOUT must be a duration"), "{bad}: {msg}");
        }
        // A pipeline may declare TIMEOUT itself, with its own default.
        let d = desc("# t\n# TIMEOUT: how long (default: 30s)\nx\n").unwrap();
        assert_eq!(d.bind(&[]).unwrap().timeout, Some(Duration::from_secs(30)));
        assert_eq!(d.vars.len(), 1);
    }

    #[test]
    fn unbalanced_quote_and_empty_body_are_errors() {
        let msg = words("# t\nx 'y\n", &[]).unwrap_err().to_string();
        assert!(
            msg.contains("cannot split the description into words"),
            "{msg}"
        );
        let msg = words("# t\n# only comments\n\n# body comment\n", &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("has an empty pipeline description"), "{msg}");
    }

    #[test]
    fn prepare_checks_inputs_and_creates_output_folders() {
        let tmp = std::env::temp_dir().join(format!("gopswarm-pipeline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let input = tmp.join("in.mp4");
        std::fs::write(&input, b"x").unwrap();
        let d = desc(
            "# t\n# SRC: in (required)\n# KEY_FILE: key (default: http://k/x)\n\
             # OUT: prefix (required)\n# SEG_DIR: segments (required)\n\
             x ${SRC} ${KEY_FILE} ${OUT}.mp4 ${OUT}-hls/a.ts ${SEG_DIR}\n",
        )
        .unwrap();
        let s = |p: &Path| p.to_string_lossy().to_string();
        let (src, out, seg) = (s(&input), s(&tmp.join("o/x")), s(&tmp.join("seg/a")));
        d.bind(&[("SRC", &src), ("OUT", &out), ("SEG_DIR", &seg)])
            .unwrap()
            .prepare(&d)
            .unwrap();
        assert!(tmp.join("o").is_dir() && tmp.join("o/x-hls").is_dir());
        assert!(!tmp.join("o/x").exists());
        assert!(tmp.join("seg/a").is_dir());
        let missing = s(&tmp.join("nope.mp4"));
        let msg = d
            .bind(&[("SRC", &missing), ("OUT", &out), ("SEG_DIR", &seg)])
            .unwrap()
            .prepare(&d)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("SRC: input file") && msg.contains("does not exist"),
            "{msg}"
        );
        let msg = d
            .bind(&[("SRC", &s(&tmp)), ("OUT", &out), ("SEG_DIR", &seg)])
            .unwrap()
            .prepare(&d)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not a file"), "{msg}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn every_shipped_pipeline_parses() {
        let names = names(&dir().unwrap()).unwrap();
        assert!(names.len() >= 8, "{names:?}");
        for name in names {
            let d = load(&name).unwrap();
            assert_ne!(d.summary, "(no description)", "{name}");
            assert!(d.var("TIMEOUT").is_some(), "{name}");
            for (_, _, var) in references(&d.body) {
                assert!(d.var(var).is_some(), "{name}: ${{{var}}}");
            }
        }
        assert!(load("../cli/Cargo").is_err());
        assert!(
            load("no-such")
                .unwrap_err()
                .to_string()
                .contains("available: ")
        );
    }
}
