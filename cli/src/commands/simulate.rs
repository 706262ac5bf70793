// SPDX-License-Identifier: MPL-2.0
//! `gopswarm simulate`: the swarm simulator's two policies side by side, a report and plots
//! (predicted vs actual demand, hosts online, overloaded hosts over time) as SVG.

use anyhow::{Context, Result};
use gopswarm_sim::sim::{self, Comparison, SimConfig, SimResult};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct SimulateOptions {
    /// Hosts that exist (provisioned or in the pool)
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    #[arg(long, default_value_t = 300)]
    streams: usize,
    /// Simulated days (the first half is warm-up for the forecasters)
    #[arg(long, default_value_t = 4)]
    days: u32,
    /// Mean demand, encoding slots
    #[arg(long, default_value_t = 1100.0)]
    demand: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Steps (minutes) the proactive policy looks ahead
    #[arg(long, default_value_t = 10)]
    horizon: usize,
    /// Minutes a provisioned host takes to join
    #[arg(long, default_value_t = 5.0)]
    boot_minutes: f64,
    /// No host drops out (only the demand moves)
    #[arg(long)]
    no_churn: bool,
    /// Also run the reactive policy a second time with the streams' first layouts dealt in
    /// another order, to show how far per-stream losses move on where slots land alone
    #[arg(long)]
    placement_noise: bool,
    /// Order in which the streams' first layouts are dealt: 0 by stream id, else shuffled
    /// with this seed (both policies; the twin of --placement-noise uses another)
    #[arg(long, default_value_t = 0)]
    placement_salt: u64,
    /// Output directory: report.md, comparison.json, demand.svg, hosts.svg, overload.svg
    #[arg(long, default_value = "out/sim")]
    out: PathBuf,
}

pub fn run(o: SimulateOptions) -> Result<()> {
    let defaults = gopswarm_sim::sim::SimConfig::default();
    let cfg = gopswarm_sim::sim::SimConfig {
        seed: o.seed,
        hosts: o.hosts,
        streams: o.streams,
        trace: gopswarm_sim::traces::TraceConfig {
            seed: o.seed,
            days: o.days,
            base: o.demand,
            ..defaults.trace.clone()
        },
        warmup_days: o.days as f64 / 2.0,
        horizon: o.horizon,
        boot_minutes: o.boot_minutes,
        churn: !o.no_churn,
        placement_salt: o.placement_salt,
        ..defaults
    };
    let c = compare_and_write(cfg, o.placement_noise, &o.out)?;
    print!("{}", report(&c));
    println!("report, plots and JSON in {}", o.out.display());
    Ok(())
}

/// One line of a chart.
pub struct Line<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart as SVG, x in hours.
pub fn line_chart(title: &str, y_label: &str, lines: &[Line]) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 360.0, 70.0, 20.0, 40.0, 50.0);
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let y1 = ys.fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let (x0, x1) = if x0 < x1 { (x0, x1) } else { (0.0, 1.0) };
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (1.0 - y / y1) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15">{title}</text>"#
    );
    for i in 0..=5 {
        let y = y1 * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{y:.0}</text>"##,
            x2 = w - right,
            yy = py(y),
            tx = left - 6.0,
            ty = py(y) + 4.0
        );
    }
    let hours = (x1 - x0).max(1.0);
    let step = if hours > 48.0 { 12.0 } else { 6.0 };
    let mut x = (x0 / step).ceil() * step;
    while x <= x1 {
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{yb}" stroke="#eee"/><text x="{xx:.1}" y="{ty}" text-anchor="middle">{x:.0} h</text>"##,
            xx = px(x),
            yb = h - bottom,
            ty = h - bottom + 16.0
        );
        x += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{y_label}</text>"#,
        h / 2.0,
        h / 2.0
    );
    for (k, l) in lines.iter().enumerate() {
        let mut d = String::new();
        for (i, (x, y)) in l.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                px(*x),
                py(*y)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.3"/>"#,
            l.color
        );
        let lx = left + 10.0 + 210.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="14" height="3" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            h - 14.0,
            l.color,
            lx + 18.0,
            h - 9.0,
            l.name
        );
    }
    s.push_str("</svg>\n");
    s
}

