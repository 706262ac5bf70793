// SPDX-License-Identifier: MPL-2.0
//! Value parsers shared by the roles' command-line options.

use gopswarm_proto::link::BrokerUrl;

/// The orchestrator's embedded broker on this machine, with swarm keys (TLS, logins) ...
pub const DEFAULT_TLS_BROKER: &str = "mqtts://127.0.0.1:8883";
/// ... and with `--insecure` (plain, anonymous).
pub const DEFAULT_PLAIN_BROKER: &str = "mqtt://127.0.0.1:1883";
/// Where `--broker` says what it defaults to.
pub const BROKER_HELP: &str = "MQTT broker: mqtt://[user:pass@]host:port or mqtts://...[?ca=PATH]; \
     default: the orchestrator's embedded broker on this machine, mqtts://127.0.0.1:8883 with \
     swarm keys (TLS, trusting the swarm CA, logging in with this part's key), \
     mqtt://127.0.0.1:1883 with --insecure";
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

    /// The broker as this part reaches it. `given` (from `--broker`) or, by default, the
    /// orchestrator's embedded broker on this machine: `mqtts://127.0.0.1:8883` with keys,
    /// `mqtt://127.0.0.1:1883` with `--insecure`. With keys, over TLS without `?ca=`, it
    /// trusts only the swarm CA and logs in with `login` unless the URL names a user (see
    /// [`BrokerUrl::for_swarm`]).
    pub fn broker(
        &self,
        given: Option<&BrokerUrl>,
        login: Option<(String, String)>,
    ) -> anyhow::Result<BrokerUrl> {
        let kd = self.dir()?;
        let url = match given {
            Some(u) => u.clone(),
            None if kd.is_some() => {
                BrokerUrl::parse(DEFAULT_TLS_BROKER).map_err(anyhow::Error::msg)?
            }
            None => BrokerUrl::parse(DEFAULT_PLAIN_BROKER).map_err(anyhow::Error::msg)?,
        };
        match kd {
            Some(kd) => {
                if !url.tls {
                    tracing::warn!(
                        "broker {}:{} over plain MQTT: the swarm's messages are signed but anyone \
                         on the path reads them (use mqtts://)",
                        url.host,
                        url.port
                    );
                }
                url.for_swarm(kd.broker_ca().as_deref(), login)
                    .map_err(anyhow::Error::msg)
            }
            None => Ok(url),
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
