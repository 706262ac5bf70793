// SPDX-License-Identifier: MPL-2.0
//! Configuration of the roles (`orchestrator`, `host`, `merge`, `source`, and the ones that
//! come next), one mechanism for all of them: every long flag of a role can also be given
//!
//! - as an environment variable `GOPSWARM_<ROLE>_<FLAG>` (`GOPSWARM_HOST_MAX_TASKS`), and
//! - as a key of a TOML file named by `--config FILE` (or `GOPSWARM_<ROLE>_CONFIG`): the key is
//!   the long flag name (`max-tasks = 2`); a repeatable flag takes an array, a switch `true` or
//!   `false`, a JSON flag (value name `JSON`, like the orchestrator's `--sizing`) a table.
//!
//! Precedence: flag > environment > file > built-in default. The file is read before the
//! command line is parsed and its values become the flags' defaults, so clap's own
//! flag > env > default order gives the precedence. A key the role does not have, or a value
//! its flag's parser refuses, fails with the file and the key named. `--print-config` prints
//! the effective options as a config file, each with where it came from.
//!
//! The role's options stay one `clap::Args` struct each; this module only works on the
//! `clap::Command` built from them, so a new role gets all of this by being named in
//! [`parse`]'s list.

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print-config";
/// The value name that marks a flag taking JSON (a table in the config file).
pub const JSON: &str = "JSON";

/// The environment variable of `role`'s flag `--long`: `GOPSWARM_HOST_MAX_TASKS`.
pub fn env_name(role: &str, long: &str) -> String {
    format!("GOPSWARM_{role}_{long}")
        .to_uppercase()
        .replace('-', "_")
}

/// Parse the command line of `P` whose subcommands `roles` take `--config`, `--print-config`
/// and environment variables. Exits as clap does on a usage error (status 2), and on a bad
/// config file (status 2, naming the file and the key).
pub fn parse<P: CommandFactory + FromArgMatches>(roles: &[&str]) -> P {
    parse_from(std::env::args_os().collect(), roles)
}

fn parse_from<P: CommandFactory + FromArgMatches>(argv: Vec<OsString>, roles: &[&str]) -> P {
    let plain = P::command();
    let mut cmd = plain.clone();
    for role in roles {
        cmd = cmd.mut_subcommand(role, |sc| configurable(role, sc));
    }
    // First pass, errors ignored: which role runs, and which config file it names.
    let mut file = None;
    if let Ok(m) = cmd.clone().ignore_errors(true).try_get_matches_from(&argv)
        && let Some((role, sm)) = m.subcommand()
        && roles.contains(&role)
        && let Ok(Some(path)) = sm.try_get_one::<PathBuf>(CONFIG)
    {
        let sc = plain.find_subcommand(role).expect("the role's subcommand");
        match ConfigFile::load(path, role, sc) {
            Ok(f) => file = Some(f),
            Err(msg) => {
                eprintln!("error: {msg}");
                std::process::exit(2);
            }
        }
    }
    if let Some(f) = &file {
        cmd = cmd.mut_subcommand(&f.role, |sc| f.apply(sc));
    }
    let m = cmd
        .try_get_matches_from_mut(&argv)
        .unwrap_or_else(|e| e.exit());
    if let Some((role, sm)) = m.subcommand()
        && roles.contains(&role)
        && sm.get_flag(PRINT_CONFIG)
    {
        let declared = plain.find_subcommand(role).expect("the role's subcommand");
        let configured = cmd.find_subcommand(role).expect("the role's subcommand");
        print!(
            "{}",
            effective(role, declared, configured, sm, file.as_ref())
        );
        std::process::exit(0);
    }
    P::from_arg_matches(&m).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

fn is_switch(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn is_repeatable(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
}

fn is_json(a: &Arg) -> bool {
    a.get_value_names()
        .is_some_and(|n| n.len() == 1 && n[0].as_str() == JSON)
}

/// The options a config file may set: every long flag but help, version and the config flags.
fn options(sc: &Command) -> impl Iterator<Item = &Arg> {
    sc.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !matches!(a.get_id().as_str(), "help" | "version")
            && a.get_id() != CONFIG
            && a.get_id() != PRINT_CONFIG
    })
}

/// The role's subcommand with an environment variable for every flag, `--config` and
/// `--print-config`.
fn configurable(role: &str, sc: Command) -> Command {
    let sc = sc.mut_args(|a| match a.get_long() {
        Some(long) if a.get_env().is_none() => {
            let name = env_name(role, long);
            a.env(name)
        }
        _ => a,
    });
    sc.arg(
        Arg::new(CONFIG)
            .long(CONFIG)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .env(env_name(role, CONFIG))
            .help(
                "TOML file of options: keys are the long flag names, a repeatable flag takes \
                 an array, a switch true/false, a JSON flag a table. Precedence: flag > \
                 environment (GOPSWARM_<ROLE>_<FLAG>) > file > default",
            ),
    )
    .arg(
        Arg::new(PRINT_CONFIG)
            .long(PRINT_CONFIG)
            .action(ArgAction::SetTrue)
            .help(
                "Print the effective options as a config file (each with where it came from: \
                 flag, env, file or default) and exit",
            ),
    )
}