fn hours(r: &SimResult, step_s: u32, f: impl Fn(&sim::StepRecord) -> f64) -> Vec<(f64, f64)> {
    // One point per 10 minutes keeps the pictures light.
    r.steps
        .iter()
        .step_by(10)
        .map(|s| (s.step as f64 * step_s as f64 / 3600.0, f(s)))
        .collect()
}

/// Markdown report of a comparison.
pub fn report(c: &Comparison) -> String {
    let mut s = String::new();
    let row = |name: &str, r: &SimResult| {
        format!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {:.1}% |\n",
            r.overload_seconds,
            r.host_hours,
            r.lost_gops_overload,
            r.lost_gops_failure,
            r.expected_lost_gops_failure,
            r.handoffs,
            r.peer_swaps,
            r.provisioned,
            r.deprovisioned,
            100.0 * r.signal_mape
        )
    };
    let cfg = &c.config;
    let _ = writeln!(
        s,
        "# Swarm simulation: reactive vs proactive\n\n{} hosts, {} streams, {} days of 1-minute steps \
         (first {} days warm-up, not counted), seed {}, horizon {} steps, boot {} min.\n",
        cfg.hosts,
        cfg.streams,
        cfg.trace.days,
        cfg.warmup_days,
        cfg.seed,
        cfg.horizon,
        cfg.boot_minutes
    );
    s.push_str("| policy | overload-seconds | host-hours | GOPs lost to overload | GOPs lost to host failures | expected from the hosts' hazards | handoffs | peer swaps | provisioned | deprovisioned | demand signal MAPE at horizon |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    s.push_str(&row("reactive", &c.reactive));
    s.push_str(&row("proactive", &c.proactive));
    let _ = writeln!(
        s,
        "\nOverload-seconds cut by {:.1}% with {:+.1}% host-hours; streams where proactive lost more GOPs than reactive: {} ({:.1} GOPs more on them; to overload alone: {}, {:.1} GOPs).\n",
        100.0 * c.overload_cut,
        100.0 * c.extra_host_hours,
        c.streams_worse,
        c.gops_worse,
        c.streams_worse_overload,
        c.gops_worse_overload
    );
    if let Some(n) = &c.placement_noise {
        let _ = writeln!(
            s,
            "Placement noise: the reactive policy run again with its first layouts dealt in \
             another order (salt {:#x}; same demand, same host fates) had {:.0} overload-seconds, \
             {:.1} host-hours, {:.0} GOPs lost to overload and {:.0} to host failures; against the \
             first run it lost more GOPs on {} streams ({:.1} GOPs more on them), to overload on \
             {} ({:.1} GOPs). A policy's per-stream differences below these are where slots \
             happened to land, not the policy.\n",
            n.placement_salt,
            n.overload_seconds,
            n.host_hours,
            n.lost_gops_overload,
            n.lost_gops_failure,
            n.streams_worse,
            n.gops_worse,
            n.streams_worse_overload,
            n.gops_worse_overload
        );
    }
    s.push_str(
        "Overload-seconds by what the demand was doing (a burst nobody announced cannot be \
         forecast):\n\n| policy | unannounced burst | announced event | neither |\n|---|---:|---:|---:|\n",
    );
    for (name, r) in [("reactive", &c.reactive), ("proactive", &c.proactive)] {
        let by = &r.overload_by_cause;
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.0} | {:.0} |",
            by.unannounced_burst, by.announced_event, by.other
        );
    }
    s.push('\n');
    s.push_str("![demand](demand.svg)\n\n![hosts](hosts.svg)\n\n![overload](overload.svg)\n\n");
    s.push_str("## Proactive decisions (first 15 scale-ups with their outcome)\n\n");
    for d in c
        .proactive
        .decisions
        .iter()
        .filter(|d| d.kind == "provision")
        .take(15)
    {
        let _ = writeln!(
            s,
            "- step {} ({:.1} h): {} — {}",
            d.step,
            d.step as f64 / 60.0,
            d.detail,
            d.outcome.as_deref().unwrap_or("(past the end)")
        );
    }
    s
}

