// SPDX-License-Identifier: MPL-2.0
//! Running a bound pipeline description to its end under a watchdog, with `gopswarm launch`
//! in this process or with the stock `gst-launch-1.0 -e`.

use super::{Invocation, shell_line};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// After the watchdog's SIGINT (EOS), how long the launcher may take to finish its files.
const KILL_AFTER: Duration = Duration::from_secs(10);
/// How long gst-launch-1.0 may keep running after its first "ERROR:" line.
const ERROR_GRACE: Duration = Duration::from_secs(3);
/// How often the runner looks at the stock launcher.
const POLL: Duration = Duration::from_millis(200);

/// Exit status on watchdog expiry after the launcher stopped on EOS (as timeout(1)).
pub const TIMED_OUT: i32 = 124;
/// Exit status when the launcher did not stop within [`KILL_AFTER`] of the watchdog's EOS.
pub const KILLED: i32 = 128 + libc::SIGKILL;

/// Which program runs the description.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// `gopswarm launch` in this process: the description language and EOS handling of
    /// gst-launch-1.0 -e, without gst-launch-1.0 1.22's start-up race that can leave a finished
    /// pipeline waiting forever.
    #[default]
    Gopswarm,
    /// The stock `gst-launch-1.0 -e`, which needs the plugin on GST_PLUGIN_PATH.
    #[value(name = "gst-launch-1.0")]
    GstLaunch,
}

impl Launcher {
    fn label(self) -> &'static str {
        match self {
            Launcher::Gopswarm => "gopswarm launch",
            Launcher::GstLaunch => "gst-launch-1.0",
        }
    }
}

/// Prints the runner's own lines on stderr, prefixed with its name.
pub struct Reporter {
    pub prefix: String,
}

impl Reporter {
    pub fn say(&self, msg: &str) {
        let _ = writeln!(std::io::stderr().lock(), "[{}] {msg}", self.prefix);
    }
    pub fn error(&self, msg: &str) {
        self.say(&format!("error: {msg}"));
    }
}

/// Bare lowercase words of a description name element factories (properties have '=', pad
/// references '.', caps '/'): those GStreamer does not know.
fn unknown_elements(words: &[String]) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    for w in words {
        let factory_like = w.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && w.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '+' | '-')
            });
        if factory_like && !unknown.contains(w) && gst::ElementFactory::find(w).is_none() {
            unknown.push(w.clone());
        }
    }
    unknown
}

/// Make sure GStreamer can build the elements: in-process the gopswarm elements come from this
/// build when no plugin is on GST_PLUGIN_PATH; gst-launch-1.0 needs the plugin file. Err is the
/// usage error to report.
fn check_plugin(
    name: &str,
    inv: &Invocation,
    launcher: Launcher,
    r: &Reporter,
) -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer does not initialise: {e}"))?;
    if gst::Registry::get().find_plugin("gopswarm").is_some() {
        return Ok(());
    }
    if launcher == Launcher::Gopswarm {
        return gstgopswarm::plugin_register_static()
            .map_err(|e| format!("the gopswarm elements do not register: {e}"));
    }
    let unknown = unknown_elements(&inv.words);
    if !unknown.is_empty() {
        return Err(format!(
            "pipeline '{name}' uses element(s) GStreamer does not know: {}\n       \
             gst-launch-1.0 finds no gopswarm plugin: put the folder holding libgstgopswarm.so \
             on GST_PLUGIN_PATH\n       (pipelines/run does that after 'cargo build --workspace')",
            unknown.join(" ")
        ));
    }
    r.say(&format!(
        "warning: no gopswarm plugin on GST_PLUGIN_PATH; running '{name}' with stock elements only"
    ));
    Ok(())
}

/// Run `inv` to its end and return the exit status: the launcher's (0 after EOS, 1 on error),
/// 2 for usage errors, [`TIMED_OUT`] or [`KILLED`] when the watchdog fired.
pub fn run(name: &str, inv: &Invocation, launcher: Launcher, r: &Reporter) -> i32 {
    if let Err(msg) = check_plugin(name, inv, launcher, r) {
        r.error(&msg);
        return 2;
    }
    let timeout = match inv.timeout {
        Some(_) if inv.timeout_text.ends_with(|c: char| c.is_ascii_digit()) => {
            format!("{}s", inv.timeout_text)
        }
        Some(_) => inv.timeout_text.clone(),
        None => "none".to_string(),
    };
    r.say(&format!(
        "running '{name}' (timeout {timeout}) with {}: {}",
        launcher.label(),
        shell_line(&inv.words)
    ));
    let label = launcher.label();
    let rc = match launcher {
        Launcher::Gopswarm => in_process(name, inv, &timeout, r),
        Launcher::GstLaunch => match stock(inv, r) {
            Ok(rc) => rc,
            Err(Outcome::Usage(msg)) => {
                r.error(&msg);
                return 2;
            }
            Err(Outcome::Hung) => {
                r.error(&format!(
                    "'{name}' failed: {label} reported an error and then did not exit within \
                     {}s; killed",
                    ERROR_GRACE.as_secs()
                ));
                return 1;
            }
        },
    };
    match rc {
        0 => r.say(&format!("'{name}' finished")),
        TIMED_OUT => r.error(&format!(
            "'{name}' timed out after {timeout} (watchdog TIMEOUT={}); stopped with EOS",
            inv.timeout_text
        )),
        KILLED => r.error(&format!(
            "'{name}' timed out after {timeout} and did not stop on EOS within {}s; killed",
            KILL_AFTER.as_secs()
        )),
        rc => r.error(&format!("'{name}' failed: {label} exited with status {rc}")),
    }
    rc
}

