// SPDX-License-Identifier: MPL-2.0
//! `gopswarm acl --mosquitto`: credentials and per-role access control for an external
//! mosquitto broker. Writes a password file (the PBKDF2-SHA512 format `mosquitto_passwd`
//! writes), an `acl_file`, a `mosquitto.conf` snippet, and one broker URL per identity under
//! `credentials/`.

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gopswarm_proto::link::BrokerUrl;
use gopswarm_proto::{Topic, filters, valid_id};
use std::fmt::Write as _;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The orchestrator's username (both its connections, `<client id>` and `<client id>-live`).
pub const ORCHESTRATOR: &str = "orchestrator";
/// The merger's username (every `gopswarm merge`).
pub const MERGER: &str = "merger";
/// The default operator's username (`gopswarm stream`, `rolling-update`, `explain`).
pub const OPERATOR: &str = "operator";

/// Random bytes in a password: 256 bits, far beyond guessing, so the hash's work factor adds
/// nothing and can stay cheap for the broker at every connect.
const PASSWORD_BYTES: usize = 32;
/// PBKDF2 rounds (`mosquitto_passwd` itself uses 101).
const ITERATIONS: u32 = 1000;
/// Salt length `mosquitto_passwd` uses.
const SALT_BYTES: usize = 12;

#[derive(clap::Args)]
pub struct AclOptions {
    /// Write files for mosquitto: `passwd` (password_file), `acl` (acl_file) and
    /// `mosquitto.conf` (allow_anonymous false, the two files). The only broker for now; see
    /// docs/security.md for EMQX.
    #[arg(long, required = true)]
    mosquitto: bool,
    /// Folder to write to (created if missing). `credentials/` in it (0700) gets one file per
    /// identity (0600) holding its broker URL with username and password. An identity whose
    /// file is already there keeps its password: run again with one more `--host` to add a
    /// host; delete an identity's file and run again to give it a new password.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Encoder host to create a user for (repeatable): its username is its host id, and it
    /// may only write its own birth, death, heartbeat, applied and ack, read its own
    /// assignment, commands and score, send chunks and stream ends and read resend requests.
    #[arg(long = "host", value_name = "ID")]
    hosts: Vec<String>,
    /// Operator to create a user for (repeatable): may send stream and rolling-update
    /// commands (`ctl/streams`) and read scores, births, layouts and stream definitions.
    #[arg(long = "operator", value_name = "NAME", default_value = OPERATOR)]
    operators: Vec<String>,
    /// Broker host name or address for the URLs in `credentials/`.
    #[arg(long, default_value = "127.0.0.1")]
    broker_host: String,
    /// Broker port for the URLs in `credentials/` (default 1883, 8883 with --tls).
    #[arg(long)]
    broker_port: Option<u16>,
    /// The URLs in `credentials/` use mqtts:// (the broker's listener must have TLS).
    #[arg(long)]
    tls: bool,
}

/// One MQTT identity: a username and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Orchestrator,
    Operator(String),
    Host(String),
    Merger,
}

impl Role {
    pub fn username(&self) -> &str {
        match self {
            Role::Orchestrator => ORCHESTRATOR,
            Role::Merger => MERGER,
            Role::Operator(n) | Role::Host(n) => n,
        }
    }

