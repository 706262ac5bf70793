// SPDX-License-Identifier: MPL-2.0
//! A real swarm for tests: mosquitto started and stopped here, the orchestrator, a live source,
//! encoder hosts and the merger as `gopswarm` processes, and an MQTT observer that records
//! every message on the wire. Everything is on loopback and is killed when dropped.
//!
//! The `gopswarm` binary is the one cargo builds for the `gopswarm` package's integration
//! tests, found in [`build_dir`].

pub use crate::{Mosquitto, free_port, http_get, wait_port};
use crate::{build_dir, kill_and_reap, media_dir};
use gopswarm_proto::keys::{DEFAULT_MERGER, DEFAULT_OPERATOR, KeyDir};
use gopswarm_proto::signed::{Principal, body_unchecked};
use gopswarm_proto::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `gopswarm` binary: `Command::new(BIN)`, or `{BIN}` in a script.
pub const BIN: GopswarmBin = GopswarmBin;

pub const STREAM: &str = "cam1";
pub const PROFILE: &str = "p360";
pub const SPEC: &str = "h264, width=480, height=270, bitrate=800, complexity=2";

/// The path of the `gopswarm` binary; see [`BIN`].
#[derive(Clone, Copy, Debug)]
pub struct GopswarmBin;

impl GopswarmBin {
    pub fn path(self) -> &'static Path {
        static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            let p = build_dir().join(format!("gopswarm{}", std::env::consts::EXE_SUFFIX));
            assert!(
                p.exists(),
                "{} missing: the gopswarm package's integration tests build it \
                 (cargo test -p gopswarm), or cargo build -p gopswarm",
                p.display()
            );
            p
        })
    }
}

impl AsRef<OsStr> for GopswarmBin {
    fn as_ref(&self) -> &OsStr {
        self.path().as_os_str()
    }
}

impl AsRef<Path> for GopswarmBin {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl std::fmt::Display for GopswarmBin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path().display().fmt(f)
    }
}

/// The folder of a swarm test's logs, state and output, under cargo's `target/tmp` (what
/// `CARGO_TARGET_TMPDIR` names for integration tests).
pub fn swarm_dir(name: &str) -> PathBuf {
    let target = build_dir()
        .parent()
        .expect("profile folder in a target folder")
        .to_path_buf();
    target.join("tmp").join(format!("control-{name}"))
}

/// The control-plane tests share the machine's two cores: one swarm at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn clip() -> PathBuf {
    let p = media_dir().join("synthetic-720p25.mp4");
    assert!(
        p.exists(),
        "{} missing: run test-media/fetch.sh",
        p.display()
    );
    p
}

/// The swarm keys of the test under `dir` (`DIR/keys`, made on first use): every process
/// [`Proc::spawn`] starts there finds them through `GOPSWARM_KEYS`.
pub fn swarm_keys(dir: &Path) -> KeyDir {
    let kd = KeyDir::new(dir.join("keys"));
    if !kd.dir.join(gopswarm_proto::keys::TRUST_FILE).exists() {
        KeyDir::init(&kd.dir, DEFAULT_OPERATOR, DEFAULT_MERGER, 0).expect("swarm keys");
    }
    kd
}

/// `gopswarm` run with the keys of the test's swarm under `dir` (an operator's command line).
pub fn gopswarm_in(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("GOPSWARM_KEYS", swarm_keys(dir).dir);
    cmd
}

/// `body` signed for `topic` by `who` of the test's swarm (what a real operator, or a forger
/// holding a stolen key, would publish).
pub fn signed_by(dir: &Path, who: Principal, topic: &str, body: Vec<u8>) -> Vec<u8> {
    let signer = swarm_keys(dir).signer(who).expect("signing key");
    signer.seal(topic, &body)
}

/// A chunk signed with the key of the host it names (a host whose key was stolen).
pub fn signed_chunk(dir: &Path, bytes: Vec<u8>) -> Vec<u8> {
    let (header, _) = gopswarm_chunk::parse_ref(&bytes).expect("a chunk");
    let signer = swarm_keys(dir)
        .signer(Principal::Host(header.host_id))
        .expect("the host's key");
    signer.sign_chunk(bytes).expect("signed chunk")
}