/// A role's config file, checked against the role's flags.
struct ConfigFile {
    path: PathBuf,
    role: String,
    /// Argument id and its values as command-line text.
    values: Vec<(String, Vec<String>)>,
}

impl ConfigFile {
    /// Read and check `path` against `sc` (the role's subcommand, without environment
    /// variables): every key a flag of the role, every value one its flag's parser takes.
    fn load(path: &Path, role: &str, sc: &Command) -> Result<ConfigFile, String> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config file {shown}: {e}"))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("config file {shown}: {e}"))?;
        let mut values = Vec::new();
        for (key, value) in table {
            let Some(arg) = options(sc).find(|a| a.get_long() == Some(key.as_str())) else {
                let known: Vec<&str> = options(sc)
                    .filter(|a| !a.is_hide_set())
                    .filter_map(Arg::get_long)
                    .collect();
                return Err(format!(
                    "config file {shown}: unknown key `{key}`: `gopswarm {role}` has no \
                     --{key} (its keys: {})",
                    known.join(", ")
                ));
            };
            let strings = command_line_values(arg, &value)
                .and_then(|v| check(sc, arg, &v).map(|()| v))
                .map_err(|e| format!("config file {shown}: key `{key}`: {e}"))?;
            values.push((arg.get_id().to_string(), strings));
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            role: role.to_string(),
            values,
        })
    }

    /// The file's values as the defaults of their flags (which then no longer need to be
    /// given to be present).
    fn apply(&self, mut sc: Command) -> Command {
        for (id, values) in &self.values {
            let values = values.clone();
            sc = sc.mut_arg(id, |a| a.required(false).default_values(values));
        }
        sc
    }

    fn sets(&self, id: &str) -> bool {
        self.values.iter().any(|(i, _)| i == id)
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A TOML value as the flag's command-line text, or why the flag does not take it.
fn command_line_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expects a string or a number, not {}",
            type_name(other)
        )),
    };
    if is_switch(arg) {
        return match value {
            toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
            other => Err(format!("expects true or false, not {}", type_name(other))),
        };
    }
    if is_repeatable(arg) {
        return match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect(),
            other => Err(format!(
                "expects an array (the flag can be given more than once), not {}",
                type_name(other)
            )),
        };
    }
    if is_json(arg) {
        return match value {
            toml::Value::Table(t) => Ok(vec![serde_json::to_string(t).map_err(|e| e.to_string())?]),
            toml::Value::String(s) => Ok(vec![s.clone()]),
            other => Err(format!("expects a table, not {}", type_name(other))),
        };
    }
    scalar(value).map(|s| vec![s])
}

/// Run the values through the flag's own parser (what the command line would do with them).
fn check(sc: &Command, arg: &Arg, values: &[String]) -> Result<(), String> {
    if is_switch(arg) {
        return Ok(());
    }
    let long = arg.get_long().expect("options have a long name");
    let mut argv = vec![sc.get_name().to_string()];
    argv.extend(values.iter().map(|v| format!("--{long}={v}")));
    sc.clone()
        .mut_args(|a| a.required(false))
        .try_get_matches_from(argv)
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        })
}

/// The effective options as a config file: one `key = value` line each, with where it came
/// from; options with no value are commented out. `sc` is the role's subcommand as declared
/// (its options in their order), `configured` the same with the environment variables.
fn effective(
    role: &str,
    sc: &Command,
    configured: &Command,
    m: &ArgMatches,
    file: Option<&ConfigFile>,
) -> String {
    let mut out = format!("# gopswarm {role}: effective options (flag > env > file > default)\n");
    for arg in options(sc) {
        let id = arg.get_id().as_str();
        let long = arg.get_long().expect("options have a long name");
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => {
                let env = configured
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .and_then(Arg::get_env)
                    .unwrap_or_default();
                format!("env {}", env.to_string_lossy())
            }
            Some(ValueSource::DefaultValue) => match file {
                Some(f) if f.sets(id) => format!("file {}", f.path.display()),
                _ => "default".to_string(),
            },
            _ if is_repeatable(arg) => "default".to_string(),
            _ => "not set".to_string(),
        };
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if arg.is_hide_set() && matches!(source.as_str(), "default" | "not set") {
            continue;
        }
        if raw.is_empty() && !is_repeatable(arg) {
            out.push_str(&format!("# {long} (not set)\n"));
            continue;
        }
        out.push_str(&format!("{long} = {}  # {source}\n", toml_value(arg, &raw)));
    }
    out
}