    /// The topics this identity may read and write (MQTT filters).
    pub fn rules(&self) -> (Vec<String>, Vec<String>) {
        let hosts = |leaves: &[&str]| leaves.iter().map(|l| filters::all_hosts(l)).collect();
        let streams = |leaves: &[&str]| -> Vec<String> {
            leaves
                .iter()
                .map(|l| filters::stream("+", l, "+"))
                .collect()
        };
        match self {
            Role::Orchestrator => {
                let mut read: Vec<String> =
                    hosts(&["birth", "death", "heartbeat", "applied", "ack", "enrol"]);
                read.push(Topic::StreamControl.path());
                let mut write: Vec<String> = hosts(&["assignment", "cmd", "score", "cert"]);
                write.push(filters::all_streams("def"));
                write.extend(streams(&["layout"]));
                write.extend(
                    [
                        Topic::OrchestratorStatus,
                        Topic::OrchestratorDeath,
                        Topic::OrchestratorLease,
                    ]
                    .iter()
                    .map(Topic::path),
                );
                // A standby follows what the leader writes.
                read.extend(write.iter().cloned());
                (read, write)
            }
            Role::Operator(_) => {
                let mut read: Vec<String> = hosts(&["birth", "death", "score", "applied", "cert"]);
                read.push(filters::all_streams("def"));
                read.extend(streams(&["layout"]));
                read.push(Topic::OrchestratorStatus.path());
                read.push(Topic::OrchestratorLease.path());
                (read, vec![Topic::StreamControl.path()])
            }
            Role::Host(h) => {
                let own = |leaves: &[&str]| -> Vec<String> {
                    leaves.iter().map(|l| filters::host(h, l)).collect()
                };
                let mut read = own(&["assignment", "cmd", "score", "cert"]);
                read.extend(streams(&["resend"]));
                let mut write = own(&["birth", "death", "heartbeat", "applied", "ack", "enrol"]);
                write.extend(streams(&["chunks", "end"]));
                (read, write)
            }
            Role::Merger => {
                let mut read = streams(&["chunks", "layout", "end"]);
                read.push(filters::all_streams("def"));
                read.extend(hosts(&["birth", "death", "cert"]));
                (read, streams(&["resend"]))
            }
        }
    }
}

