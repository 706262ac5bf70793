// SPDX-License-Identifier: MPL-2.0
//! What every daemon does around its work: log lines, the signals that stop it, its runtime.

/// A number for progress lines and reports, or `-` when there is none yet.
pub fn number_or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields with `message`, target), for log
    /// shippers.
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The environment variable that carries the log format to the processes this one starts
/// (the demo's and the orchestrator's hosts, mergers, sources).
pub const LOG_FORMAT_ENV: &str = "GOPSWARM_LOG_FORMAT";

/// Chooses the log format for [`init_logging`]; call it once at start-up, before any thread
/// is spawned (it exports the choice to child processes through [`LOG_FORMAT_ENV`]).
pub fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    let name = match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    // SAFETY: called at start-up, before any thread is spawned.
    unsafe { std::env::set_var(LOG_FORMAT_ENV, name) };
}

/// Drops the events rumqttd (the embedded broker) logs at ERROR for a clean disconnect:
/// `router-drop` whenever its router closes a connection (every client that disconnects, every
/// clean shutdown), `no-connection id N is already gone` when a client's DISCONNECT and its
/// socket closing both reach the router (rumqttd's own comment calls that normal), and, over
/// TLS, `disconnected` with the peer closing "without sending TLS close_notify" (rumqttc
/// closes its socket after DISCONNECT without it). Nothing is wrong then, so a user must not
/// see an error; every other rumqttd event passes.
struct NotCleanDisconnect;

fn is_clean_disconnect(message: &str, error: &str) -> bool {
    message == "router-drop"
        || (message.starts_with("no-connection id ") && message.ends_with(" is already gone"))
        || (message == "disconnected" && error.contains("without sending TLS close_notify"))
}

impl<S> tracing_subscriber::layer::Filter<S> for NotCleanDisconnect {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        #[derive(Default)]
        struct Fields {
            message: String,
            error: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                match f.name() {
                    "message" => self.message = format!("{v:?}"),
                    "error" => self.error = format!("{v:?}"),
                    _ => {}
                }
            }
        }
        if !event.metadata().target().starts_with("rumqttd") {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        !is_clean_disconnect(&fields.message, &fields.error)
    }
}

/// Log lines to stderr; `RUST_LOG` overrides the level (default `info`). The format is the
/// one [`set_log_format`] chose, else `GOPSWARM_LOG_FORMAT` (`text` or `json`), else text.
pub fn init_logging() {
    use std::io::IsTerminal;
    use std::sync::Once;
    use tracing_subscriber::prelude::*;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
        let format = LOG_FORMAT.get().copied().unwrap_or_else(|| {
            match std::env::var(LOG_FORMAT_ENV).as_deref() {
                Ok("json") => LogFormat::Json,
                _ => LogFormat::Text,
            }
        });
        let registry = tracing_subscriber::registry().with(filter);
        let _ = match format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_target(false)
                        .with_filter(NotCleanDisconnect),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr)
                        .with_filter(NotCleanDisconnect),
                )
                .try_init(),
        };
    });
}

/// Warnings only (the demo prints its own progress).
pub fn init_logging_quiet() {
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: called at start-up, before any thread is spawned.
        unsafe { std::env::set_var("RUST_LOG", "warn,rumqttd=error") };
    }
    init_logging();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The runtime a daemon runs on: two worker threads (the media work runs on GStreamer's own
/// streaming threads).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    return_big_buffers_to_the_system();
    return_freed_memory_periodically();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Payloads of up to tens of MiB (chunks) pass through every daemon. glibc raises its mmap
/// threshold after freeing such a buffer, so the next ones come from the heap and stay
/// resident after they are freed: a few forged 30 MiB chunks grew a merger by 150 MiB for good.
/// A fixed threshold keeps every buffer over 1 MiB in its own mapping, returned when freed.
fn return_big_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::Once;
        static SET: Once = Once::new();
        // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD with a value
        // within glibc's limits (at most 32 MiB) is always accepted.
        SET.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        });
    }
}

/// How often a daemon hands the memory it freed back to the system.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// glibc keeps what a thread frees in that thread's arena, and GStreamer starts new streaming
/// threads with every pipeline, decoder and quality check: frame buffers freed by them stayed
/// resident, so a host's memory crept up by about 0.6 MiB a minute for hours while its heap in
/// use stayed flat (one `malloc_trim` gave a soaked host 88 MiB of 220 back). A thread hands
/// freed memory back every `TRIM_EVERY` (a walk over the arenas), often enough that resident
/// memory follows what is in use rather than how long ago the last trim was.
/// Started once per process; a no-op off glibc.
pub fn return_freed_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::Once;
        static START: Once = Once::new();
        START.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("malloc-trim".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(TRIM_EVERY);
                        // SAFETY: malloc_trim only returns free memory to the system; it
                        // takes each arena's lock like malloc does.
                        unsafe {
                            libc::malloc_trim(0);
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("no memory trimming thread: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_or_a_dash() {
        assert_eq!(super::number_or_dash(Some(13u64)), "13");
        assert_eq!(super::number_or_dash(None::<u64>), "-");
    }

    #[test]
    fn only_clean_disconnects_are_filtered() {
        use super::is_clean_disconnect as clean;
        assert!(clean("router-drop", ""));
        assert!(clean("no-connection id 12 is already gone", ""));
        assert!(!clean("Remote link error", ""));
        assert!(!clean("disconnected", ""));
        let eof = r#"Network(Io(Custom { kind: UnexpectedEof, error: "peer closed connection without sending TLS close_notify" }))"#;
        assert!(clean("disconnected", eof));
        assert!(!clean(
            "disconnected",
            "Network(Io(Custom { kind: ConnectionReset }))"
        ));
        assert!(!clean("Tls accept error", eof));
    }
}
