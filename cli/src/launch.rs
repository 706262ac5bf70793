// SPDX-License-Identifier: MPL-2.0
//! `gopswarm launch`: run a `gst-launch-1.0` pipeline description, with the end-of-stream
//! behaviour of `gst-launch-1.0 -e` but without its GStreamer 1.22 start-up race.
//!
//! `gst-launch-1.0` prerolls in PAUSED and sets PLAYING as soon as the pipeline's PAUSED
//! state-change message arrives. `GstBin` in 1.22 records "posted PLAYING" *after* a
//! state-change message is on the bus, so the streaming thread that completed the preroll
//! can overwrite the main thread's PLAYING flag with its stale PAUSED one. The pipeline
//! then never aggregates its sinks' EOS: every file is finished, yet the process waits
//! forever (seen about once in 13 runs of the TCP merger with two of them on two cores; a
//! `GST_DEBUG=bin:5` log shows both sinks' EOS reaching `pipeline0` and no `is_eos` check).
//! Going straight from NULL to PLAYING leaves the PAUSED and PLAYING messages to one thread
//! in order, so the race cannot happen.
//!
//! Exit status: 0 after the pipeline's EOS, 1 after an error (the first one ends the run),
//! 130 after a second interrupt. The first SIGINT or SIGTERM sends EOS so that muxers
//! finish their files.

use gst::glib;
use gst::prelude::*;
use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Exit status when a second interrupt stops the run without waiting for EOS.
const INTERRUPTED_TWICE: i32 = 130;
/// How often the main loop looks at the interrupt count.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn path_of(src: Option<&gst::Object>) -> String {
    src.map_or_else(|| "(unknown)".to_string(), |s| s.path_string().to_string())
}

/// Ask a running [`run`] to stop as a first SIGINT does: send EOS so that files are finished
/// (the `pipelines` watchdog uses this when the in-process run reaches its TIMEOUT).
pub fn interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// Run the pipeline `words` (the argv words of a `gst-launch-1.0` line) to its end.
pub fn run(words: &[String]) -> anyhow::Result<i32> {
    gst::init()?;
    if words.is_empty() {
        anyhow::bail!("no pipeline description given");
    }
    let argv: Vec<&str> = words.iter().map(String::as_str).collect();
    let element = match gst::parse::launchv(&argv) {
        Ok(e) => e,
        Err(err) => {
            eprintln!("ERROR: pipeline could not be constructed: {err}.");
            return Ok(1);
        }
    };
    let pipeline = match element.downcast::<gst::Pipeline>() {
        Ok(p) => p,
        Err(single) => {
            let p = gst::Pipeline::new();
            p.add(&single)?;
            p
        }
    };

    let main_loop = glib::MainLoop::new(None, false);
    let status = Rc::new(Cell::new(0));
    let started = Instant::now();

    let bus = pipeline.bus().expect("a pipeline has a bus");
    let _watch = {
        let main_loop = main_loop.clone();
        let status = status.clone();
        let weak = pipeline.downgrade();
        bus.add_watch_local(move |_, msg| {
            use gst::MessageView;
            let Some(pipeline) = weak.upgrade() else {
                return glib::ControlFlow::Break;
            };
            match msg.view() {
                MessageView::Eos(_) => {
                    let name = msg.src().map_or_else(String::new, |s| s.name().to_string());
                    say(&format!("Got EOS from element \"{name}\"."));
                    main_loop.quit();
                }
                MessageView::Error(e) => {
                    eprintln!("ERROR: from element {}: {}", path_of(msg.src()), e.error());
                    if let Some(debug) = e.debug() {
                        eprintln!("Additional debug info:\n{debug}");
                    }
                    status.set(1);
                    main_loop.quit();
                }
                MessageView::Warning(w) => {
                    eprintln!(
                        "WARNING: from element {}: {}",
                        path_of(msg.src()),
                        w.error()
                    );
                    if let Some(debug) = w.debug() {
                        eprintln!("Additional debug info:\n{debug}");
                    }
                }
                MessageView::Latency(_) => {
                    let _ = pipeline.recalculate_latency();
                }
                MessageView::ClockLost(_) => {
                    // A new clock is picked by going through PAUSED again.
                    let _ = pipeline.set_state(gst::State::Paused);
                    let _ = pipeline.set_state(gst::State::Playing);
                }
                MessageView::StateChanged(s)
                    if msg.src() == Some(pipeline.upcast_ref::<gst::Object>())
                        && s.current() == gst::State::Playing =>
                {
                    say("Pipeline is PLAYING ...");
                }
                _ => {}
            }
            glib::ControlFlow::Continue
        })?
    };

    // The handler only counts (async-signal-safe); the main loop acts on the count.
    INTERRUPTS.store(0, Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
    let _signals = {
        let main_loop = main_loop.clone();
        let status = status.clone();
        let handled = Cell::new(0u32);
        let weak = pipeline.downgrade();
        glib::timeout_add_local(SIGNAL_POLL, move || {
            let seen = INTERRUPTS.load(Ordering::SeqCst);
            if seen == handled.get() {
                return glib::ControlFlow::Continue;
            }
            handled.set(seen);
            if seen == 1 {
                say("handling interrupt: sending EOS so that files are finished ...");
                if let Some(p) = weak.upgrade() {
                    p.send_event(gst::event::Eos::new());
                }
            } else {
                say("second interrupt: stopping without waiting for EOS");
                status.set(INTERRUPTED_TWICE);
                main_loop.quit();
            }
            glib::ControlFlow::Continue
        })
    };

    say("Setting pipeline to PLAYING ...");
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The error message on the bus says why; show it before giving up.
        eprintln!("ERROR: pipeline doesn't want to play.");
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                eprintln!("ERROR: from element {}: {}", path_of(msg.src()), e.error());
                if let Some(debug) = e.debug() {
                    eprintln!("Additional debug info:\n{debug}");
                }
            }
        }
        let _ = pipeline.set_state(gst::State::Null);
        return Ok(1);
    }
    main_loop.run();
    let elapsed = started.elapsed();
    say(&format!(
        "Execution ended after {:.3} s",
        elapsed.as_secs_f64()
    ));
    say("Setting pipeline to NULL ...");
    let _ = pipeline.set_state(gst::State::Null);
    say("Freeing pipeline ...");
    Ok(status.get())
}