/// Command-line text as the TOML value a config file gives for it.
fn toml_value(arg: &Arg, raw: &[String]) -> toml::Value {
    let one = |s: &str| {
        if let Ok(i) = s.parse::<i64>()
            && i.to_string() == s
        {
            return toml::Value::Integer(i);
        }
        if let Ok(f) = s.parse::<f64>()
            && f.is_finite()
            && f.to_string() == s
        {
            return toml::Value::Float(f);
        }
        toml::Value::String(s.to_string())
    };
    if is_switch(arg) {
        return toml::Value::Boolean(raw.first().is_some_and(|s| s == "true"));
    }
    if is_repeatable(arg) {
        return toml::Value::Array(raw.iter().map(|s| one(s)).collect());
    }
    let s = raw.first().map(String::as_str).unwrap_or_default();
    if is_json(arg)
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(s)
        && let Ok(v) = toml::Value::try_from(json)
    {
        return v;
    }
    one(s)
}

/// A value parser for a JSON flag: the JSON of `T`, where a key `T` does not have is an error
/// (serde would skip it) and a missing one takes `T`'s default.
pub fn strict_json<T>(text: &str) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    let given: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let known = serde_json::to_value(T::default()).map_err(|e| e.to_string())?;
    unknown_keys(&given, &known, "")?;
    serde_json::from_value(given).map_err(|e| e.to_string())
}

fn unknown_keys(
    given: &serde_json::Value,
    known: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    if let (Some(given), Some(known)) = (given.as_object(), known.as_object()) {
        for (key, value) in given {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match known.get(key) {
                Some(k) => unknown_keys(value, k, &path)?,
                None => {
                    let keys: Vec<&str> = known.keys().map(String::as_str).collect();
                    return Err(format!("unknown key `{path}` (known: {})", keys.join(", ")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Role(RoleOptions),
    }

    #[derive(clap::Args, Debug)]
    struct RoleOptions {
        #[arg(long)]
        id: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long)]
        item: Vec<String>,
        #[arg(long)]
        quiet: bool,
    }

    fn file(text: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "gopswarm-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(text: &str) -> Result<ConfigFile, String> {
        let cmd = Cli::command();
        ConfigFile::load(&file(text), "role", cmd.find_subcommand("role").unwrap())
    }

    fn options(text: &str, flags: &[&str]) -> RoleOptions {
        let mut argv: Vec<OsString> = vec!["x".into(), "role".into(), "--config".into()];
        argv.push(file(text).into());
        argv.extend(flags.iter().map(OsString::from));
        let Sub::Role(o) = parse_from::<Cli>(argv, &["role"]).cmd;
        o
    }

    #[test]
    fn file_values_are_defaults_under_the_flags() {
        let o = options(
            "id = \"a\"\ncount = 3\nitem = [\"x\", \"y\"]\nquiet = true\n",
            &[],
        );
        assert_eq!(
            (o.id.as_str(), o.count, o.item, o.quiet),
            ("a", 3, vec!["x".to_string(), "y".into()], true)
        );
        let o = options("id = \"a\"\ncount = 3\n", &["--count", "5", "--id", "b"]);
        assert_eq!((o.id.as_str(), o.count, o.quiet), ("b", 5, false));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = load("id = \"a\"\ncuont = 3\n").err().unwrap();
        assert!(
            e.contains("unknown key `cuont`") && e.contains("id, count"),
            "{e}"
        );
        for (text, want) in [
            ("count = \"many\"", "key `count`: invalid value 'many'"),
            (
                "count = true",
                "key `count`: expects a string or a number, not a boolean",
            ),
            ("item = \"x\"", "key `item`: expects an array"),
            (
                "quiet = 1",
                "key `quiet`: expects true or false, not an integer",
            ),
            (
                "id = [\"a\"]",
                "key `id`: expects a string or a number, not an array",
            ),
        ] {
            let e = load(text).err().unwrap();
            assert!(
                e.contains(want) && e.contains("config file "),
                "{text}: {e}"
            );
        }
        assert!(load("id = ").err().unwrap().contains("config file "));
    }

    #[derive(serde::Serialize, serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        low: u32,
        high: Vec<u32>,
    }

    #[test]
    fn strict_json_refuses_keys_the_type_lacks() {
        let v: Inner = strict_json(r#"{"low": 3}"#).unwrap();
        assert_eq!(
            v,
            Inner {
                low: 3,
                high: vec![]
            }
        );
        let e = strict_json::<Inner>(r#"{"lo": 3}"#).unwrap_err();
        assert!(
            e.contains("unknown key `lo`") && e.contains("known: high, low"),
            "{e}"
        );
        assert!(strict_json::<Inner>(r#"{"low": "x"}"#).is_err());
    }

    #[test]
    fn environment_names() {
        assert_eq!(env_name("host", "max-tasks"), "GOPSWARM_HOST_MAX_TASKS");
    }
}
