// SPDX-License-Identifier: MPL-2.0
//! The GOP grid and slot assignment shared by every gopswarm element.
//!
//! GOP `k` covers `[origin + k * gop, origin + (k + 1) * gop)` on the common timeline. The
//! timeline is the stream running time, optionally shifted by the pipeline's base time so that
//! hosts sharing a clock (NTP/PTP, wall-clock epoch) compute the same `k` for the same frame.

use gst::glib;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[enum_type(name = "GstGopSwarmTimeline")]
pub enum Timeline {
    /// The stream's running time: every branch of one pipeline and every host fed the same file
    /// agree on it.
    #[default]
    #[enum_value(name = "Stream running time", nick = "running-time")]
    RunningTime,
    /// Running time plus the element's base time, i.e. the pipeline clock: hosts whose pipelines
    /// use a common wall clock agree on it.
    #[enum_value(
        name = "Pipeline clock time (running time + base time)",
        nick = "clock-time"
    )]
    ClockTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub gop_duration: gst::ClockTime,
    pub origin: gst::ClockTime,
}

impl Grid {
    /// GOP index of a timeline time (signed nanoseconds), `None` before the origin. Computed in
    /// 128 bits: an origin beyond `i64::MAX` is simply never reached.
    pub fn index_of(&self, t: i64) -> Option<u64> {
        let rel = i128::from(t) - i128::from(self.origin.nseconds());
        let rel = u64::try_from(rel).ok()?;
        Some(rel / self.gop_duration.nseconds().max(1))
    }

    /// Start of GOP `k` on the timeline; saturates at `ClockTime::MAX` (a GOP no frame reaches).
    pub fn start_of(&self, k: u64) -> gst::ClockTime {
        self.gop_duration
            .saturating_mul(k)
            .saturating_add(self.origin)
    }
}

/// Whether a slot encodes a GOP as its primary owner or as a redundant copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Redundant,
}

/// Which GOPs one instance keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slots {
    /// Primary for `k mod count == index`; with redundancy `r`, also a copy of the `r` slots
    /// before it (`k mod count == index - j` for `j in 1..=r`), so every GOP has `1 + r` encoders.
    /// With `copy_only` the same GOPs are all kept as redundant copies: a backup encoder that
    /// owns no GOP, so losing it loses nothing.
    Modulo {
        index: u32,
        count: u32,
        redundancy: u32,
        copy_only: bool,
    },
    /// An explicit set of GOP indices, all primary.
    Explicit(GopSet),
}

impl Slots {
    pub fn role(&self, k: u64) -> Option<Role> {
        match self {
            Slots::Modulo {
                index,
                count,
                redundancy,
                copy_only,
            } => {
                let count = (*count).max(1) as u64;
                let owner = k % count;
                let index = *index as u64 % count;
                if owner == index {
                    return Some(if *copy_only {
                        Role::Redundant
                    } else {
                        Role::Primary
                    });
                }
                // Distance from the owning slot forward to us.
                let dist = (index + count - owner) % count;
                (dist <= *redundancy as u64).then_some(Role::Redundant)
            }
            Slots::Explicit(set) => set.contains(k).then_some(Role::Primary),
        }
    }
}

/// A set of GOP indices written as `"0-9,12,15-"` (ranges inclusive, a trailing `-` is open).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GopSet {
    ranges: Vec<(u64, u64)>,
}

impl GopSet {
    pub fn contains(&self, k: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= k && k <= b)
    }
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    pub fn from_indices(indices: &BTreeSet<u64>) -> Self {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &k in indices {
            match ranges.last_mut() {
                Some((_, b)) if *b + 1 == k => *b = k,
                _ => ranges.push((k, k)),
            }
        }
        GopSet { ranges }
    }
}

impl FromStr for GopSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parse = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("'{part}' is not a GOP index or range"))
            };
            let range = match part.split_once('-') {
                None => {
                    let k = parse(part)?;
                    (k, k)
                }
                Some((a, "")) => (parse(a)?, u64::MAX),
                Some((a, b)) => (parse(a)?, parse(b)?),
            };
            if range.0 > range.1 {
                return Err(format!("range '{part}' is empty"));
            }
            ranges.push(range);
        }
        Ok(GopSet { ranges })
    }
}