pub fn write_outputs(c: &Comparison, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let step_s = c.config.trace.step_s;
    let demand = line_chart(
        "Demand: actual vs predicted 10 steps ahead (proactive), capacity online",
        "encoding slots",
        &[
            Line {
                name: "actual demand",
                color: "#222",
                points: hours(&c.proactive, step_s, |s| s.demand),
            },
            Line {
                name: "forecast (made 10 min before)",
                color: "#e67e22",
                points: hours(&c.proactive, step_s, |s| s.predicted),
            },
            Line {
                name: "capacity, proactive",
                color: "#2980b9",
                points: hours(&c.proactive, step_s, |s| s.capacity),
            },
            Line {
                name: "capacity, reactive",
                color: "#c0392b",
                points: hours(&c.reactive, step_s, |s| s.capacity),
            },
        ],
    );
    let hosts = line_chart(
        "Hosts online (and booting)",
        "hosts",
        &[
            Line {
                name: "reactive",
                color: "#c0392b",
                points: hours(&c.reactive, step_s, |s| {
                    (s.hosts_online + s.hosts_booting) as f64
                }),
            },
            Line {
                name: "proactive",
                color: "#2980b9",
                points: hours(&c.proactive, step_s, |s| {
                    (s.hosts_online + s.hosts_booting) as f64
                }),
            },
        ],
    );
    let overload = line_chart(
        "Overloaded hosts (load above capacity)",
        "hosts",
        &[
            Line {
                name: "reactive",
                color: "#c0392b",
                points: hours(&c.reactive, step_s, |s| s.overloaded_hosts as f64),
            },
            Line {
                name: "proactive",
                color: "#2980b9",
                points: hours(&c.proactive, step_s, |s| s.overloaded_hosts as f64),
            },
        ],
    );
    for (name, svg) in [
        ("demand.svg", demand),
        ("hosts.svg", hosts),
        ("overload.svg", overload),
    ] {
        std::fs::write(out.join(name), svg)?;
    }
    std::fs::write(out.join("report.md"), report(c))?;
    let mut csv = String::from(
        "policy,step,demand,predicted,capacity,hosts_online,hosts_booting,overloaded_hosts,lost_gops_overload,lost_gops_failure\n",
    );
    for (name, r) in [("reactive", &c.reactive), ("proactive", &c.proactive)] {
        for x in &r.steps {
            let _ = writeln!(
                csv,
                "{name},{},{:.2},{:.2},{:.1},{},{},{},{:.2},{:.2}",
                x.step,
                x.demand,
                x.predicted,
                x.capacity,
                x.hosts_online,
                x.hosts_booting,
                x.overloaded_hosts,
                x.lost_gops_overload,
                x.lost_gops_failure
            );
        }
    }
    std::fs::write(out.join("steps.csv"), csv)?;
    let mut json = serde_json::to_value(c)?;
    for p in ["reactive", "proactive"] {
        json[p]["steps"] = serde_json::Value::Null;
    }
    std::fs::write(
        out.join("comparison.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

/// Run both policies on `cfg` (progress on stderr) and write the report, plots and JSON to `out`.
pub fn compare_and_write(cfg: SimConfig, placement_noise: bool, out: &Path) -> Result<Comparison> {
    let started = std::time::Instant::now();
    let c = sim::compare(&cfg, placement_noise, |p, step, steps| {
        eprintln!(
            "[{:>6.1}s] {:?}: step {step}/{steps} ({:.0}%)",
            started.elapsed().as_secs_f64(),
            p,
            100.0 * step as f64 / steps as f64
        );
    });
    write_outputs(&c, out)?;
    Ok(c)
}
