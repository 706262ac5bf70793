// SPDX-License-Identifier: MPL-2.0
//! `gopswarm launch`: a gst-launch-1.0 pipeline description, run to EOS.

#[derive(clap::Args)]
pub struct LaunchOptions {
    /// The pipeline, as gst-launch-1.0 takes it, e.g. videotestsrc num-buffers=50 ! fakesink
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    description: Vec<String>,
}

/// Exits with the pipeline's status: 0 after EOS, 1 on the first error.
pub fn run(o: LaunchOptions) -> anyhow::Result<()> {
    let status = crate::launch::run(&o.description)?;
    std::process::exit(status);
}