/// `body` signed by the test swarm's operator.
pub fn by_operator(dir: &Path, topic: &str, body: Vec<u8>) -> Vec<u8> {
    signed_by(
        dir,
        Principal::Operator(DEFAULT_OPERATOR.into()),
        topic,
        body,
    )
}

/// A child process killed on drop; its stderr goes to DIR/NAME.log.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(dir: &Path, name: &str, args: &[String]) -> Proc {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let keys = swarm_keys(dir);
        let mut args = args.to_vec();
        // A host that has no key yet enrols with a token of its own, as a new machine would.
        if args.first().is_some_and(|a| a == "host")
            && !args
                .iter()
                .any(|a| a == "--enrol-token" || a == "--insecure")
            && let Some(id) = args
                .iter()
                .position(|a| a == "--id")
                .map(|i| args[i + 1].clone())
            && !keys.key_path(&Principal::Host(id)).exists()
        {
            let token = keys.add_tokens(1).expect("enrolment token").remove(0);
            args.push("--enrol-token".into());
            args.push(token.display().to_string());
        }
        let insecure = args.iter().any(|a| a == "--insecure");
        let mut cmd = Command::new(BIN);
        if !insecure {
            cmd.env("GOPSWARM_KEYS", &keys.dir);
        }
        let child = cmd
            .args(&args)
            .env("RUST_LOG", "info,rumqttc=warn")
            .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait for a clean exit.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills, on drop, every process named by a `*.pid` file in these folders: hosts that a
/// hook or the orchestrator's spawner started outlive a killed orchestrator.
pub struct KillPidFiles(pub Vec<PathBuf>);

impl Drop for KillPidFiles {
    fn drop(&mut self) {
        for dir in &self.0 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid")
                    && let Ok(text) = std::fs::read_to_string(e.path())
                    && let Ok(pid) = text.trim().parse::<i32>()
                    && pid > 1
                {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// One message seen on the wire.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Records every message under the protocol root (re-subscribing after broker restarts).
pub struct Observer {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    client: Client,
}

impl Observer {
    pub fn start(port: u16) -> Observer {
        let mut o = MqttOptions::new(format!("test-observer-{port}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut connection) = Client::new(o, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let c2 = client.clone();
        std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.try_subscribe(format!("{ROOT}/#"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => s2.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    }),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Observer { seen, client }
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .unwrap();
    }

    pub fn decoded(&self) -> Vec<(Instant, Inbound)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| {
                decode_publish(&s.topic, body_unchecked(&s.payload))
                    .ok()
                    .map(|m| (s.at, m))
            })
            .collect()
    }

    /// The newest layout of the test stream.
    pub fn layout(&self) -> Option<Layout> {
        self.decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Layout(l) => Some(l),
                _ => None,
            })
            .max_by_key(|l| l.history.len())
    }

    pub fn layout_epochs(&self) -> usize {
        self.layout().map_or(0, |l| l.history.len())
    }

    /// When each layout epoch was first seen.
    pub fn layout_times(&self) -> Vec<(u64, Instant)> {
        let mut out: Vec<(u64, Instant)> = Vec::new();
        for (at, m) in self.decoded() {
            if let Inbound::Layout(l) = m
                && let Some(e) = l.history.last()
                && !out.iter().any(|(x, _)| *x == e.epoch)
            {
                out.push((e.epoch, at));
            }
        }
        out
    }

    pub fn births(&self) -> Vec<Birth> {
        self.decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Birth(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Hosts the orchestrator has scored: hosts it took in (a birth seen on the wire may not be
    /// handled yet).
    pub fn scored(&self) -> Vec<String> {
        self.decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Score(s) => Some(s.host),
                _ => None,
            })
            .collect()
    }

    pub fn assignments(&self, host: &str) -> Vec<Assignment> {
        self.decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Assignment(a) if a.host == host => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The latest current GOP any host reported for the test stream.
    pub fn current_gop(&self) -> Option<u64> {
        self.decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Heartbeat(h) => h.tasks.iter().filter_map(|t| t.current_gop).max(),
                _ => None,
            })
            .max()
    }

    /// Chunk headers seen on the wire: (time, header).
    pub fn chunks(&self) -> Vec<(Instant, gopswarm_chunk::ChunkHeader)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.topic.contains("/chunks/"))
            .filter_map(|s| {
                gopswarm_chunk::parse_ref(&s.payload)
                    .ok()
                    .map(|(h, _)| (s.at, h))
            })
            .collect()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Observer) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub struct SwarmOptions {
    pub hosts: usize,
    pub redundancy: u32,
    pub slots: u32,
    pub gop_s: f64,
    pub duration_s: f64,
    pub keepalive_s: f64,
    /// Extra arguments per host index.
    pub host_args: Vec<(usize, Vec<String>)>,
    pub latency_gops: u64,
    /// Chunks over TCP to the merger instead of MQTT.
    pub tcp_chunks: bool,
    /// Start the merger this long after the first layout (it misses the first GOPs).
    pub merger_delay_s: f64,
    /// Hosts serve SRT, the merger pulls.
    pub srt_chunks: bool,
    /// Extra orchestrator arguments.
    pub orchestrator_args: Vec<String>,
    /// Extra arguments for the merger.
    pub merger_args: Vec<String>,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            hosts: 3,
            redundancy: 1,
            slots: 3,
            gop_s: 2.0,
            duration_s: 30.0,
            keepalive_s: 1.0,
            host_args: Vec::new(),
            latency_gops: 6,
            tcp_chunks: false,
            merger_delay_s: 0.0,
            srt_chunks: false,
            orchestrator_args: Vec::new(),
            merger_args: Vec::new(),
        }
    }
}