impl fmt::Display for GopSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|&(a, b)| match (a, b) {
                (a, b) if a == b => a.to_string(),
                (a, u64::MAX) => format!("{a}-"),
                (a, b) => format!("{a}-{b}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_index() {
        let g = Grid {
            gop_duration: gst::ClockTime::from_nseconds(2_000),
            origin: gst::ClockTime::from_nseconds(1_000),
        };
        assert_eq!(g.index_of(-5), None);
        assert_eq!(g.index_of(999), None);
        assert_eq!(g.index_of(1_000), Some(0));
        assert_eq!(g.index_of(2_999), Some(0));
        assert_eq!(g.index_of(3_000), Some(1));
        assert_eq!(g.start_of(3), gst::ClockTime::from_nseconds(7_000));
    }

    #[test]
    fn extreme_grids_do_not_overflow() {
        // An origin past every representable running time: no frame is on the grid.
        let far = Grid {
            gop_duration: gst::ClockTime::from_seconds(2),
            origin: gst::ClockTime::MAX,
        };
        assert_eq!(far.index_of(i64::MAX), None);
        assert_eq!(far.start_of(0), gst::ClockTime::MAX);
        assert_eq!(far.start_of(u64::MAX), gst::ClockTime::MAX);
        // The longest GOP: everything after the origin is GOP 0.
        let long = Grid {
            gop_duration: gst::ClockTime::MAX,
            origin: gst::ClockTime::ZERO,
        };
        assert_eq!(long.index_of(i64::MAX), Some(0));
        assert_eq!(long.index_of(i64::MIN), None);
        assert_eq!(long.start_of(1), gst::ClockTime::MAX);
    }

    #[test]
    fn modulo_roles_cover_every_gop_one_plus_r_times() {
        for count in 1..5u32 {
            for r in 0..count {
                for k in 0..40u64 {
                    let roles: Vec<Role> = (0..count)
                        .filter_map(|index| {
                            Slots::Modulo {
                                index,
                                count,
                                redundancy: r,
                                copy_only: false,
                            }
                            .role(k)
                        })
                        .collect();
                    assert_eq!(roles.len() as u32, 1 + r, "count {count} r {r} k {k}");
                    assert_eq!(roles.iter().filter(|&&x| x == Role::Primary).count(), 1);
                }
            }
        }
    }

    #[test]
    fn copy_only_keeps_the_same_gops_and_owns_none() {
        for count in 1..5u32 {
            for r in 0..count {
                for index in 0..count {
                    let slots = |copy_only| Slots::Modulo {
                        index,
                        count,
                        redundancy: r,
                        copy_only,
                    };
                    for k in 0..40u64 {
                        let primary = slots(false).role(k);
                        let copy = slots(true).role(k);
                        assert_eq!(primary.is_some(), copy.is_some(), "count {count} k {k}");
                        assert_ne!(copy, Some(Role::Primary));
                    }
                }
            }
        }
        // A backup of slot 1 of 3 keeps GOPs 1, 4, 7 as copies and nothing else.
        let backup = Slots::Modulo {
            index: 1,
            count: 3,
            redundancy: 0,
            copy_only: true,
        };
        let kept: Vec<u64> = (0..9).filter(|&k| backup.role(k).is_some()).collect();
        assert_eq!(kept, [1, 4, 7]);
    }

    #[test]
    fn gop_set_parse_and_print() {
        let s: GopSet = "0-3, 7,10-".parse().unwrap();
        assert!(s.contains(0) && s.contains(3) && s.contains(7) && s.contains(99));
        assert!(!s.contains(4) && !s.contains(9));
        assert_eq!(s.to_string(), "0-3,7,10-");
        assert!("5-2".parse::<GopSet>().is_err());
        assert!("x".parse::<GopSet>().is_err());
        assert!("".parse::<GopSet>().unwrap().is_empty());
    }
}
