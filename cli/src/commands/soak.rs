// SPDX-License-Identifier: MPL-2.0
//! `gopswarm soak`: a long run of the whole swarm, every part its own process (the
//! orchestrator with its embedded TLS broker, the source, the hosts, the merger), with swarm
//! keys and redundancy, while hosts are killed and started again on a schedule. It samples
//! every process's resident memory, and at the end checks that no GOP was lost, that the
//! output is frame-exact, and that no process that ran throughout grew by more than the
//! allowed share after the warm-up. Writes `soak.json` (every sample), `rss.svg` (the memory
//! of each process over time) and `summary.txt`.

use crate::commands::demo::{Children, spawn_logged};
use crate::loopback::{free_port, wait_listen};
use crate::{media, qa};
use anyhow::{Context, Result, bail};
use gopswarm_agents::{daemon, options::seconds};
use gopswarm_proto::keys::{DEFAULT_MERGER, DEFAULT_OPERATOR, KeyDir};
use gopswarm_proto::link::{BrokerUrl, Link, LinkOptions};
use gopswarm_proto::signed::Principal;
use gopswarm_proto::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SoakOptions {
    /// Sample clip name or path of an H.264 MP4 (looped live by the source)
    #[arg(long, default_value = "synthetic-720p25")]
    clip: String,
    /// Folder for keys, logs, the output and the report (emptied first)
    #[arg(long, default_value = "out/soak")]
    out: PathBuf,
    /// Seconds of live stream
    #[arg(long, default_value_t = 3600.0)]
    duration: f64,
    /// Hosts holding slots
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Extra hosts (they take the slots of killed hosts)
    #[arg(long, default_value_t = 2)]
    spares: usize,
    /// Hosts never killed (the first ones, which take the slots): their memory is judged over
    /// the whole run (the killed ones start again with fresh memory)
    #[arg(long, default_value_t = 2)]
    steady_hosts: usize,
    /// Redundant copies per GOP (a kill loses nothing only with 1 or more)
    #[arg(long, default_value_t = 1)]
    redundancy: u32,
    /// GOP duration, seconds
    #[arg(long, default_value_t = 2.0)]
    gop: f64,
    /// The stream's profile (profileenc syntax)
    #[arg(long, default_value = crate::commands::demo::DEMO_PROFILE)]
    profile: String,
    /// SIGKILL a host (round robin over the ones not steady) every this many seconds
    #[arg(long, default_value_t = 120.0)]
    churn_every: f64,
    /// A killed host starts again after this many seconds
    #[arg(long, default_value_t = 20.0)]
    down_for: f64,
    /// Memory before this many seconds is not judged: caches, pools and the encoder's
    /// look-ahead fill up first, and with --chunks mqtt the embedded broker's log of recent
    /// chunks (two 4 MiB segments per stream and profile)
    #[arg(long, default_value_t = 1200.0)]
    warmup: f64,
    /// Seconds between memory samples, on average (each interval is 0.75 to 1.25 of it, so
    /// samples do not lock onto the phase of a periodic swing)
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Largest growth of a process's memory after the warm-up, percent: the mean of the last
    /// tenth of its samples against the mean of the first tenth after the warm-up
    #[arg(long, default_value_t = 1.0)]
    max_growth: f64,
    /// How chunks reach the merger: `tcp` (TLS with the swarm's merger certificate) or `mqtt`
    /// (through the orchestrator's embedded broker)
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "mqtt"])]
    chunks: String,
    /// MQTT keep-alive and heartbeat interval, seconds
    #[arg(long, default_value_t = 2.0)]
    keepalive: f64,
}

/// Memory samples of one process run (a host started again is a new run).
#[derive(Debug, Clone, Serialize)]
struct Series {
    name: String,
    pid: u32,
    /// (seconds since the start, resident kB)
    samples: Vec<(f64, u64)>,
    /// Ran from the first sample to the last (judged).
    throughout: bool,
}