pub struct Swarm {
    pub dir: PathBuf,
    pub broker: Mosquitto,
    pub orchestrator: Proc,
    pub source: Proc,
    pub hosts: Vec<Proc>,
    pub merger: Proc,
    pub obs: Observer,
    pub opts: SwarmOptions,
}

pub fn host_id(i: usize) -> String {
    format!("host-{i}")
}

impl Swarm {
    pub fn orchestrator_args(&self) -> Vec<String> {
        orchestrator_args(&self.dir, &self.broker, self.opts.keepalive_s)
    }

    pub fn start(name: &str, opts: SwarmOptions) -> Swarm {
        let dir = swarm_dir(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let broker = Mosquitto::start(&dir);
        let obs = Observer::start(broker.port);
        let mut args = orchestrator_args(&dir, &broker, opts.keepalive_s);
        args.extend(opts.orchestrator_args.iter().cloned());
        let orchestrator = Proc::spawn(&dir, "orchestrator", &args);
        let source_port = free_port();
        let source = Proc::spawn(
            &dir,
            "source",
            &[
                "source".into(),
                "--clip".into(),
                clip().display().to_string(),
                "--port".into(),
                source_port.to_string(),
                "--duration".into(),
                opts.duration_s.to_string(),
            ],
        );
        assert!(
            wait_port(source_port, Duration::from_secs(10)),
            "source did not listen"
        );
        let mut hosts = Vec::new();
        for i in 0..opts.hosts {
            let mut args = vec![
                "host".into(),
                "--id".into(),
                host_id(i),
                "--broker".into(),
                broker.url(),
                "--keepalive".into(),
                opts.keepalive_s.to_string(),
            ];
            if opts.srt_chunks {
                args.push("--srt-listen".into());
                args.push(format!("srt://127.0.0.1:{}", free_port()));
            }
            for (j, extra) in &opts.host_args {
                if *j == i {
                    args.extend(extra.iter().cloned());
                }
            }
            hosts.push(Proc::spawn(&dir, &host_id(i), &args));
        }
        // Known to the orchestrator, not only born: it scores every host it took (a birth it
        // has not handled yet would leave the host out of the first layout).
        obs.wait_for("hosts scored", Duration::from_secs(20), |o| {
            let scored = o.scored();
            (0..opts.hosts).all(|i| scored.contains(&host_id(i)))
        });
        let tcp_sink = opts
            .tcp_chunks
            .then(|| format!("tcp://127.0.0.1:{}", free_port()));
        let mut merge_args: Vec<String> = tcp_sink
            .iter()
            .flat_map(|a| ["--listen".to_string(), a.clone()])
            .collect();
        merge_args.splice(
            0..0,
            [
                "merge".to_string(),
                "--broker".into(),
                broker.url(),
                "--stream".into(),
                STREAM.into(),
                "--profile".into(),
                PROFILE.into(),
                "--out".into(),
                dir.join("out").display().to_string(),
                "--summary".into(),
                dir.join("summary.json").display().to_string(),
                "--latency-gops".into(),
                opts.latency_gops.to_string(),
                "--idle-timeout".into(),
                "20".into(),
            ],
        );
        if opts.srt_chunks {
            merge_args.push("--pull-srt".into());
        }
        merge_args.extend(opts.merger_args.iter().cloned());
        let delayed = opts.merger_delay_s > 0.0;
        let mut merger = (!delayed).then(|| Proc::spawn(&dir, "merger", &merge_args));
        if let Some(a) = &tcp_sink {
            let port: u16 = a.rsplit(':').next().unwrap().parse().unwrap();
            assert!(
                wait_port(port, Duration::from_secs(10)),
                "merger did not listen"
            );
        }
        let mut add: Vec<String> = tcp_sink
            .iter()
            .flat_map(|a| ["--chunks".to_string(), a.clone()])
            .collect();
        add.splice(
            0..0,
            [
                "stream".to_string(),
                "--broker".into(),
                broker.url(),
                "add".into(),
                "--id".into(),
                STREAM.into(),
                "--source".into(),
                format!("gdp+tcp://127.0.0.1:{source_port}"),
                "--profile".into(),
                format!("{PROFILE}={SPEC}"),
                "--gop".into(),
                opts.gop_s.to_string(),
                "--redundancy".into(),
                opts.redundancy.to_string(),
                "--slots".into(),
                opts.slots.to_string(),
            ],
        );
        if opts.srt_chunks {
            add.push("--chunks".into());
            add.push("srt".into());
        }
        let st = Command::new(BIN)
            .args(&add)
            .env("GOPSWARM_KEYS", &swarm_keys(&dir).dir)
            .status()
            .unwrap();
        assert!(st.success(), "gopswarm stream add failed");
        obs.wait_for("first layout", Duration::from_secs(30), |o| {
            o.layout_epochs() >= 1
        });
        if delayed {
            std::thread::sleep(Duration::from_secs_f64(opts.merger_delay_s));
            merger = Some(Proc::spawn(&dir, "merger", &merge_args));
        }
        let merger = merger.unwrap();
        Swarm {
            dir,
            broker,
            orchestrator,
            source,
            hosts,
            merger,
            obs,
            opts,
        }
    }

    /// Wait for the source to end and the merger to finish; the merger's summary.
    pub fn finish(&mut self) -> serde_json::Value {
        let budget = Duration::from_secs_f64(self.opts.duration_s + 90.0);
        let st = self.merger.wait(budget);
        assert!(st.success(), "merger failed: see {}", self.dir.display());
        let text = std::fs::read_to_string(self.dir.join("summary.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Start host `i` now (after the first layout: a spare), with extra arguments.
    pub fn add_host(&mut self, i: usize, extra: &[String]) {
        let mut args = vec![
            "host".into(),
            "--id".into(),
            host_id(i),
            "--broker".into(),
            self.broker.url(),
            "--keepalive".into(),
            self.opts.keepalive_s.to_string(),
        ];
        args.extend(extra.iter().cloned());
        self.hosts.push(Proc::spawn(&self.dir, &host_id(i), &args));
        self.obs
            .wait_for("the new host scored", Duration::from_secs(20), |o| {
                o.scored().contains(&host_id(i))
            });
    }

    /// Sleep until a GOP boundary has just passed on the hosts, then half a GOP more.
    pub fn wait_mid_gop(&self) {
        let start = self.obs.current_gop();
        self.obs
            .wait_for("a GOP boundary", Duration::from_secs(10), |o| {
                o.current_gop() != start
            });
        std::thread::sleep(Duration::from_secs_f64(self.opts.gop_s / 2.0));
    }

    /// SIGKILL the host process named `victim` half a GOP after a GOP boundary (so it dies
    /// with a GOP half encoded); when it was killed.
    pub fn kill_mid_gop(&mut self, victim: &str) -> Instant {
        self.wait_mid_gop();
        let i = self
            .hosts
            .iter()
            .position(|h| h.name == victim)
            .unwrap_or_else(|| panic!("no host process named {victim}"));
        let killed_at = Instant::now();
        self.hosts[i].signal(libc::SIGKILL);
        killed_at
    }
}

pub fn orchestrator_args(dir: &Path, broker: &Mosquitto, keepalive_s: f64) -> Vec<String> {
    vec![
        "orchestrator".into(),
        "--broker".into(),
        broker.url(),
        "--state".into(),
        dir.join("state.redb").display().to_string(),
        "--keepalive".into(),
        keepalive_s.to_string(),
    ]
}

/// The merged output checked with ffprobe/ffmpeg.
#[derive(Debug)]
pub struct OutputCheck {
    pub frames: usize,
    pub expected: usize,
    /// Frame-to-frame steps that are not one frame duration (gaps or duplicates).
    pub bad_steps: usize,
    pub decode_errors: String,
    /// GOPs (indices) with no frame in the output.
    pub missing_gops: Vec<u64>,
    /// Decode timestamps of the MP4 and the HLS output: None when DTS strictly increase,
    /// PTS >= DTS, no sample lasts zero and the decode delay is constant.
    pub decode_timing: Option<String>,
}

pub fn check_output(dir: &Path, summary: &serde_json::Value, gop_s: f64) -> OutputCheck {
    let mp4 = dir.join("out.mp4");
    let frames = gopswarm::media::video_frames(&mp4).unwrap();
    let decode_errors = gopswarm::media::decode_errors(&mp4).unwrap();
    let decode_timing = gopswarm::qa::decode_timing_problem(&mp4).unwrap();
    let first = summary["first_gop"].as_u64().unwrap();
    let last = summary["last_gop"].as_u64().unwrap();
    let gop_frames = (gop_s * 25.0).round() as usize;
    let frame_ns = 40_000_000i64;
    let bad_steps = frames
        .windows(2)
        .filter(|w| w[1].ts_ns - w[0].ts_ns != frame_ns)
        .count();
    // The MP4 starts at 0 at the first GOP: GOP of a frame from its timestamp.
    let t0 = frames.first().map_or(0, |f| f.ts_ns);
    let gop_ns = (gop_s * 1e9) as i64;
    let present: std::collections::BTreeSet<u64> = frames
        .iter()
        .map(|f| first + ((f.ts_ns - t0) / gop_ns) as u64)
        .collect();
    let missing_gops = (first..=last).filter(|g| !present.contains(g)).collect();
    OutputCheck {
        frames: frames.len(),
        expected: (last - first + 1) as usize * gop_frames,
        bad_steps,
        decode_errors,
        missing_gops,
        decode_timing,
    }
}

/// Assert the merged output is frame-exact: every frame of every GOP from the first to the
/// last, one frame duration apart, decodable, in a decode order players accept, and the merger
/// reported no GOP lost. The check, for further assertions.
pub fn assert_frame_exact(swarm: &Swarm, summary: &serde_json::Value) -> OutputCheck {
    let c = check_output(&swarm.dir, summary, swarm.opts.gop_s);
    assert_eq!(c.frames, c.expected, "{c:?}\n{summary:#}");
    assert_eq!(c.bad_steps, 0, "{c:?}");
    assert!(c.decode_errors.is_empty(), "{c:?}");
    assert_eq!(c.decode_timing, None, "{c:?}");
    assert!(
        summary["lost_gops"].as_array().unwrap().is_empty(),
        "{summary:#}"
    );
    c
}
