// SPDX-License-Identifier: MPL-2.0
//! The GOP-boundary handoff of one slot (prepare, commit, drain; abort when the new host is
//! not ready in time) and the command acks that drive it.

use super::*;

impl Controller {
    pub fn on_ack(&mut self, ack: Ack, now: Instant) {
        if let Some((host, sent)) = self.pings.remove(&ack.id) {
            if host == ack.host
                && let Some(h) = self.hosts.get_mut(&host)
            {
                h.live.rtt.push(now.saturating_duration_since(sent));
            }
            return;
        }
        let Some((host, stream, profile)) = self.pending.remove(&ack.id) else {
            return; // duplicate or unknown: handled already
        };
        if host != ack.host {
            return;
        }
        if let (Some(g), Some(h)) = (ack.current_gop, self.hosts.get_mut(&host)) {
            let key = (stream.clone(), profile.clone());
            let st = h.status.entry(key).or_insert_with(|| TaskStatus {
                stream: stream.clone(),
                profile: profile.clone(),
                layout_epoch: 0,
                current_gop: None,
                gops_sent: 0,
                ready: false,
                error: None,
            });
            st.current_gop = Some(st.current_gop.map_or(g, |c| c.max(g)));
        }
        let Some(ps) = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.profiles.get_mut(&profile))
        else {
            return;
        };
        match ps.op.clone() {
            Some(Op::Start {
                hosts,
                mut ready,
                deadline,
                leaving,
            }) if hosts.contains(&host) => {
                if ack.ok {
                    ready.insert(host, ack.current_gop.unwrap_or(0));
                    ps.op = Some(Op::Start {
                        hosts,
                        ready,
                        deadline,
                        leaving,
                    });
                    self.try_commit_start(&stream, &profile, now, false);
                } else {
                    tracing::warn!("{host} cannot prepare {stream}/{profile}: {}", ack.detail);
                }
            }
            Some(Op::Handoff(ho)) if ho.to == host => match &ho.stage {
                HandoffStage::Preparing { cmd } if *cmd == ack.id => {
                    if ack.ok {
                        self.commit_handoff(&stream, &profile, ho, now);
                    } else {
                        self.abort_handoff(&stream, &profile, &ack.detail);
                    }
                }
                HandoffStage::Committing { cmd, k, .. } if *cmd == ack.id => {
                    let k = *k;
                    match ack.current_gop {
                        Some(g) if ack.ok && g < k => self.finish_handoff(&stream, &profile, ho),
                        _ => {
                            // Too late for k (or refused): the old host still holds the slot;
                            // commit again further ahead.
                            self.stats.handoff_retries += 1;
                            if let Some(rec) = self.handoffs.last_mut()
                                && rec.stream == stream
                            {
                                rec.retries += 1;
                            }
                            self.commit_handoff(&stream, &profile, ho, now);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Start a planned handoff of `from`'s slot to `to` (or to the least loaded free host).
    pub fn start_handoff(
        &mut self,
        stream: &str,
        profile: &str,
        from: &str,
        to: Option<&str>,
        now: Instant,
    ) -> Result<String, String> {
        let cur = self.idle_layout(stream, profile)?;
        let slot = cur
            .hosts
            .iter()
            .position(|h| h == from)
            .ok_or_else(|| format!("{from} holds no slot of {stream}/{profile}"))?
            as u32;
        let to = self.target_host(stream, profile, &cur, to)?;
        let standby = LayoutEpoch {
            epoch: cur.epoch,
            from_gop: 0,
            redundancy: cur.redundancy,
            hosts: cur.hosts.clone(),
            backups: Vec::new(),
        };
        let cmd = self.prepare_standby(stream, profile, &standby, &to, slot);
        let decided_at_gop = self.hosts[from].gop(stream, profile);
        self.handoffs.push(HandoffRecord {
            stream: stream.to_string(),
            profile: profile.to_string(),
            from: from.to_string(),
            to: to.clone(),
            epoch: 0,
            switch_gop: 0,
            decided_at_gop,
            retries: 0,
        });
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        ps.op = Some(Op::Handoff(Handoff {
            from: from.to_string(),
            to: to.clone(),
            slot,
            stage: HandoffStage::Preparing { cmd },
            deadline: now + self.cfg.prepare_timeout,
            started: now,
        }));
        tracing::info!("{stream}/{profile}: handoff of slot {slot} {from} -> {to} prepared");
        Ok(to)
    }

    pub(super) fn commit_handoff(
        &mut self,
        stream: &str,
        profile: &str,
        ho: Handoff,
        now: Instant,
    ) {
        let cur = self.streams[stream].profiles[profile]
            .history
            .last()
            .cloned()
            .expect("started");
        let mut hosts = cur.hosts.clone();
        hosts[ho.slot as usize] = ho.to.clone();
        let k = self.switch_gop_for(stream, profile, &[ho.from.clone(), ho.to.clone()]);
        // Only the new host hears of it now; the layout and the old host's drain follow its ack.
        let epoch = cur.epoch + 1;
        let e = LayoutEpoch {
            epoch,
            from_gop: k,
            redundancy: cur.redundancy,
            hosts,
            backups: Vec::new(),
        };
        let task = self.make_task(stream, profile, TaskRole::Active, &e, ho.slot);
        // Keep the layout of the prepared task's stream untouched until confirmed.
        let cmd = self.command(
            &ho.to,
            stream,
            profile,
            CommandKind::Commit { task: task.clone() },
        );
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        ps.op = Some(Op::Handoff(Handoff {
            stage: HandoffStage::Committing { cmd, epoch, k },
            deadline: now + self.cfg.commit_timeout,
            ..ho
        }));
        // Desired state of the new host (retained) only after the commit; a restart of it
        // before the ack re-reads its Standby task and the handoff times out safely.
    }

    pub(super) fn finish_handoff(&mut self, stream: &str, profile: &str, ho: Handoff) {
        let HandoffStage::Committing { epoch, k, .. } = ho.stage else {
            return;
        };
        let cur = self.streams[stream].profiles[profile]
            .history
            .last()
            .cloned()
            .expect("started");
        let mut hosts = cur.hosts.clone();
        hosts[ho.slot as usize] = ho.to.clone();
        let e = LayoutEpoch {
            epoch,
            from_gop: k,
            redundancy: cur.redundancy,
            hosts: hosts.clone(),
            backups: Vec::new(),
        };
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        ps.history.push(e.clone());
        ps.op = None;
        self.stats.layouts += 1;
        self.stats.handoffs_done += 1;
        self.dirty_streams.insert(stream.to_string());
        self.publish_layout(stream, profile);
        // Every holder moves to the new epoch at k (same slots); the new host is committed
        // already, the old one drains after k - 1.
        for (i, h) in hosts.iter().enumerate() {
            let task = self.make_task(stream, profile, TaskRole::Active, &e, i as u32);
            if *h == ho.to {
                self.set_task(h, stream, profile, Some(task));
            } else {
                self.set_task(h, stream, profile, Some(task.clone()));
                self.command(h, stream, profile, CommandKind::Commit { task });
            }
        }
        self.drain_task(&ho.from, stream, profile, k - 1);
        if let Some(rec) = self
            .handoffs
            .iter_mut()
            .rev()
            .find(|r| r.stream == stream && r.profile == profile && r.to == ho.to)
        {
            rec.epoch = epoch;
            rec.switch_gop = k;
        }
        tracing::info!(
            "{stream}/{profile}: slot {} {} -> {} at GOP {k} (epoch {epoch})",
            ho.slot,
            ho.from,
            ho.to
        );
    }

    /// `host` keeps its task of (stream, profile) up to `last_gop` and then lets it go.
    pub(crate) fn drain_task(&mut self, host: &str, stream: &str, profile: &str, last_gop: u64) {
        if let Some(mut old) = self.task_of(host, stream, profile).cloned() {
            old.until_gop = Some(last_gop);
            self.set_task(host, stream, profile, Some(old));
            self.command(
                host,
                stream,
                profile,
                CommandKind::Drain {
                    stream: stream.to_string(),
                    profile: profile.to_string(),
                    last_gop,
                },
            );
        }
    }

    pub(super) fn abort_handoff(&mut self, stream: &str, profile: &str, why: &str) {
        let Some(Op::Handoff(ho)) = self.streams[stream].profiles[profile].op.clone() else {
            return;
        };
        tracing::warn!(
            "{stream}/{profile}: handoff {} -> {} aborted: {why}; the old host keeps the slot",
            ho.from,
            ho.to
        );
        self.stats.handoffs_aborted += 1;
        self.end_op(stream, profile);
        if self.hosts.get(&ho.to).is_some_and(|h| h.alive) {
            self.set_task(&ho.to, stream, profile, None);
            self.command(
                &ho.to,
                stream,
                profile,
                CommandKind::Abort {
                    stream: stream.to_string(),
                    profile: profile.to_string(),
                },
            );
        }
        if let Some(pos) = self.handoffs.iter().rposition(|r| {
            r.stream == stream && r.profile == profile && r.to == ho.to && r.switch_gop == 0
        }) {
            self.handoffs.remove(pos);
        }
    }

    /// Drop a drained task once the host no longer runs it (its last GOP is out).
    pub(super) fn cleanup_drained(&mut self, host: &str, reported: &BTreeSet<(String, String)>) {
        let done: Vec<(String, String)> = self.hosts[host]
            .tasks
            .iter()
            .filter(|t| {
                // Gone from the host's report: it drained and flushed its last GOP.
                t.until_gop.is_some() && !reported.contains(&(t.stream.clone(), t.profile.clone()))
            })
            .map(|t| (t.stream.clone(), t.profile.clone()))
            .collect();
        for (s, p) in done {
            self.set_task(host, &s, &p, None);
        }
    }
}
