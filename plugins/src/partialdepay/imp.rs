// SPDX-License-Identifier: MPL-2.0
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{LazyLock, Mutex, PoisonError};

use gopswarm_chunk::{Chunk, Deframer, DeframerStats};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "partialdepay",
        gst::DebugColorFlags::empty(),
        Some("gopswarm partial stream depayloader"),
    )
});

const DEFAULT_MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Settings {
    max_chunk_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
        }
    }
}

struct State {
    deframer: Deframer,
    need_stream_start: bool,
    /// Deframer counters at the last report, to post only what changed.
    reported: DeframerStats,
}

pub struct PartialDepay {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl PartialDepay {
    fn new_state(&self) -> State {
        let max = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .max_chunk_size as usize;
        State {
            deframer: Deframer::new(max),
            need_stream_start: true,
            reported: DeframerStats::default(),
        }
    }

    /// A message when bytes were lost since the last report.
    fn loss_report(&self, state: &mut State) -> Option<gst::Message> {
        let now = state.deframer.stats().clone();
        if now.bytes_skipped == state.reported.bytes_skipped {
            return None;
        }
        let msg = gst::message::Element::builder(
            gst::Structure::builder("gopswarm-depay-resync")
                .field(
                    "bytes-skipped",
                    now.bytes_skipped - state.reported.bytes_skipped,
                )
                .field("corrupt", now.corrupt - state.reported.corrupt)
                .field(
                    "unsupported-version",
                    now.unsupported_version - state.reported.unsupported_version,
                )
                .field("chunks", now.chunks)
                .build(),
        )
        .src(&*self.obj())
        .build();
        gst::warning!(
            CAT,
            imp = self,
            "resynchronised after skipping {} bytes",
            now.bytes_skipped - state.reported.bytes_skipped
        );
        state.reported = now;
        Some(msg)
    }

    fn start_events(&self) -> Vec<gst::Event> {
        let stream_id = self
            .sinkpad
            .stream_id()
            .map(|s| s.to_string())
            .unwrap_or_else(|| {
                self.srcpad
                    .create_stream_id(&*self.obj(), Some("partial"))
                    .to_string()
            });
        vec![
            gst::event::StreamStart::new(&stream_id),
            gst::event::Caps::new(
                &gst::Caps::builder(crate::PARTIAL_CAPS_NAME)
                    .field("version", gopswarm_chunk::VERSION as i32)
                    .build(),
            ),
            gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()),
        ]
    }

    fn push_out(
        &self,
        events: Vec<gst::Event>,
        chunks: Vec<Chunk>,
        messages: Vec<gst::Message>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        for e in events {
            self.srcpad.push_event(e);
        }
        for m in messages {
            let _ = self.obj().post_message(m);
        }
        for c in chunks {
            self.srcpad
                .push(gst::Buffer::from_mut_slice(c.into_bytes()))?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (events, chunks, messages) = {
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let map = buffer.map_readable().map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Read,
                    ["input buffer not readable: {err}"]
                );
                gst::FlowError::Error
            })?;
            state.deframer.push(map.as_slice());
            let mut chunks = Vec::new();
            while let Some(c) = state.deframer.next_chunk() {
                chunks.push(c);
            }
            let events = if state.need_stream_start && !chunks.is_empty() {
                state.need_stream_start = false;
                self.start_events()
            } else {
                vec![]
            };
            let messages = if chunks.is_empty() {
                vec![]
            } else {
                self.loss_report(state).into_iter().collect()
            };
            (events, chunks, messages)
        };
        self.push_out(events, chunks, messages)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            // Our own stream-start, caps and TIME segment go out with the first chunk.
            EventView::StreamStart(_) | EventView::Caps(_) | EventView::Segment(_) => true,
            EventView::Eos(_) => {
                let out = self
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                    .map(|state| {
                        let chunks = state.deframer.finish();
                        let events = if state.need_stream_start {
                            state.need_stream_start = false;
                            self.start_events()
                        } else {
                            vec![]
                        };
                        let messages: Vec<_> = self.loss_report(state).into_iter().collect();
                        (events, chunks, messages)
                    });
                if let Some((events, chunks, messages)) = out {
                    let _ = self.push_out(events, chunks, messages);
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStop(_) => {
                if let Some(state) = self
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    // Keep the counters; drop the half-read bytes.
                    let _ = state.deframer.finish();
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn stats(&self) -> gst::Structure {
        let s = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.deframer.stats().clone())
            .unwrap_or_default();
        gst::Structure::builder("partialdepay-stats")
            .field("chunks", s.chunks)
            .field("bytes-skipped", s.bytes_skipped)
            .field("corrupt", s.corrupt)
            .field("unsupported-version", s.unsupported_version)
            .field("resyncs", s.resyncs)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for PartialDepay {
    const NAME: &'static str = "GstPartialDepay";
    type Type = super::PartialDepay;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                PartialDepay::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                PartialDepay::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.sink_event(pad, event),
                )
            })
            .build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ).build();
        PartialDepay {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
        }
    }
}

impl ObjectImpl for PartialDepay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("max-chunk-size")
                    .nick("Maximum chunk size")
                    .blurb(
                        "Chunks claiming more bytes than this (in bytes) are treated as corruption",
                    )
                    .minimum(1024)
                    .default_value(DEFAULT_MAX_CHUNK_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("chunks, bytes-skipped, corrupt, unsupported-version, resyncs")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "max-chunk-size" => {
                self.settings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .max_chunk_size = value.get().unwrap()
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "max-chunk-size" => self
                .settings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .max_chunk_size
                .to_value(),
            "stats" => self.stats().to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for PartialDepay {}

impl ElementImpl for PartialDepay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "gopswarm partial stream depayloader",
                "Codec/Depayloader/Video",
                &crate::inspect_description(
                    "Recovers CRC-checked gopswarm chunks from any byte stream (filesrc, tcpserversrc, srtsrc, appsrc), resynchronising after garbage or truncation and counting what it dropped.",
                    "gopswarm-depay-resync (bytes-skipped, corrupt, unsupported-version, chunks: u64) after bytes were skipped.",
                    "max-chunk-size in bytes.",
                ),
                "gopswarm developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst::Caps::builder(crate::PARTIAL_CAPS_NAME).build(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.new_state());
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *self.state.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        Ok(res)
    }
}
