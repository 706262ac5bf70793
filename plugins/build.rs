// SPDX-License-Identifier: MPL-2.0
//! Stamps the plugin with its version, commit id and release date (shown by gst-inspect-1.0),
//! as gst-plugins-rs does.

fn main() {
    gst_plugin_version_helper::info()
}
