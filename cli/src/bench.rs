// SPDX-License-Identifier: MPL-2.0
//! Benchmarks (not tests): CPU cost of the swarm against a single encoder, and the throughput of
//! the chunk path alone. Each figure is measured side by side in one run.

use anyhow::Result;
use std::path::Path;
use std::time::Duration;

use crate::qa::Clip;
use gopswarm_agents::pipeline;

const TIMEOUT: Duration = Duration::from_secs(1800);

/// User + system CPU seconds of this process so far (all threads).
pub fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we own.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub cpu: f64,
    pub wall: f64,
}

fn measure(f: impl FnOnce() -> Result<()>) -> Result<Cost> {
    let cpu = cpu_seconds();
    let start = std::time::Instant::now();
    f()?;
    Ok(Cost {
        cpu: cpu_seconds() - cpu,
        wall: start.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Clone, Copy)]
pub struct SwarmCost {
    pub decode: Cost,
    pub single: Cost,
    pub swarm: Cost,
    /// The same swarm with every chunk signed as a host signs it and checked as the merger
    /// checks it.
    pub signed: Cost,
    pub redundancy: u32,
}

impl SwarmCost {
    /// Decode once (the local swarm decodes once) plus (1 + r) encodes.
    pub fn ideal_cpu(&self) -> f64 {
        let encode = (self.single.cpu - self.decode.cpu).max(0.0);
        self.decode.cpu + (1.0 + self.redundancy as f64) * encode
    }
    pub fn ratio(&self) -> f64 {
        self.swarm.cpu / self.single.cpu
    }
    pub fn ideal_ratio(&self) -> f64 {
        self.ideal_cpu() / self.single.cpu
    }
    pub fn overhead(&self) -> f64 {
        self.swarm.cpu / self.ideal_cpu() - 1.0
    }
    pub fn signed_ratio(&self) -> f64 {
        self.signed.cpu / self.single.cpu
    }
}

pub fn swarm_cost(
    clip: &Clip,
    out_dir: &Path,
    profile: &str,
    redundancy: u32,
) -> Result<SwarmCost> {
    let src = clip.path.to_string_lossy().to_string();
    let decode = measure(|| {
        let p = pipeline::parse(&format!(
            "filesrc location={src} ! qtdemux ! queue ! decodebin ! video/x-raw ! fakesink"
        ))?;
        pipeline::play(&p, TIMEOUT)?;
        Ok(())
    })?;
    let single = measure(|| {
        crate::qa::single(clip, out_dir, profile)?;
        Ok(())
    })?;
    let r = redundancy.to_string();
    let swarm = measure(|| {
        crate::qa::swarm(clip, out_dir, &[("PROFILE", profile), ("REDUNDANCY", &r)])?;
        Ok(())
    })?;
    let signed = measure(|| signed_swarm(clip, out_dir, profile, &r))?;
    Ok(SwarmCost {
        decode,
        single,
        swarm,
        signed,
        redundancy,
    })
}

/// The local swarm with the daemons' chunk signatures: each partialpay's chunks signed with
/// its branch's ed25519 key (as a host signs), and every chunk checked and stripped before
/// gopmerge (as the merger does). A chunk that does not sign or verify fails the run.
fn signed_swarm(clip: &Clip, out_dir: &Path, profile: &str, redundancy: &str) -> Result<()> {
    use gopswarm_proto::signed::{Principal, Signer, Trust, Verifier, encode_public, generate};
    use gst::prelude::*;
    use std::sync::Arc;
    let prefix = out_dir.join(format!("{}-swarm-signed", clip.name));
    pipeline::prepare_out(&prefix)?;
    let (prefix_s, src) = (
        prefix.to_string_lossy().to_string(),
        clip.path.to_string_lossy().to_string(),
    );
    let name = if clip.has_audio {
        "local-swarm"
    } else {
        "local-swarm-video"
    };
    let words = crate::pipelines::load(name)?.expand(&[
        ("SRC", &src),
        ("OUT", &prefix_s),
        ("PROFILE", profile),
        ("REDUNDANCY", redundancy),
    ])?;
    let p = pipeline::parse_words(&words)?;
    let trust = Trust {
        orchestrator: encode_public(&generate().verifying_key()),
        operators: Default::default(),
        mergers: Default::default(),
    };
    let mut verifier = Verifier::new(&trust).map_err(anyhow::Error::msg)?;
    let failed = Arc::new(std::sync::Mutex::new(None::<String>));
    let replace = |buf: &mut gst::Buffer, bytes: Vec<u8>| {
        let mut out = gst::Buffer::from_mut_slice(bytes);
        {
            let o = out.get_mut().expect("new buffer");
            let flags = gst::BufferCopyFlags::FLAGS
                | gst::BufferCopyFlags::TIMESTAMPS
                | gst::BufferCopyFlags::META;
            let _ = buf.copy_into(o, flags, ..);
        }
        *buf = out;
    };
    let mut pays = 0;
    for e in p.iterate_recurse().into_iter().flatten() {
        let factory = e
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_default();
        if factory == "partialpay" {
            let host: String = e.property("host-id");
            let signer = Signer::new(Principal::Host(host.clone()), generate());
            verifier.set_host_key(&host, signer.public());
            let failed = failed.clone();
            let pad = e.static_pad("src").expect("partialpay src");
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buf)) = info.data.as_mut() {
                    let bytes = buf.map_readable().map(|m| m.to_vec()).unwrap_or_default();
                    match signer.sign_chunk(bytes) {
                        Ok(signed) => replace(buf, signed),
                        Err(e) => *failed.lock().unwrap() = Some(format!("signing: {e}")),
                    }
                }
                gst::PadProbeReturn::Ok
            });
            pays += 1;
        }
    }
    anyhow::ensure!(pays == 3, "{name}: {pays} partialpay elements, 3 expected");
    let verifier = Arc::new(verifier);
    let merge = p
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "gopmerge"))
        .ok_or_else(|| anyhow::anyhow!("{name}: no gopmerge"))?;
    for pad in merge.sink_pads() {
        let (verifier, failed) = (verifier.clone(), failed.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buf)) = info.data.as_mut() {
                let bytes = buf.map_readable().map(|m| m.to_vec()).unwrap_or_default();
                match verifier.open_chunk(bytes) {
                    Ok(plain) => replace(buf, plain),
                    Err(e) => *failed.lock().unwrap() = Some(format!("checking: {e}")),
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    pipeline::play(&p, TIMEOUT)?;
    if let Some(e) = failed.lock().unwrap().take() {
        anyhow::bail!("signed swarm: a chunk failed {e}");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub chunks: u64,
    pub cost: Cost,
}

impl Throughput {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.cost.wall
    }
    pub fn cpu_us_per_chunk(&self) -> f64 {
        self.cost.cpu * 1e6 / self.chunks.max(1) as f64
    }
}

/// `gopselect ! partialpay ! partialdepay ! gopmerge` alone on already-encoded video: three
/// slots over the clip, `repeat` times.
pub fn chunk_path_throughput(clip: &Clip, repeat: u32) -> Result<Throughput> {
    let src = clip.path.to_string_lossy().to_string();
    let bytes = crate::media::video_bytes(&clip.path)? * repeat as u64;
    let mut branches = String::new();
    for i in 0..3 {
        branches.push_str(&format!(
            " t. ! queue ! gopselect slot-index={i} slot-count=3 ! partialpay ! partialdepay \
             ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! m.sink_{i}"
        ));
    }
    let desc = format!(
        "filesrc location={src} ! qtdemux ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! tee name=t {branches} gopmerge name=m ! fakesink"
    );
    let mut chunks = 0;
    let cost = measure(|| {
        for _ in 0..repeat {
            let p = pipeline::parse(&desc)?;
            let out = pipeline::play(&p, TIMEOUT)?;
            chunks += out
                .message("gopswarm-merge-summary")
                .and_then(|s| s.get::<u64>("gops-out").ok())
                .unwrap_or(0);
        }
        Ok(())
    })?;
    Ok(Throughput {
        bytes,
        chunks,
        cost,
    })
}
