// SPDX-License-Identifier: MPL-2.0
//! Decode timestamps for the merged stream.
//!
//! Every host's encoder stamps DTS on its own frames only. At a host's next GOP (k + n after k)
//! x264 takes the DTS of the first frames from the presentation times of the frames it saw last,
//! so the first packets of GOP k+n land on or before the last DTS of GOP k+n-1 that another host
//! encoded. Players drop frames there (MSE requires increasing DTS; MP4 gets zero-length
//! samples). The merger is the one place that sees both sides of every join, so it stamps DTS
//! itself, the way one encoder with a constant reorder depth `d` would: the frame decoded `i`-th
//! gets the presentation time of the frame `d` places earlier in presentation order, across
//! joins. Decode delay is then `d` frames everywhere, and DTS strictly increase.

use std::collections::VecDeque;

/// Deepest reordering the merger follows; no encoder we drive comes close (x264/x265: 2).
pub const MAX_REORDER: usize = 16;

/// What stamping one GOP did besides the timestamps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stamped {
    /// Decode timestamps (timeline ns), in the order the frames were given.
    pub dts: Vec<i64>,
    /// The reorder depth went up at this GOP: (from, to) frames.
    pub raised: Option<(usize, usize)>,
    /// Frames whose natural DTS had to be pushed later to keep DTS increasing: where the depth
    /// went up, or where a GOP's frames overlap the previous GOP's in presentation time.
    pub pushed: usize,
}

#[derive(Debug, Default)]
pub struct DtsStamper {
    /// Reorder depth in force, in frames; set by the first GOP and never lowered.
    depth: Option<usize>,
    /// Presentation times of the last frames out, ascending (at most `MAX_REORDER`).
    tail: VecDeque<i64>,
    last_gop: Option<u64>,
    last_dts: Option<i64>,
    frame_ns: Option<i64>,
}

impl DtsStamper {
    pub fn depth(&self) -> Option<usize> {
        self.depth
    }

