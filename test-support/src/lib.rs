// SPDX-License-Identifier: MPL-2.0
//! Helpers shared by gopswarm's tests, written once. What lives where:
//!
//! - the crate root, with only std, GStreamer and the plugin behind it (what the plugin's own
//!   tests may use): [`init`], [`free_port`], [`wait_port`], [`repo_root`], [`media_dir`],
//!   [`build_dir`], [`out_dir`], [`Reaper`] and [`kill_and_reap`] for child processes, [`Mosquitto`], [`Rng`].
//! - [`e2e`] (feature `e2e`, needs the `gopswarm` library): sample clips and
//!   [`e2e::assert_frame_exact`] for the QA report of a merged output.
//! - [`swarm`] (feature `swarm`): a real swarm of `gopswarm` processes (orchestrator, source,
//!   hosts, merger) around a mosquitto, an observer of every MQTT message,
//!   [`swarm::Swarm::kill_mid_gop`] and [`swarm::assert_frame_exact`] for its merged output.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(feature = "e2e")]
pub mod e2e;
#[cfg(feature = "swarm")]
pub mod swarm;

/// GStreamer initialised and the gopswarm plugin registered statically, once per process.
pub fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstgopswarm::plugin_register_static().expect("gopswarm plugin registers");
    });
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something accepts connections on 127.0.0.1:`port` within `timeout`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The repository the tests were built from (where `pipelines/` and `test-media/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The sample media fetched by `test-media/fetch.sh`.
pub fn media_dir() -> PathBuf {
    repo_root().join("test-media/cache")
}

/// The cargo profile folder this test runs from (`target/debug`): test executables are in its
/// `deps/`; the plugin's cdylib and the packages' binaries are in it.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let mut dir = exe
        .parent()
        .expect("test executable in a folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A fresh, empty output folder under `target/e2e/` (`name` may be a relative path).
pub fn out_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kill a child process and reap it, ignoring that it may have ended already.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills what is left of the children when the test ends, however it ends.
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(kill_and_reap);
    }
}

/// mosquitto on a loopback port of its own, started and stopped by the test; its log is
/// DIR/mosquitto.log.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    config: String,
    child: Option<Child>,
}

impl Mosquitto {
    /// Anonymous, plain MQTT, every connection logged.
    pub fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n\
             log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nconnection_messages true\n",
            dir.join("mosquitto.log").display()
        );
        Mosquitto::with_config(dir, port, config)
    }

    /// mosquitto with this configuration (written to DIR/mosquitto.conf), which must listen on
    /// 127.0.0.1:`port`.
    pub fn with_config(dir: &Path, port: u16, config: String) -> Mosquitto {
        let mut m = Mosquitto {
            port,
            dir: dir.to_path_buf(),
            config,
            child: None,
        };
        m.run();
        m
    }

    fn run(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(&conf, &self.config).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto installed (scripts/setup-debian.sh)");
        self.child = Some(child);
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "mosquitto did not listen"
        );
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// How many times a client id connected, from mosquitto's own log.
    pub fn connects(&self, client_id: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains("New client connected") && l.contains(&format!(" as {client_id} "))
            })
            .count()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small deterministic random source (tests print their seed).
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        (Rng(seed), seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The raw HTTP/1.1 response (head and body) to `GET path` on a loopback port, read until the
/// server closes; 5 s read timeout.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// An H.264 access unit with every slice's data, after its first bytes (the slice header's
/// start), overwritten with pseudo-random bytes from `seed` (xorshift; no zero bytes, so no
/// new start codes): start codes, SPS and PPS stay, so it parses but does not decode.
pub fn garbage_slices(frame: &[u8], seed: &mut u64) -> Vec<u8> {
    let mut d = frame.to_vec();
    let starts: Vec<usize> = (0..d.len().saturating_sub(2))
        .filter(|&i| d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1)
        .map(|i| i + 3)
        .collect();
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(d.len(), |&next| next - 4);
        if !matches!(d[s] & 0x1f, 1 | 5) {
            continue;
        }
        for b in d.iter_mut().take(end).skip(s + 4) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *b = (*seed as u8) | 1;
        }
    }
    d
}
