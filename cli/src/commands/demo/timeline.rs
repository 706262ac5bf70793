// SPDX-License-Identifier: MPL-2.0
//! A swarm timeline as SVG: one row per host, one cell per GOP that reached the merger
//! (solid: the primary copy, pale: a redundant copy), the layout epochs as vertical lines
//! (re-deals after a death, handoffs), and the killed host marked.

use gopswarm_agents::merge::MergeSummary;
use std::collections::BTreeSet;
use std::fmt::Write;

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// `epochs`: (epoch, first GOP, hosts) of the layout history; `killed`: (host, GOP at the kill).
pub fn svg(
    title: &str,
    summary: &MergeSummary,
    epochs: &[(u64, u64, Vec<String>)],
    killed: Option<(&str, Option<u64>)>,
) -> String {
    let hosts: BTreeSet<String> = summary
        .chunks
        .iter()
        .map(|c| c.host.split(' ').next().unwrap_or("").to_string())
        .chain(epochs.iter().flat_map(|e| e.2.iter().cloned()))
        .collect();
    let hosts: Vec<String> = hosts.into_iter().collect();
    let (Some(first), Some(last)) = (summary.first_gop, summary.last_gop) else {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><text y=\"20\">{title}: no GOPs</text></svg>"
        );
    };
    let cell = (900.0 / (last - first + 1) as f64).clamp(4.0, 40.0);
    let left = 90.0;
    let top = 50.0;
    let row = 26.0;
    let width = left + cell * (last - first + 1) as f64 + 20.0;
    let height = top + row * hosts.len() as f64 + 60.0;
    let x = |g: u64| left + (g - first) as f64 * cell;
    let y = |h: &str| top + hosts.iter().position(|x| x == h).unwrap_or(0) as f64 * row;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>"
    );
    for (i, h) in hosts.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"10\" y=\"{:.0}\">{h}</text>",
            y(h) + row * 0.65
        );
        let _ = i;
    }
    for c in &summary.chunks {
        let mut parts = c.host.splitn(2, ' ');
        let host = parts.next().unwrap_or("");
        let redundant = parts.next().is_some();
        let color = COLORS[hosts.iter().position(|h| h == host).unwrap_or(0) % COLORS.len()];
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" fill-opacity=\"{}\"><title>GOP {} from {} (epoch {}, {} frames)</title></rect>",
            x(c.gop) + 0.5,
            y(host) + 3.0,
            cell - 1.0,
            row - 6.0,
            if redundant { 0.3 } else { 0.9 },
            c.gop,
            c.host,
            c.epoch,
            c.frames
        );
    }
    for g in &summary.lost_gops {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.0}\" fill=\"red\">lost {g}</text>",
            x(*g),
            top - 6.0
        );
    }
    let bottom = top + row * hosts.len() as f64;
    for (epoch, from, _) in epochs {
        if *from < first || *from > last + 1 {
            continue;
        }
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.0}\" y2=\"{2:.0}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{0:.1}\" y=\"{3:.0}\">e{epoch} @ {from}</text>",
            x(*from),
            top - 4.0,
            bottom + 4.0,
            bottom + 18.0
        );
    }
    if let Some((host, gop)) = killed {
        let gx = gop.map_or(left - 30.0, |g| x(g.clamp(first, last)));
        let _ = write!(
            s,
            "<text x=\"{gx:.1}\" y=\"{:.0}\" fill=\"red\" font-weight=\"bold\">✕ SIGKILL</text>",
            y(host) + row * 0.65
        );
    }
    let _ = write!(
        s,
        "<text x=\"10\" y=\"{:.0}\" fill=\"#555\">GOP index → (solid: primary copy merged, pale: redundant copy; dashed: layout epoch from that GOP)</text></svg>",
        bottom + 40.0
    );
    s
}
