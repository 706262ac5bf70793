//! The swarm's processes: live source, encoder host, merger, and the demo that runs them with
//! the orchestrator.

pub mod complexity;
pub mod demo;
pub mod explain;
pub mod host;
pub mod learn;
pub mod merge;
pub mod quality;
pub mod simulate;
pub mod source;
pub mod timeline;

/// Checks a `profileenc` profile with the element's own parser: the message of a refused one
/// names the field and its allowed values (`gopswarm stream add` and the hosts use it, so they
/// refuse exactly what the element would).
pub fn check_profile(spec: &str) -> Result<gstgopswarm::profile::Profile, String> {
    crate::run::init();
    gstgopswarm::profile::Profile::parse(spec)
        .map_err(|e| format!("profile \"{spec}\" refused: {e}"))
}

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
