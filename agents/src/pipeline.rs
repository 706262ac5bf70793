// SPDX-License-Identifier: MPL-2.0
//! Running pipelines in-process with the gopswarm plugin registered statically: what every
//! role builds its GStreamer pipelines with.

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use std::time::{Duration, Instant};

pub fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstgopswarm::plugin_register_static().expect("gopswarm plugin registers");
    });
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub elapsed: Duration,
    /// Element messages (gopswarm-gap, gopswarm-merge-summary, ...), in order.
    pub messages: Vec<gst::Structure>,
}

impl Outcome {
    pub fn message(&self, name: &str) -> Option<&gst::Structure> {
        self.messages.iter().find(|s| s.name() == name)
    }
    pub fn count(&self, name: &str) -> usize {
        self.messages.iter().filter(|s| s.name() == name).count()
    }
}

pub fn parse(description: &str) -> Result<gst::Pipeline> {
    init();
    let element = gst::parse::launch(description)
        .with_context(|| format!("pipeline does not parse: {description}"))?;
    element
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))
}

/// One element with typed properties. Every pipeline that carries anything from the network
/// (a source address, an SRT endpoint) is built from these, never from a description string,
/// so nothing that came over the wire is ever parsed as pipeline syntax.
pub fn make(factory: &str, props: &[(&str, gst::glib::Value)]) -> Result<gst::Element> {
    init();
    let element = gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("GStreamer element {factory} is not installed"))?;
    for (name, value) in props {
        let pspec = element
            .find_property(name)
            .with_context(|| format!("{factory} has no property {name}"))?;
        // Numbers convert between widths as GLib does (a u64 for a gint64 property); other
        // mismatches are our mistake, reported rather than panicking.
        let converted = value
            .transform_with_type(pspec.value_type())
            .map_err(|_| anyhow::anyhow!("{factory}.{name}: a {} does not fit", value.type_()))?;
        // Out of the property's range (or changed sign in the conversion): an error, not
        // GLib's panic or a clamped value.
        let same = converted
            .transform_with_type(value.type_())
            .is_ok_and(|back| format!("{back:?}") == format!("{value:?}"));
        if !same || !in_range(&pspec, &converted) {
            anyhow::bail!("{factory}.{name}: {value:?} is out of range");
        }
        element.set_property_from_value(name, &converted);
    }
    Ok(element)
}

/// Whether a number is within its property's range (GLib would panic or clamp).
fn in_range(pspec: &gst::glib::ParamSpec, value: &gst::glib::Value) -> bool {
    use gst::glib::{ParamSpecInt, ParamSpecInt64, ParamSpecUInt, ParamSpecUInt64};
    macro_rules! check {
        ($spec:ty, $t:ty) => {
            if let Some(p) = pspec.downcast_ref::<$spec>() {
                return value
                    .get::<$t>()
                    .is_ok_and(|v| (p.minimum()..=p.maximum()).contains(&v));
            }
        };
    }
    check!(ParamSpecInt, i32);
    check!(ParamSpecUInt, u32);
    check!(ParamSpecInt64, i64);
    check!(ParamSpecUInt64, u64);
    true
}

/// AES-256 on an `srtsrc`/`srtsink` with the swarm's passphrase; nothing with `--insecure`.
pub fn srt_encryption(element: &gst::Element, passphrase: Option<&str>) {
    if let Some(p) = passphrase {
        element.set_property("passphrase", p);
        element.set_property_from_str("pbkeylen", "32");
    }
}

/// `caps` as a capsfilter.
pub fn caps_filter(caps: gst::Caps) -> Result<gst::Element> {
    make("capsfilter", &[("caps", caps.to_value())])
}

/// A pipeline of `elements` linked in order.
pub fn chain(elements: &[gst::Element]) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::new();
    pipeline.add_many(elements).context("adding elements")?;
    gst::Element::link_many(elements).context("linking elements")?;
    Ok(pipeline)
}

/// `element` as `T` (an element we made ourselves).
pub fn downcast<T: IsA<gst::Element>>(element: &gst::Element) -> T {
    element
        .clone()
        .downcast::<T>()
        .unwrap_or_else(|_| panic!("element {} has another type", element.name()))
}

/// Build a pipeline from `gst-launch-1.0` argv words (as `gopswarm::pipelines` expands them),
/// the way gst-launch-1.0 does: each word stays one word, spaces included.
pub fn parse_words(words: &[String]) -> Result<gst::Pipeline> {
    init();
    let argv: Vec<&str> = words.iter().map(String::as_str).collect();
    let element = gst::parse::launchv(&argv)
        .with_context(|| format!("pipeline does not parse: {}", argv.join(" ")))?;
    element
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))
}

/// The element `name` of a pipeline built from a description we wrote ourselves, as `T`.
pub fn by_name<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> T {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("our pipeline has no element {name}"))
        .downcast::<T>()
        .unwrap_or_else(|_| panic!("element {name} has another type"))
}

/// Play until EOS, an error or `timeout`; the pipeline is set to NULL afterwards in every case.
pub fn play(pipeline: &gst::Pipeline, timeout: Duration) -> Result<Outcome> {
    let start = Instant::now();
    let bus = pipeline.bus().context("pipeline bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .context("pipeline refused to start")?;
    let mut outcome = Outcome::default();
    let result = loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break Err(anyhow::anyhow!("timed out after {timeout:?}"));
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => {
                break Err(anyhow::anyhow!(
                    "{} from {}: {}",
                    e.error(),
                    msg.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                ));
            }
            gst::MessageView::Element(_) => {
                if let Some(s) = msg.structure() {
                    outcome.messages.push(s.to_owned());
                }
            }
            _ => (),
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    outcome.elapsed = start.elapsed();
    result?;
    Ok(outcome)
}

/// Make the parent directory of an output prefix.
pub fn prepare_out(prefix: &std::path::Path) -> Result<()> {
    if let Some(parent) = prefix.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let hls = format!("{}-hls", prefix.display());
    std::fs::create_dir_all(&hls)?;
    if !prefix.parent().is_some_and(|p| p.is_dir()) {
        bail!("cannot create {}", prefix.display());
    }
    Ok(())
}

/// Checks a `profileenc` profile with the element's own parser: the message of a refused one
/// names the field and its allowed values (`gopswarm stream add` and the hosts use it, so they
/// refuse exactly what the element would).
pub fn check_profile(spec: &str) -> Result<gstgopswarm::profile::Profile, String> {
    init();
    gstgopswarm::profile::Profile::parse(spec)
        .map_err(|e| format!("profile \"{spec}\" refused: {e}"))
}
