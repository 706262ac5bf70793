// SPDX-License-Identifier: MPL-2.0
//! Every element and property is documented where users look: gst-inspect-1.0.

use gst::prelude::*;
use std::process::Command;

const ELEMENTS: [&str; 5] = [
    "gopselect",
    "profileenc",
    "partialpay",
    "partialdepay",
    "gopmerge",
];

#[test]
fn every_element_and_property_has_documentation() {
    gopswarm_agents::pipeline::init();
    for name in ELEMENTS {
        let factory =
            gst::ElementFactory::find(name).unwrap_or_else(|| panic!("{name} registered"));
        let description = factory.metadata("description").unwrap_or_default();
        assert!(
            description.len() > 60,
            "{name}: description too short: {description}"
        );
        assert!(
            description.contains("Example") || description.contains("e.g."),
            "{name}: no example"
        );
        let element = factory.create().build().unwrap();
        for pspec in element.list_properties() {
            if pspec.owner_type() == gst::Object::static_type()
                || pspec.owner_type() == gst::Bin::static_type()
            {
                continue;
            }
            let blurb = pspec.blurb().unwrap_or_default();
            assert!(blurb.len() > 15, "{name}.{}: blurb '{blurb}'", pspec.name());
        }
    }
}

#[test]
fn gst_inspect_shows_the_plugin() {
    let plugin_dir = gopswarm_test_support::build_dir();
    let out = Command::new("gst-inspect-1.0")
        .arg("gopswarm")
        .env("GST_PLUGIN_PATH", &plugin_dir)
        .env("GST_REGISTRY", plugin_dir.join("e2e-registry.bin"))
        .output()
        .expect("gst-inspect-1.0 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ELEMENTS {
        assert!(
            text.contains(name),
            "gst-inspect-1.0 gopswarm lists {name}:\n{text}"
        );
    }
}

/// docs/architecture.md names every workspace crate, so a new crate lands with its two lines.
#[test]
fn architecture_doc_names_every_crate() {
    let root = gopswarm::repo_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let members: Vec<&str> = members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 9, "members parsed: {members:?}");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("architecture.md");
    for m in members {
        assert!(
            doc.contains(&format!("| `{m}/`")),
            "docs/architecture.md has no row for the crate `{m}/`"
        );
    }
}