    /// Stamp GOP `gop`, whose frames have presentation times `pts` (timeline ns) in decode
    /// order. `declared` is the producer's declared reorder depth; `frame_hint` a frame
    /// duration for GOPs too short to show one.
    pub fn stamp(
        &mut self,
        gop: u64,
        pts: &[i64],
        declared: Option<u8>,
        frame_hint: Option<i64>,
    ) -> Stamped {
        if pts.is_empty() {
            return Stamped::default();
        }
        let mut order: Vec<usize> = (0..pts.len()).collect();
        order.sort_by_key(|&i| (pts[i], i));
        let sorted: Vec<i64> = order.iter().map(|&i| pts[i]).collect();
        // The depth this GOP needs: a frame decoded i-th but shown rank-th waits i - rank frames.
        let mut rank = vec![0usize; pts.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let observed = (0..pts.len())
            .map(|i| i.saturating_sub(rank[i]))
            .max()
            .unwrap_or(0);
        let want = observed
            .max(declared.map_or(0, usize::from))
            .min(MAX_REORDER);
        let mut raised = None;
        let depth = match self.depth {
            None => want,
            Some(d) if want > d => {
                raised = Some((d, want));
                want
            }
            Some(d) => d,
        };
        self.depth = Some(depth);

        if let Some(f) = sorted
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .filter(|&d| d > 0)
            .min()
            .or(frame_hint.filter(|&f| f > 0))
        {
            self.frame_ns = Some(f);
        }
        let frame = self.frame_ns.unwrap_or(0);
        // The frames shown just before this GOP: the real ones when the previous GOP was the one
        // before it, otherwise (start, or after a lost GOP) where one encoder would have put them.
        let contiguous = gop > 0 && self.last_gop == Some(gop - 1) && self.tail.len() >= depth;
        let before: Vec<i64> = if contiguous {
            self.tail
                .iter()
                .skip(self.tail.len() - depth)
                .copied()
                .collect()
        } else {
            (0..depth)
                .map(|j| sorted[0].saturating_sub(((depth - j) as i64).saturating_mul(frame)))
                .collect()
        };
        // Small enough that a pushed frame never reaches the next frame's natural DTS, so the
        // frames after a push are stamped as usual again.
        let step = (frame / (depth as i64 + 2)).max(1);
        let mut out = Stamped {
            raised,
            ..Default::default()
        };
        for i in 0..pts.len() {
            let mut dts = if i < depth {
                before[i]
            } else {
                sorted[i - depth]
            };
            if let Some(last) = self.last_dts
                && dts <= last
            {
                dts = last.saturating_add(step);
                out.pushed += 1;
            }
            self.last_dts = Some(dts);
            out.dts.push(dts);
        }
        self.tail.extend(sorted);
        while self.tail.len() > MAX_REORDER {
            self.tail.pop_front();
        }
        self.last_gop = Some(gop);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 40_000_000;

    /// x264's B-pyramid order for one closed GOP of `n` frames starting at frame `first`:
    /// I0 P3 B2 b1 P6 B5 b4 ... (presentation indices in decode order).
    fn pyramid_gop(first: i64, n: i64) -> Vec<i64> {
        let mut order = vec![first];
        let mut i = 1;
        while i < n {
            let p = (i + 2).min(n - 1);
            order.push(first + p);
            for b in (i..p).rev() {
                order.push(first + b);
            }
            i = p + 1;
        }
        order.into_iter().map(|f| f * F).collect()
    }

    fn assert_valid(pts: &[i64], dts: &[i64], delay: i64) {
        for (i, (&p, &d)) in pts.iter().zip(dts).enumerate() {
            assert!(p >= d, "frame {i}: pts {p} before dts {d}");
            if i > 0 {
                assert!(
                    d > dts[i - 1],
                    "frame {i}: dts {d} not after {}",
                    dts[i - 1]
                );
            }
        }
        // Keyframes (first of each GOP here) show the rendition's decode delay.
        assert_eq!(pts[0] - dts[0], delay);
    }

    #[test]
    fn gops_joined_from_any_hosts_get_one_encoders_decode_timestamps() {
        let mut s = DtsStamper::default();
        let (mut all_pts, mut all_dts) = (Vec::new(), Vec::new());
        for gop in 0..6u64 {
            let pts = pyramid_gop(gop as i64 * 50, 50);
            let st = s.stamp(gop, &pts, Some(2), None);
            assert_eq!(st.raised, None);
            assert_eq!(st.pushed, 0);
            assert_eq!(pts[0] - st.dts[0], 2 * F, "GOP {gop}: decode delay");
            all_pts.extend(pts);
            all_dts.extend(st.dts);
        }
        assert_valid(&all_pts, &all_dts, 2 * F);
        // The DTS of a continuous encoder: frame n decoded at (n - 2) frames.
        let expected: Vec<i64> = (0..300).map(|n| (n - 2) * F).collect();
        assert_eq!(all_dts, expected);
    }

    #[test]
    fn an_undeclared_depth_is_learnt_from_the_first_gop() {
        let mut s = DtsStamper::default();
        let st = s.stamp(0, &pyramid_gop(0, 10), None, None);
        assert_eq!(s.depth(), Some(2));
        assert_eq!(st.dts[0], -2 * F);
    }

    #[test]
    fn a_lost_gop_restarts_from_where_one_encoder_would_be() {
        let mut s = DtsStamper::default();
        s.stamp(0, &pyramid_gop(0, 50), Some(2), None);
        let pts = pyramid_gop(100, 50);
        let st = s.stamp(2, &pts, Some(2), None);
        assert_eq!(st.dts[0], pts[0] - 2 * F);
        assert_eq!(st.pushed, 0);
    }

    #[test]
    fn a_frame_rate_change_at_a_join_keeps_decode_timestamps_increasing() {
        // 50 fps GOP then a 25 fps GOP: extrapolating the new frame duration backwards would
        // land before the previous GOP's last DTS; the real previous frames do not.
        let mut s = DtsStamper::default();
        let half: Vec<i64> = pyramid_gop(0, 100).iter().map(|p| p / 2).collect();
        let a = s.stamp(0, &half, Some(2), None);
        let b = s.stamp(1, &pyramid_gop(50, 50), Some(2), None);
        assert!(b.dts[0] > *a.dts.last().unwrap());
        assert_eq!(b.pushed, 0);
        let pts: Vec<i64> = half.iter().chain(&pyramid_gop(50, 50)).copied().collect();
        let dts: Vec<i64> = a.dts.iter().chain(&b.dts).copied().collect();
        for i in 1..dts.len() {
            assert!(dts[i] > dts[i - 1] && pts[i] >= dts[i], "frame {i}");
        }
    }

    #[test]
    fn a_deeper_gop_raises_the_depth_once_and_stays_increasing() {
        let mut s = DtsStamper::default();
        let flat: Vec<i64> = (0..10).map(|f| f * F).collect();
        let a = s.stamp(0, &flat, Some(0), None);
        assert_eq!(a.dts, flat);
        let pts = pyramid_gop(10, 10);
        let b = s.stamp(1, &pts, Some(2), None);
        assert_eq!(b.raised, Some((0, 2)));
        assert!(b.pushed > 0);
        let dts: Vec<i64> = a.dts.iter().chain(&b.dts).copied().collect();
        let all: Vec<i64> = flat.iter().chain(&pts).copied().collect();
        for i in 1..dts.len() {
            assert!(dts[i] > dts[i - 1] && all[i] >= dts[i], "frame {i}");
        }
        // A shallower declaration later never lowers the depth.
        let c = s.stamp(2, &pyramid_gop(20, 10), Some(0), None);
        assert_eq!(c.raised, None);
        assert_eq!(s.depth(), Some(2));
        assert_eq!(c.dts[0], 20 * F - 2 * F);
    }

    #[test]
    fn an_overlapping_join_without_b_frames_recovers_at_once() {
        // GOP 1 repeats GOP 0's last presentation time: one DTS is pushed, the rest are not.
        let mut s = DtsStamper::default();
        s.stamp(0, &[0, F, 2 * F], Some(0), None);
        let b = s.stamp(1, &[2 * F, 3 * F, 4 * F], Some(0), None);
        assert_eq!(b.pushed, 1);
        assert_eq!(b.dts, vec![2 * F + F / 2, 3 * F, 4 * F]);
        let c = s.stamp(2, &[5 * F, 6 * F], Some(0), None);
        assert_eq!((c.pushed, c.dts), (0, vec![5 * F, 6 * F]));
    }

    #[test]
    fn absurd_timestamps_do_not_overflow() {
        let mut s = DtsStamper::default();
        let st = s.stamp(0, &[i64::MIN + 5, i64::MIN + 6], Some(16), Some(i64::MAX));
        assert_eq!(st.dts.len(), 2);
        let st = s.stamp(1, &[i64::MAX - 1, i64::MAX], Some(16), None);
        assert!(st.dts[1] > st.dts[0]);
    }

    #[test]
    fn without_b_frames_decode_time_is_presentation_time() {
        let mut s = DtsStamper::default();
        let pts: Vec<i64> = (0..5).map(|f| f * F).collect();
        assert_eq!(s.stamp(0, &pts, Some(0), None).dts, pts);
        let one = [5 * F];
        assert_eq!(s.stamp(1, &one, Some(0), Some(F)).dts, one);
    }
}