#[derive(Debug, Serialize)]
struct Growth {
    name: String,
    early_kb: f64,
    late_kb: f64,
    percent: f64,
}

#[derive(Debug, Serialize)]
struct SoakReport {
    duration_s: f64,
    kills: usize,
    lost_gops: Vec<u64>,
    frames: u64,
    expected_frames: u64,
    decode_errors: String,
    growth: Vec<Growth>,
    max_growth_percent: f64,
    series: Vec<Series>,
    merge: serde_json::Value,
    /// Processes that stopped before the stream's end without being killed, and a merger
    /// that exited with an error: each fails the run.
    died: Vec<String>,
}

impl SoakReport {
    fn passed(&self) -> bool {
        self.died.is_empty()
            && self.lost_gops.is_empty()
            && self.frames > 0
            && self.frames == self.expected_frames
            && self.decode_errors.trim().is_empty()
            && !self.growth.is_empty()
            && self
                .growth
                .iter()
                .all(|g| g.percent < self.max_growth_percent)
    }
}

/// Resident memory of `pid` in kB (`VmRSS`), if it still runs.
fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Steps of this fraction spread sample times evenly over any period (a low-discrepancy
/// sequence).
const GOLDEN_RATIO_CONJUGATE: f64 = 0.618_033_988_749_895;

/// Growth of a series after `warmup`: mean of its last tenth against its first tenth.
fn growth(s: &Series, warmup: f64, end: f64) -> Option<Growth> {
    let after: Vec<f64> = s
        .samples
        .iter()
        .filter(|(t, _)| *t >= warmup && *t <= end)
        .map(|(_, kb)| *kb as f64)
        .collect();
    let n = (after.len() / 10).max(1);
    if after.len() < 4 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (early, late) = (mean(&after[..n]), mean(&after[after.len() - n..]));
    Some(Growth {
        name: s.name.clone(),
        early_kb: early,
        late_kb: late,
        percent: 100.0 * (late - early) / early,
    })
}

pub fn run(o: SoakOptions) -> Result<()> {
    daemon::init_logging_quiet();
    anyhow::ensure!(
        o.steady_hosts < o.hosts + o.spares,
        "--steady-hosts {}: at least one of the {} hosts must be left to kill",
        o.steady_hosts,
        o.hosts + o.spares
    );
    anyhow::ensure!(
        o.redundancy >= 1 && o.spares >= 1,
        "a soak kills hosts: it needs --redundancy 1 or more and a spare host to lose nothing"
    );
    anyhow::ensure!(
        o.duration >= o.warmup + 20.0 * o.sample_every,
        "--duration {} s leaves too little after --warmup {} s for 20 memory samples (every {} s)",
        o.duration,
        o.warmup,
        o.sample_every
    );
    let report = soak(&o)?;
    let text = format_report(&report);
    std::fs::write(o.out.join("summary.txt"), &text)?;
    std::fs::write(
        o.out.join("soak.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(o.out.join("rss.svg"), rss_svg(&report.series, o.warmup))?;
    print!("{text}");
    let ok = report.passed();
    println!("{}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn soak(o: &SoakOptions) -> Result<SoakReport> {
    let clip = if Path::new(&o.clip).is_file() {
        PathBuf::from(&o.clip)
    } else {
        qa::clip(&o.clip)?.path
    };
    let _ = std::fs::remove_dir_all(&o.out);
    std::fs::create_dir_all(&o.out)?;
    let out = o.out.canonicalize()?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let n = o.hosts + o.spares;
    let keys_dir = out.join("keys");
    let keys =
        KeyDir::init(&keys_dir, DEFAULT_OPERATOR, DEFAULT_MERGER, n).map_err(anyhow::Error::msg)?;
    let operator = keys
        .signer(Principal::Operator(DEFAULT_OPERATOR.into()))
        .map_err(anyhow::Error::msg)?;
    let keys_arg = keys_dir.display().to_string();
    let (broker_port, source_port, merger_port) = (free_port()?, free_port()?, free_port()?);
    let chunk_sink = (o.chunks == "tcp").then(|| format!("tcp://127.0.0.1:{merger_port}"));
    let broker = format!("mqtts://127.0.0.1:{broker_port}");
    let keepalive = o.keepalive.to_string();
    let duration = seconds(o.duration)?;
    let mut children = Children(Vec::new());
    let s = |v: &str| v.to_string();
    children.0.push((
        s("orchestrator"),
        spawn_logged(
            "orchestrator",
            &[
                s("orchestrator"),
                s("--listen"),
                format!("127.0.0.1:{broker_port}"),
                s("--state"),
                out.join("state.redb").display().to_string(),
                s("--keys"),
                keys_arg.clone(),
                s("--keepalive"),
                keepalive.clone(),
            ],
            &logs,
        )?,
    ));
    wait_listen(broker_port, Duration::from_secs(20)).context("the embedded broker")?;
    children.0.push((
        s("source"),
        spawn_logged(
            "source",
            &[
                s("source"),
                s("--clip"),
                clip.display().to_string(),
                s("--port"),
                source_port.to_string(),
                s("--duration"),
                o.duration.to_string(),
            ],
            &logs,
        )?,
    ));
    wait_listen(source_port, Duration::from_secs(10)).context("the source")?;
    let ids: Vec<String> = (0..n).map(|i| format!("host-{i}")).collect();
    let host_args = |i: usize| -> Vec<String> {
        let mut a = vec![
            s("host"),
            s("--id"),
            ids[i].clone(),
            s("--broker"),
            broker.clone(),
            s("--keepalive"),
            keepalive.clone(),
            s("--keys"),
            keys_arg.clone(),
        ];
        // Enrols once with its token; started again, it has its key.
        if !keys.key_path(&Principal::Host(ids[i].clone())).exists() {
            a.push(s("--enrol-token"));
            a.push(
                keys_dir
                    .join("tokens")
                    .join(format!("{}.token", i + 1))
                    .display()
                    .to_string(),
            );
        }
        a
    };
    for (i, id) in ids.iter().enumerate() {
        children
            .0
            .push((id.clone(), spawn_logged(id, &host_args(i), &logs)?));
        // One at a time: the tokens are taken in order.
        std::thread::sleep(Duration::from_millis(300));
    }
    let rt = daemon::runtime()?;
    // The stream, as an operator adds it.
    rt.block_on(async {
        let mut ctl = LinkOptions::new(
            BrokerUrl::parse(&broker)
                .map_err(anyhow::Error::msg)?
                .for_swarm(keys.broker_ca().as_deref(), Some(operator.broker_login()))
                .map_err(anyhow::Error::msg)?,
            "gopswarm-soak-ctl",
        );
        ctl.clean_session = true;
        let ctl = Link::start(ctl);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let def = StreamDef {
            id: "soak".into(),
            source: format!("gdp+tcp://127.0.0.1:{source_port}"),
            profiles: vec![ProfileDef {
                id: "p360".into(),
                spec: o.profile.clone(),
            }],
            gop_ns: seconds(o.gop)?.as_nanos() as u64,
            redundancy: Some(o.redundancy),
            slots: Some(o.hosts as u32),
            complexity: None,
            chunk_sink: chunk_sink.clone(),
        };
        crate::commands::demo::send(&ctl, &operator, &StreamCommand::Add { stream: def }).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = ctl.client.disconnect().await;
        anyhow::Ok(())
    })?;
    let summary_path = out.join("merge-summary.json");
    let listen: Vec<String> = chunk_sink
        .iter()
        .flat_map(|c| [s("--listen"), c.clone()])
        .collect();
    children.0.push((
        s("merger"),
        spawn_logged(
            "merger",
            &[
                vec![
                    s("merge"),
                    s("--broker"),
                    broker.clone(),
                    s("--keys"),
                    keys_arg.clone(),
                    s("--stream"),
                    s("soak"),
                    s("--profile"),
                    s("p360"),
                    s("--out"),
                    out.join("soak").display().to_string(),
                    s("--summary"),
                    summary_path.display().to_string(),
                    s("--latency-gops"),
                    (o.hosts as u64 + 3).to_string(),
                ],
                listen,
            ]
            .concat(),
            &logs,
        )?,
    ));
    eprintln!(
        "soak: {n} hosts (r={}, {} steady), chunks over {}, a kill every {} s for {} s; logs in {}",
        o.redundancy,
        o.steady_hosts,
        o.chunks,
        o.churn_every,
        o.duration,
        logs.display()
    );

    let start = Instant::now();
    let churn_every = seconds(o.churn_every)?;
    let down_for = seconds(o.down_for)?;
    let sample_every = seconds(o.sample_every)?;
    // The first hosts take the slots and are never killed: a killed holder's slot goes to an
    // idle spare, so the steady ones keep one task each and their memory is comparable.
    let victims: Vec<usize> = (o.steady_hosts..n).collect();
    let mut series: BTreeMap<(String, u32), Series> = BTreeMap::new();
    let mut kills = 0usize;
    let mut down: Option<(usize, Instant)> = None;
    let mut next_kill = start + churn_every;
    let mut next_sample = start;
    let mut sampled = 0u64;
    let mut last_progress = start;
    let merger_exit = |c: &mut Children| -> Result<Option<std::process::ExitStatus>> {
        let (_, m) = c.0.iter_mut().find(|(n, _)| n == "merger").expect("merger");
        Ok(m.try_wait()?)
    };
    let mut died = Vec::new();
    loop {
        if let Some(st) = merger_exit(&mut children)? {
            if !st.success() {
                died.push(format!("merger ({st})"));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let now = Instant::now();
        let t = now.duration_since(start).as_secs_f64();
        if now >= next_sample {
            // Between 0.75 and 1.25 intervals, never a fixed period: the daemons free memory
            // back every few seconds and merge a GOP every GOP, so samples at a fixed period
            // sat at one phase of those cycles for minutes and saw a swing of 10 MiB as growth.
            sampled += 1;
            let spread = (sampled as f64 * GOLDEN_RATIO_CONJUGATE).fract();
            next_sample += sample_every.mul_f64(0.75 + 0.5 * spread);
            for (name, child) in &children.0 {
                if let Some(kb) = rss_kb(child.id()) {
                    series
                        .entry((name.clone(), child.id()))
                        .or_insert_with(|| Series {
                            name: name.clone(),
                            pid: child.id(),
                            samples: Vec::new(),
                            throughout: false,
                        })
                        .samples
                        .push((t, kb));
                }
            }
        }
        if let Some((i, since)) = down
            && now.duration_since(since) >= down_for
        {
            let id = ids[i].clone();
            let child = spawn_logged(&format!("{id}-{kills}"), &host_args(i), &logs)?;
            if let Some(slot) = children.0.iter_mut().find(|(n, _)| *n == id) {
                slot.1 = child;
            }
            eprintln!("soak: {t:>7.1} s  {id} started again");
            down = None;
        }
        // Kills stop two churn periods before the end: the last one's slots settle.
        if now >= next_kill && down.is_none() && now + 2 * churn_every < start + duration {
            next_kill += churn_every;
            let i = victims[kills % victims.len()];
            if let Some((_, child)) = children.0.iter_mut().find(|(n, _)| *n == ids[i]) {
                child.kill()?;
                let _ = child.wait();
                kills += 1;
                down = Some((i, now));
                eprintln!("soak: {t:>7.1} s  SIGKILL {} (kill {kills})", ids[i]);
            }
        }
        if now.duration_since(last_progress) >= Duration::from_secs(60) {
            last_progress = now;
            let mem: Vec<String> = children
                .0
                .iter()
                .filter_map(|(n, c)| {
                    rss_kb(c.id()).map(|kb| format!("{n} {:.1}", kb as f64 / 1024.0))
                })
                .collect();
            eprintln!(
                "soak: {t:>7.1} s / {:.0} s  {kills} kills  RSS MiB: {}",
                o.duration,
                mem.join(", ")
            );
        }
        if now.duration_since(start) > duration + Duration::from_secs(180) {
            bail!("the merger did not finish within 3 minutes of the stream's end");
        }
    }
    let last_t = start.elapsed().as_secs_f64();
    drop(children);
    let mut series: Vec<Series> = series.into_values().collect();
    let first_t = series
        .iter()
        .filter_map(|s| s.samples.first().map(|x| x.0))
        .fold(f64::INFINITY, f64::min);
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for s in &series {
        *runs.entry(s.name.clone()).or_default() += 1;
    }
    // Memory is judged while the stream runs, not while the parts wind down after it.
    let end = o.duration.min(last_t);
    for s in &mut series {
        // One run from the first sampling round on: never killed ...
        s.throughout = runs[&s.name] == 1
            && s.samples
                .first()
                .is_some_and(|x| x.0 <= first_t + o.sample_every);
        // ... and it must have lived to the end.
        if s.throughout
            && s.samples
                .last()
                .is_some_and(|x| x.0 < end - 3.0 * o.sample_every)
        {
            died.push(format!(
                "{} (pid {}) stopped at {:.0} s",
                s.name,
                s.pid,
                s.samples.last().map_or(0.0, |x| x.0)
            ));
        }
    }
    eprintln!("soak: {last_t:.0} s");
    let growth: Vec<Growth> = series
        .iter()
        .filter(|s| s.throughout)
        .filter_map(|s| growth(s, o.warmup, end))
        .collect();
    let merge_text = std::fs::read_to_string(&summary_path)
        .with_context(|| format!("the merger's summary {}", summary_path.display()))?;
    let merge: serde_json::Value = serde_json::from_str(&merge_text)?;
    let lost_gops: Vec<u64> = merge["lost_gops"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let mp4 = PathBuf::from(merge["mp4"].as_str().unwrap_or_default());
    eprintln!("soak: checking {} with ffprobe and ffmpeg", mp4.display());
    let frames = media::video_frames(&mp4)?.len() as u64;
    let decode_errors = media::decode_errors(&mp4)?;
    let info = media::stream_info(&clip)?;
    let gop_frames = (o.gop * info.fps.0 as f64 / info.fps.1 as f64).round() as u64;
    let expected_frames = match (merge["first_gop"].as_u64(), merge["last_gop"].as_u64()) {
        (Some(a), Some(b)) => (b - a + 1) * gop_frames,
        _ => 0,
    };
    Ok(SoakReport {
        duration_s: o.duration,
        kills,
        lost_gops,
        frames,
        expected_frames,
        decode_errors,
        growth,
        max_growth_percent: o.max_growth,
        series,
        merge,
        died,
    })
}

fn format_report(r: &SoakReport) -> String {
    let mut s = format!(
        "soak: {:.0} s of stream, {} host kills\nlost GOPs: {:?}\noutput: {} frames, {} expected, decode: {}\n",
        r.duration_s,
        r.kills,
        r.lost_gops,
        r.frames,
        r.expected_frames,
        if r.decode_errors.trim().is_empty() {
            "clean"
        } else {
            "ERRORS"
        }
    );
    if !r.died.is_empty() {
        s += &format!("stopped early: {}\n", r.died.join(", "));
    }
    s += &format!(
        "resident memory after the warm-up (processes that ran throughout; limit {:.1} %):\n",
        r.max_growth_percent
    );
    for g in &r.growth {
        s += &format!(
            "  {:<14} {:>8.1} MiB -> {:>8.1} MiB  {:+.2} %\n",
            g.name,
            g.early_kb / 1024.0,
            g.late_kb / 1024.0,
            g.percent
        );
    }
    let restarted: Vec<String> = r
        .series
        .iter()
        .filter(|s| !s.throughout)
        .map(|s| {
            let peak = s.samples.iter().map(|x| x.1).max().unwrap_or(0);
            format!(
                "{} (pid {}, peak {:.1} MiB)",
                s.name,
                s.pid,
                peak as f64 / 1024.0
            )
        })
        .collect();
    s += &format!(
        "killed or short-lived runs, not judged: {}\n",
        restarted.join(", ")
    );
    s
}

/// Resident memory of every process over time, one line each, the warm-up shaded.
fn rss_svg(series: &[Series], warmup: f64) -> String {
    let (w, h, left, bottom) = (900.0, 420.0, 70.0, 40.0);
    let t_max = series
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.0))
        .fold(1.0, f64::max);
    let kb_max = series
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.1 as f64))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |t: f64| left + (w - left - 20.0) * t / t_max;
    let y = |kb: f64| (h - bottom) - (h - bottom - 30.0) * kb / kb_max;
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\">gopswarm soak: resident memory of each process (MiB) over time (s); shaded: warm-up</text>\n\
         <rect x=\"{left}\" y=\"30\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#eee\"/>\n",
        x(warmup.min(t_max)) - left,
        h - bottom - 30.0
    );
    for i in 0..=4 {
        let kb = kb_max * i as f64 / 4.0;
        svg += &format!(
            "<text x=\"5\" y=\"{:.1}\">{:.0}</text><line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ccc\"/>\n",
            y(kb) + 4.0,
            kb / 1024.0,
            w - 20.0,
            y(kb),
            y(kb)
        );
        let t = t_max * i as f64 / 4.0;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{:.0}</text>\n",
            x(t) - 10.0,
            h - bottom + 18.0,
            t
        );
    }
    let names: Vec<&str> = {
        let mut v: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        v.dedup();
        v
    };
    for s in series {
        let c = colours[names.iter().position(|n| *n == s.name).unwrap_or(0) % colours.len()];
        let pts: Vec<String> = s
            .samples
            .iter()
            .map(|(t, kb)| format!("{:.1},{:.1}", x(*t), y(*kb as f64)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            pts.join(" ")
        );
    }
    for (i, n) in names.iter().enumerate() {
        let c = colours[i % colours.len()];
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\">{n}</text>\n",
            w - 120.0,
            50.0 + 15.0 * i as f64
        );
    }
    svg += "</svg>\n";
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_compares_the_last_tenth_with_the_first_after_the_warm_up() {
        let s = Series {
            name: "x".into(),
            pid: 1,
            samples: (0..100)
                .map(|i| (i as f64, if i < 20 { 50 } else { 100 + i as u64 / 10 }))
                .collect(),
            throughout: true,
        };
        let g = growth(&s, 20.0, 1000.0).unwrap();
        // After 20 s: 80 samples, tenths of 8: 102..=102.875 vs 109.2..=109.9.
        assert!((g.early_kb - 102.0).abs() < 0.5, "{g:?}");
        assert!(g.percent > 6.0 && g.percent < 8.0, "{g:?}");
        assert!(
            growth(
                &Series {
                    samples: vec![(30.0, 1)],
                    ..s.clone()
                },
                20.0,
                1000.0
            )
            .is_none()
        );
        // Samples after the end are not judged.
        let g = growth(&s, 20.0, 59.0).unwrap();
        assert!(g.late_kb < 106.0, "{g:?}");
    }

    #[test]
    fn resident_memory_of_this_process_is_read() {
        assert!(rss_kb(std::process::id()).unwrap() > 0);
        assert!(rss_kb(u32::MAX).is_none());
    }
}
