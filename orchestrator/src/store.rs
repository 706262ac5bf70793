// SPDX-License-Identifier: MPL-2.0
//! The orchestrator's state on disk (redb, one file): hosts with their history and desired
//! assignments, streams with their layout histories, the orchestrator epoch and the command
//! counter. Written after every change, read at start, so a restarted orchestrator carries on
//! with the same epochs and assignments instead of re-dealing the swarm.

use crate::controller::{HostRecord, StreamRecord};
use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Host history samples for the learned disconnect model, by sequence number.
const SAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("samples");
/// Enrolled hosts: host id → its public key (base64).
const HOST_KEYS: TableDefinition<&str, &str> = TableDefinition::new("host_keys");
/// Enrolment tokens used: token id → the host that used it.
const USED_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("used_tokens");
/// Highest counter accepted per signer and topic (`signer topic`), for the messages a replay
/// after a restart must not carry out again (operator commands).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

pub struct Store {
    db: Database,
}

/// What a start reads back.
pub struct Loaded {
    /// Epoch of the previous run (0 for a new store).
    pub epoch: u64,
    pub next_cmd: u64,
    pub hosts: Vec<HostRecord>,
    pub streams: Vec<StreamRecord>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        // The state names every host, stream and source: only its owner reads it. A folder
        // made here is private; an existing one is the operator's to set.
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating state folder {}", dir.display()))?;
        }
        // Private from the first byte (not only after a chmod): created 0600 if new, and an
        // existing one made 0600 again.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating state database {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        let db = Database::create(path)
            .with_context(|| format!("opening state database {}", path.display()))?;
        let w = db.begin_write()?;
        w.open_table(HOSTS)?;
        w.open_table(STREAMS)?;
        w.open_table(META)?;
        w.open_table(SAMPLES)?;
        w.open_table(HOST_KEYS)?;
        w.open_table(USED_TOKENS)?;
        w.open_table(COUNTERS)?;
        w.commit()?;
        Ok(Store { db })
    }

    pub fn load(&self) -> Result<Loaded> {
        let r = self.db.begin_read()?;
        let meta = r.open_table(META)?;
        let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
        let epoch = get("epoch")?;
        let next_cmd = get("next_cmd")?;
        let mut hosts = Vec::new();
        for row in r.open_table(HOSTS)?.iter()? {
            let (k, v) = row?;
            match serde_json::from_slice::<HostRecord>(v.value()) {
                Ok(h) => hosts.push(h),
                Err(e) => tracing::error!("state: host {} unreadable, skipped: {e}", k.value()),
            }
        }
        let mut streams = Vec::new();
        for row in r.open_table(STREAMS)?.iter()? {
            let (k, v) = row?;
            match serde_json::from_slice::<StreamRecord>(v.value()) {
                Ok(s) => streams.push(s),
                Err(e) => tracing::error!("state: stream {} unreadable, skipped: {e}", k.value()),
            }
        }
        Ok(Loaded {
            epoch,
            next_cmd,
            hosts,
            streams,
        })
    }

    /// Write the changed records (a missing stream is deleted) in one transaction.
    pub fn save(
        &self,
        epoch: u64,
        next_cmd: u64,
        hosts: &[(&str, Option<&HostRecord>)],
        streams: &[(&str, Option<&StreamRecord>)],
    ) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut meta = w.open_table(META)?;
            meta.insert("epoch", epoch)?;
            meta.insert("next_cmd", next_cmd)?;
            let mut t = w.open_table(HOSTS)?;
            for (id, h) in hosts {
                match h {
                    Some(h) => {
                        t.insert(*id, serde_json::to_vec(h)?.as_slice())?;
                    }
                    // Forgotten.
                    None => {
                        t.remove(*id)?;
                    }
                }
            }
            let mut t = w.open_table(STREAMS)?;
            for (id, s) in streams {
                match s {
                    Some(s) => {
                        t.insert(*id, serde_json::to_vec(s)?.as_slice())?;
                    }
                    None => {
                        t.remove(*id)?;
                    }
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Enrolled hosts and their public keys (base64).
    pub fn host_keys(&self) -> Result<Vec<(String, String)>> {
        let r = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in r.open_table(HOST_KEYS)?.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Counters accepted before: (signer, topic, counter).
    pub fn counters(&self) -> Result<Vec<(String, String, u64)>> {
        let r = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in r.open_table(COUNTERS)?.iter()? {
            let (k, v) = row?;
            if let Some((who, topic)) = k.value().split_once(' ') {
                out.push((who.to_string(), topic.to_string(), v.value()));
            }
        }
        Ok(out)
    }

    pub fn save_counter(&self, signer: &str, topic: &str, n: u64) -> Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(COUNTERS)?
            .insert(format!("{signer} {topic}").as_str(), n)?;
        w.commit()?;
        Ok(())
    }

    /// The key `host` is enrolled with.
    pub fn host_key(&self, host: &str) -> Result<Option<String>> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(HOST_KEYS)?
            .get(host)?
            .map(|v| v.value().to_string()))
    }

    /// The host that used enrolment token `token_id`, if it was used.
    pub fn token_used_by(&self, token_id: &str) -> Result<Option<String>> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(USED_TOKENS)?
            .get(token_id)?
            .map(|v| v.value().to_string()))
    }

    /// Record an enrolment: the host's key, and its token as used (one transaction).
    pub fn enrol(&self, host: &str, key: &str, token_id: &str) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            w.open_table(HOST_KEYS)?.insert(host, key)?;
            w.open_table(USED_TOKENS)?.insert(token_id, host)?;
        }
        w.commit()?;
        Ok(())
    }

    /// Record an enrolment another orchestrator made (a standby taking over): the host's
    /// key, and its token (if the certificate names it) as used.
    pub fn adopt_enrolment(&self, host: &str, key: &str, token_id: &str) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            w.open_table(HOST_KEYS)?.insert(host, key)?;
            if !token_id.is_empty() {
                w.open_table(USED_TOKENS)?.insert(token_id, host)?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// The token each host enrolled with: host → token id.
    pub fn host_tokens(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let r = self.db.begin_read()?;
        let mut out = std::collections::BTreeMap::new();
        for row in r.open_table(USED_TOKENS)?.iter()? {
            let (k, v) = row?;
            out.insert(v.value().to_string(), k.value().to_string());
        }
        Ok(out)
    }

    /// Append host history samples (one per host per interval).
    pub fn append_samples(
        &self,
        samples: &[crate::controller::fleet::HistorySample],
    ) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(SAMPLES)?;
            let first = t.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (key, smp) in (first..).zip(samples) {
                t.insert(key, serde_json::to_vec(smp)?.as_slice())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Every recorded host history sample, oldest first.
    pub fn load_samples(&self) -> Result<Vec<crate::controller::fleet::HistorySample>> {
        let r = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in r.open_table(SAMPLES)?.iter()? {
            let (k, v) = row?;
            match serde_json::from_slice(v.value()) {
                Ok(smp) => out.push(smp),
                Err(e) => tracing::error!("state: sample {} unreadable, skipped: {e}", k.value()),
            }
        }
        Ok(out)
    }
}