/// `gopswarm launch` in this process; a watchdog thread sends EOS at TIMEOUT and ends the
/// process [`KILL_AFTER`] later if the pipeline is still running.
fn in_process(name: &str, inv: &Invocation, timeout: &str, r: &Reporter) -> i32 {
    let fired = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = inv.timeout.map(|limit| {
        let fired = fired.clone();
        let kill_msg = format!(
            "[{}] error: '{name}' timed out after {timeout} and did not stop on EOS within {}s; \
             killed",
            r.prefix,
            KILL_AFTER.as_secs()
        );
        std::thread::spawn(move || {
            if finished.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            fired.store(true, Ordering::SeqCst);
            crate::launch::interrupt();
            if finished.recv_timeout(KILL_AFTER) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("{kill_msg}");
                // SAFETY: ends the process at once, as SIGKILL would: the pipeline is stuck and
                // nothing in this process may wait for it.
                unsafe { libc::_exit(KILLED) };
            }
        })
    });
    let status = crate::launch::run(&inv.words).unwrap_or_else(|e| {
        r.error(&format!("{e:#}"));
        1
    });
    drop(done);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    if fired.load(Ordering::SeqCst) {
        TIMED_OUT
    } else {
        status
    }
}

enum Outcome {
    Usage(String),
    /// The launcher printed an error and then did not exit.
    Hung,
}

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the launcher's own process group (it leads it).
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The stock `gst-launch-1.0 -e` in its own process group: Ctrl-C and SIGTERM reach it as
/// SIGINT (EOS, files finished); at TIMEOUT it gets SIGINT, [`KILL_AFTER`] later SIGKILL. Its
/// stderr passes through a monitor: gst-launch-1.0 1.22 sometimes hangs after reporting an
/// error (its main loop waiting forever after "pipeline doesn't want to preroll"), so it is
/// killed [`ERROR_GRACE`] after its first "ERROR:" line. The run has failed anyway.
fn stock(inv: &Invocation, r: &Reporter) -> Result<i32, Outcome> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = Command::new("gst-launch-1.0")
        .arg("-e")
        .args(&inv.words)
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Outcome::Usage(format!(
                "cannot start gst-launch-1.0 ({e}); run scripts/setup-debian.sh"
            ))
        })?;
    let pid = child.id();
    let error_seen = Arc::new(AtomicBool::new(false));
    let monitor = {
        let stderr = child.stderr.take().expect("stderr is piped");
        let error_seen = error_seen.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&line);
                let _ = err.flush();
                if line.starts_with(b"ERROR:") {
                    error_seen.store(true, Ordering::SeqCst);
                }
                line.clear();
            }
        })
    };
    INTERRUPTS.store(0, Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
    let started = Instant::now();
    let mut forwarded = 0;
    let mut error_since: Option<Instant> = None;
    let mut eos_sent: Option<Instant> = None;
    let mut outcome = Ok(());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                r.error(&format!("cannot wait for gst-launch-1.0: {e}"));
                break None;
            }
        }
        let now = Instant::now();
        let interrupts = INTERRUPTS.load(Ordering::SeqCst);
        if interrupts != forwarded {
            forwarded = interrupts;
            signal_group(pid, libc::SIGINT);
        }
        if error_seen.load(Ordering::SeqCst) {
            let since = *error_since.get_or_insert(now);
            if now - since >= ERROR_GRACE {
                signal_group(pid, libc::SIGKILL);
                outcome = Err(Outcome::Hung);
                break child.wait().ok();
            }
        }
        match (inv.timeout, eos_sent) {
            (Some(limit), None) if now - started >= limit => {
                signal_group(pid, libc::SIGINT);
                eos_sent = Some(now);
            }
            (_, Some(sent)) if now - sent >= KILL_AFTER => {
                signal_group(pid, libc::SIGKILL);
                let _ = child.wait();
                let _ = monitor.join();
                return Ok(KILLED);
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    };
    let _ = monitor.join();
    outcome?;
    if eos_sent.is_some() {
        return Ok(TIMED_OUT);
    }
    Ok(match status {
        Some(s) => s.code().or(s.signal().map(|sig| 128 + sig)).unwrap_or(1),
        None => 1,
    })
}