/// The identities of a swarm: the orchestrator, the merger, `operators` and `hosts`. Names are
/// checked: valid ids, no duplicates, no host or operator named like a fixed role.
pub fn identities(hosts: &[String], operators: &[String]) -> Result<Vec<Role>> {
    let mut roles = vec![Role::Orchestrator, Role::Merger];
    for o in operators {
        roles.push(Role::Operator(o.clone()));
    }
    for h in hosts {
        if !valid_id(h) {
            bail!("host id {h:?}: 1 to 64 of A-Z a-z 0-9 . _ -");
        }
        roles.push(Role::Host(h.clone()));
    }
    for o in operators {
        if !valid_id(o) {
            bail!("operator name {o:?}: 1 to 64 of A-Z a-z 0-9 . _ -");
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &roles {
        if !seen.insert(r.username()) {
            bail!(
                "username {:?} is given twice (orchestrator and merger are taken)",
                r.username()
            );
        }
    }
    Ok(roles)
}

/// The mosquitto `acl_file`. Every identity gets a `user` block of its own. Host rules are not
/// written once as `pattern` lines with `%u`: mosquitto applies patterns to every user, which
/// would let the orchestrator, merger and operators publish chunks and pose as a host named
/// like themselves.
pub fn mosquitto_acl(roles: &[Role]) -> String {
    let mut s = String::from(
        "# gopswarm: written by `gopswarm acl --mosquitto`; one block per identity.\n\
         # Anything not allowed here is refused: publishes dropped, nothing delivered.\n",
    );
    for r in roles {
        let (read, write) = r.rules();
        let _ = writeln!(s, "\nuser {}", r.username());
        for t in read {
            let _ = writeln!(s, "topic read {t}");
        }
        for t in write {
            let _ = writeln!(s, "topic write {t}");
        }
    }
    s
}

/// A line of a mosquitto password file for `password`: `user:$7$ITER$SALT$HASH`, PBKDF2 with
/// HMAC-SHA512 over the raw salt, standard base64 (what `mosquitto_passwd` writes).
pub fn mosquitto_password_line(user: &str, password: &str) -> Result<String> {
    let mut salt = [0u8; SALT_BYTES];
    fill_random(&mut salt)?;
    let mut hash = [0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(ITERATIONS).expect("nonzero"),
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    Ok(format!(
        "{user}:$7${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    ))
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))
}

/// A new password: 32 random bytes, URL-safe base64 (fits a URL's userinfo as is).
pub fn new_password() -> Result<String> {
    let mut b = [0u8; PASSWORD_BYTES];
    fill_random(&mut b)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

pub fn run(o: AclOptions) -> Result<()> {
    debug_assert!(o.mosquitto);
    let roles = identities(&o.hosts, &o.operators)?;
    let scheme = if o.tls { "mqtts" } else { "mqtt" };
    let port = o.broker_port.unwrap_or(if o.tls { 8883 } else { 1883 });
    // Checked now so a bad host name fails before anything is written.
    BrokerUrl::parse(&format!("{scheme}://{}:{port}", o.broker_host))
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let out = o
        .out
        .canonicalize()
        .with_context(|| format!("{}", o.out.display()))?;
    let creds = out.join("credentials");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&creds)
        .with_context(|| format!("creating {}", creds.display()))?;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("{}", creds.display()))?;

    let mut passwd = String::new();
    let mut kept = 0;
    for r in &roles {
        let user = r.username();
        let file = creds.join(format!("{user}.url"));
        let password = match existing_password(&file)? {
            Some(p) => {
                kept += 1;
                p
            }
            None => new_password()?,
        };
        passwd.push_str(&mosquitto_password_line(user, &password)?);
        passwd.push('\n');
        let url = format!("{scheme}://{user}:{password}@{}:{port}", o.broker_host);
        write_file(&file, format!("{url}\n").as_bytes(), 0o600)?;
    }
    let passwd_file = out.join("passwd");
    let acl_file = out.join("acl");
    let conf_file = out.join("mosquitto.conf");
    // Readable by the broker's group (chgrp mosquitto); they hold no password.
    write_file(&passwd_file, passwd.as_bytes(), 0o640)?;
    write_file(&acl_file, mosquitto_acl(&roles).as_bytes(), 0o640)?;
    let conf = format!(
        "# gopswarm: written by `gopswarm acl --mosquitto`; include it in mosquitto.conf.\n\
         # The same settings for every listener; add your listener (and TLS) lines.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         password_file {}\n\
         acl_file {}\n",
        passwd_file.display(),
        acl_file.display()
    );
    write_file(&conf_file, conf.as_bytes(), 0o644)?;

    println!(
        "{} identities ({} kept their password): {}",
        roles.len(),
        kept,
        roles
            .iter()
            .map(Role::username)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("password file:  {}", passwd_file.display());
    println!("ACL file:       {}", acl_file.display());
    println!("config snippet: {}", conf_file.display());
    println!(
        "broker URLs:    {}/<user>.url (0600; pass them as GOPSWARM_<ROLE>_BROKER, never on a command line)",
        creds.display()
    );
    Ok(())
}

/// The password of an identity's existing credentials file, if there is one.
fn existing_password(file: &Path) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let url = BrokerUrl::parse(text.trim())
        .map_err(|e| anyhow::anyhow!("{}: {e} (delete it for a new password)", file.display()))?;
    match url.password {
        Some(p) if !p.is_empty() => Ok(Some(p)),
        _ => bail!(
            "{}: no password in it (delete it for a new one)",
            file.display()
        ),
    }
}

/// Write `bytes` to `path` with `mode`, replacing it (also its mode, if it was there).
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PBKDF2-HMAC-SHA512 test vector (RFC 6070 inputs, SHA-512 output as published for
    /// other hash functions): the hash `mosquitto_password_line` relies on.
    #[test]
    fn pbkdf2_sha512_vector() {
        let mut out = [0u8; 64];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::new(1).unwrap(),
            b"salt",
            b"password",
            &mut out,
        );
        assert!(
            out.starts_with(&[0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf]),
            "{out:02x?}"
        );
    }

    #[test]
    fn password_line_format() {
        let line = mosquitto_password_line("host-0", "pw").unwrap();
        let parts: Vec<&str> = line.split('$').collect();
        assert_eq!(parts[0], "host-0:");
        assert_eq!(parts[1], "7");
        assert_eq!(parts[2], ITERATIONS.to_string());
        assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), SALT_BYTES);
        assert_eq!(STANDARD.decode(parts[4]).unwrap().len(), 64);
        let p = new_password().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&p).unwrap().len(), PASSWORD_BYTES);
    }

    #[test]
    fn names_are_checked() {
        assert!(identities(&["a/b".into()], &[]).is_err());
        assert!(identities(&["merger".into()], &[]).is_err());
        assert!(identities(&["h".into(), "h".into()], &[]).is_err());
        assert!(identities(&["operator".into()], &["operator".into()]).is_err());
        assert_eq!(
            identities(&["h".into()], &["operator".into()])
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn a_host_writes_only_its_own_topics() {
        let (read, write) = Role::Host("h1".into()).rules();
        assert!(write.contains(&Topic::Birth("h1".into()).path()));
        assert!(!write.iter().any(|t| t.contains("/host/+/")));
        assert!(!write.iter().any(|t| t.contains("assignment")));
        assert!(read.contains(&Topic::Assignment("h1".into()).path()));
        assert!(!read.iter().any(|t| t.contains("/host/+/")));
    }
}
