// SPDX-License-Identifier: MPL-2.0
//! Provisioners: how the scaler gets encoder hosts and gives them back. The default spawns
//! `gopswarm host` processes on this machine; the command hook runs an operator's script for
//! any other platform (a Kubernetes or cloud scaler is then a few lines of shell):
//!
//! ```text
//! $HOOK provision <host-id>      # start a host that joins the swarm as <host-id>
//! $HOOK deprovision <host-id>    # stop it (called after its slots were handed off)
//! $HOOK update <host-id>         # rolling update: restart it on the new version
//! ```
//!
//! The hook gets `GOPSWARM_BROKER` in its environment and must return within its timeout;
//! a non-zero exit is an error the scaler logs and retries later. In a swarm with keys it also
//! gets `GOPSWARM_KEYS`: a key directory made for that host alone (`issued/ID/` of the
//! orchestrator's: the trust file, and later the host's key), never the orchestrator's own;
//! and, for `provision` and `update` of a host that has no key there yet,
//! `GOPSWARM_ENROL_TOKEN`: a one-time token file made for that host
//! (`gopswarm host --enrol-token`).

use anyhow::{Context, Result, bail};
use gopswarm_proto::keys::KeyDir;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the scaler gets hosts from.
pub trait Provisioner: Send {
    /// Start one host that will join as `host_id`.
    fn provision(&mut self, host_id: &str) -> Result<()>;
    /// Stop a host (its slots are handed off already).
    fn deprovision(&mut self, host_id: &str) -> Result<()>;
    /// Restart a drained host on the new version (rolling update).
    fn update(&mut self, host_id: &str) -> Result<()> {
        self.deprovision(host_id)?;
        self.provision(host_id)
    }
}

/// Spawns `gopswarm host --id ID --broker URL [extra args]` processes on this machine.
pub struct LocalSpawner {
    pub program: std::path::PathBuf,
    pub broker: String,
    pub extra_args: Vec<String>,
    /// Where each host's log goes (`DIR/ID.log`); none: inherited stderr.
    pub log_dir: Option<std::path::PathBuf>,
    /// The swarm's keys: a new host gets a fresh enrolment token. None: hosts run `--insecure`.
    pub keys: Option<KeyDir>,
    children: BTreeMap<String, Child>,
}

/// The key directory of `host_id` alone, and a token made for it while it has no key.
fn issue(keys: &KeyDir, host_id: &str) -> Result<(KeyDir, Option<std::path::PathBuf>)> {
    keys.issue_host(host_id)
        .map_err(|e| anyhow::anyhow!("keys for host {host_id}: {e}"))
}

impl LocalSpawner {
    pub fn new(program: std::path::PathBuf, broker: String, extra_args: Vec<String>) -> Self {
        LocalSpawner {
            program,
            broker,
            extra_args,
            log_dir: None,
            keys: None,
            children: BTreeMap::new(),
        }
    }

    pub fn running(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(id, c)| matches!(c.try_wait(), Ok(None)).then(|| id.clone()))
            .collect()
    }
}

