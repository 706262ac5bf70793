//! What every daemon does around its work: log lines, the signals that stop it, its runtime.

/// Log lines to stderr; `RUST_LOG` overrides the level (default `info`).
pub fn init_logging() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    });
}

/// Warnings only (for commands that print their own progress, like the demo).
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
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
