// SPDX-License-Identifier: MPL-2.0
//! Value parsers shared by the roles' command-line options.

use gopswarm_proto::link::BrokerUrl;
use std::time::Duration;

/// `--broker`: mqtt://[user:pass@]host:port or mqtts://...
pub fn parse_broker(s: &str) -> Result<BrokerUrl, String> {
    BrokerUrl::parse(s)
}

/// A duration given in seconds (fractions allowed), as every time flag takes it.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} s: {e}"))
}

/// Seconds as a duration, for values that came in as numbers.
pub fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("{s} s: {e}"))
}

/// `--keys` / `--insecure`: how a part signs and checks the swarm's control messages.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyOptions {
    /// Swarm key directory made by `gopswarm init` (trust.json and this part's key; a new
    /// host writes its own key under hosts/ when it enrols). Messages are signed, and unsigned
    /// or badly signed ones are counted and ignored
    #[arg(long, env = "GOPSWARM_KEYS", value_name = "DIR")]
    pub keys: Option<std::path::PathBuf>,
    /// Run without signatures: nothing signed, every well-formed message believed. Only for a
    /// lab on a network nobody else reaches
    #[arg(long)]
    pub insecure: bool,
}

impl KeyOptions {
    /// The key directory; an error that says what to do when there is none and `--insecure`
    /// was not asked for (no silent fallback to an open swarm).
    pub fn dir(&self) -> anyhow::Result<Option<gopswarm_proto::keys::KeyDir>> {
        match (&self.keys, self.insecure) {
            (Some(_), true) => anyhow::bail!("--keys and --insecure: pick one"),
            (Some(d), false) => Ok(Some(gopswarm_proto::keys::KeyDir::new(d))),
            (None, true) => {
                tracing::warn!(
                    "--insecure: control messages are neither signed nor checked; anyone who can \
                     reach the broker can take this swarm over"
                );
                Ok(None)
            }
            (None, false) => anyhow::bail!(
                "no swarm keys: make them with `gopswarm init DIR` and pass --keys DIR (or \
                 GOPSWARM_KEYS=DIR), or run an open lab swarm with --insecure"
            ),
        }
    }

    /// The passphrase that encrypts SRT partial streams: the swarm's, or none with
    /// `--insecure`.
    pub fn srt_passphrase(&self) -> anyhow::Result<Option<String>> {
        match self.dir()? {
            Some(kd) => Ok(Some(kd.srt_passphrase().map_err(anyhow::Error::msg)?)),
            None => Ok(None),
        }
    }

    /// How `who` publishes and receives: signed with its key and checking against the trust
    /// file, or plain with `--insecure`.
    pub fn seal_and_open(
        &self,
        who: gopswarm_proto::signed::Principal,
    ) -> anyhow::Result<(gopswarm_proto::signed::Seal, gopswarm_proto::signed::Open)> {
        use gopswarm_proto::signed::{Open, Seal, Verifier};
        let Some(kd) = self.dir()? else {
            return Ok((Seal::Plain, Open::Plain));
        };
        let trust = kd.trust().map_err(anyhow::Error::msg)?;
        let signer = kd.signer(who).map_err(anyhow::Error::msg)?;
        let verifier = Verifier::new(&trust).map_err(anyhow::Error::msg)?;
        Ok((
            Seal::Signed(Box::new(signer)),
            Open::Verified(Box::new(verifier)),
        ))
    }
}