impl Provisioner for LocalSpawner {
    fn provision(&mut self, host_id: &str) -> Result<()> {
        if let Some(c) = self.children.get_mut(host_id)
            && matches!(c.try_wait(), Ok(None))
        {
            bail!("host {host_id} is running already");
        }
        let mut cmd = Command::new(&self.program);
        cmd.args(["host", "--id", host_id, "--broker", &self.broker])
            .args(&self.extra_args)
            .stdin(Stdio::null());
        match &self.keys {
            Some(keys) => {
                let (own, token) = issue(keys, host_id)?;
                cmd.env("GOPSWARM_KEYS", &own.dir);
                if let Some(token) = token {
                    cmd.arg("--enrol-token").arg(token);
                }
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        if let Some(dir) = &self.log_dir {
            let log = std::fs::File::create(dir.join(format!("{host_id}.log")))
                .with_context(|| format!("log of {host_id}"))?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        if let Some(dir) = &self.log_dir {
            // For operators (and tests) cleaning up after an orchestrator that was killed.
            let _ = std::fs::write(dir.join(format!("{host_id}.pid")), child.id().to_string());
        }
        tracing::info!("provisioned host {host_id} (pid {})", child.id());
        self.children.insert(host_id.to_string(), child);
        Ok(())
    }

    fn deprovision(&mut self, host_id: &str) -> Result<()> {
        let mut child = self
            .children
            .remove(host_id)
            .with_context(|| format!("host {host_id} was not provisioned here"))?;
        // SIGTERM: the host leaves cleanly; SIGKILL if it does not within 5 s.
        terminate(child.id());
        for _ in 0..50 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                tracing::info!("deprovisioned host {host_id}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        tracing::warn!("host {host_id} did not stop on SIGTERM; killed");
        Ok(())
    }
}

impl Drop for LocalSpawner {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn terminate(pid: u32) {
    // `kill -TERM` keeps this crate free of libc; the process is our own child.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Runs an operator's command: `HOOK provision|deprovision|update HOST_ID`.
pub struct CommandHook {
    pub command: String,
    pub broker: String,
    pub timeout: Duration,
    /// The swarm's keys (`GOPSWARM_KEYS`, and a token for a new host).
    pub keys: Option<KeyDir>,
}

impl CommandHook {
    fn run(&self, verb: &str, host_id: &str) -> Result<()> {
        if !gopswarm_proto::valid_id(host_id) {
            bail!("host id {host_id:?} is not valid");
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{} \"$0\" \"$1\"", self.command))
            .arg(verb)
            .arg(host_id)
            .env("GOPSWARM_BROKER", &self.broker)
            .stdin(Stdio::null());
        if let Some(keys) = &self.keys
            && verb != "deprovision"
        {
            let (own, token) = issue(keys, host_id)?;
            cmd.env("GOPSWARM_KEYS", &own.dir);
            if let Some(token) = token {
                cmd.env("GOPSWARM_ENROL_TOKEN", token);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running hook {:?}", self.command))?;
        let started = std::time::Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                if st.success() {
                    return Ok(());
                }
                bail!("hook {:?} {verb} {host_id} failed: {st}", self.command);
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("hook {:?} {verb} {host_id} timed out", self.command);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Provisioner for CommandHook {
    fn provision(&mut self, host_id: &str) -> Result<()> {
        self.run("provision", host_id)
    }
    fn deprovision(&mut self, host_id: &str) -> Result<()> {
        self.run("deprovision", host_id)
    }
    fn update(&mut self, host_id: &str) -> Result<()> {
        self.run("update", host_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_host_gets_the_keys_and_a_fresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::init(dir.path().join("keys"), "operator", "merger", 0).unwrap();
        let log = dir.path().join("calls");
        let mut hook = CommandHook {
            command: format!(
                "f() {{ echo \"$1 $GOPSWARM_KEYS ${{GOPSWARM_ENROL_TOKEN:-none}}\" >> {}; }}; f",
                log.display()
            ),
            broker: String::new(),
            timeout: Duration::from_secs(5),
            keys: Some(keys.clone()),
        };
        hook.provision("h-1").unwrap();
        hook.deprovision("h-1").unwrap();
        let own = KeyDir::new(keys.dir.join("issued/h-1"));
        own.create_host_key("h-1").unwrap();
        hook.update("h-1").unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = calls.lines().collect();
        let o = own.dir.display();
        // Its own directory (not the orchestrator's keys) and a token made for it.
        assert_eq!(lines[0], format!("provision {o} {o}/enrol.token"));
        assert!(own.dir.join("trust.json").exists());
        assert!(!own.dir.join("orchestrator.key").exists());
        assert_eq!(lines[1], "deprovision  none");
        // Enrolled by then: no token for its update.
        assert_eq!(lines[2], format!("update {o} none"), "{calls}");
        let tokens = keys.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].1.host.as_deref(), Some("h-1"));
    }

    #[test]
    fn command_hook_passes_verb_host_and_broker() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let mut hook = CommandHook {
            command: format!(
                "f() {{ echo \"$1 $2 $GOPSWARM_BROKER\" >> {}; }}; f",
                log.display()
            ),
            broker: "mqtt://127.0.0.1:1".into(),
            timeout: Duration::from_secs(5),
            keys: None,
        };
        hook.provision("h-1").unwrap();
        hook.deprovision("h-1").unwrap();
        hook.update("h-2").unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls,
            "provision h-1 mqtt://127.0.0.1:1\ndeprovision h-1 mqtt://127.0.0.1:1\nupdate h-2 mqtt://127.0.0.1:1\n"
        );
    }

    #[test]
    fn command_hook_failures_and_bad_ids_are_errors() {
        let mut hook = CommandHook {
            command: "false".into(),
            broker: String::new(),
            timeout: Duration::from_secs(5),
            keys: None,
        };
        let e = hook.provision("h-1").unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
        let e = hook.provision("bad id; rm -rf /").unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
        let mut slow = CommandHook {
            command: "sleep 5; true".into(),
            broker: String::new(),
            timeout: Duration::from_millis(300),
            keys: None,
        };
        let e = slow.provision("h-1").unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn local_spawner_starts_and_stops_processes() {
        // A script stands in for the gopswarm binary: it ignores the host arguments and sleeps.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-gopswarm");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = LocalSpawner::new(script, "mqtt://127.0.0.1:1".into(), vec![]);
        s.provision("h-1").unwrap();
        assert!(s.provision("h-1").is_err(), "already running");
        assert_eq!(s.running(), ["h-1"]);
        s.deprovision("h-1").unwrap();
        assert!(s.running().is_empty());
        assert!(s.deprovision("h-1").is_err());
    }
}
