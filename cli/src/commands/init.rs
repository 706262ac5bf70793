// SPDX-License-Identifier: MPL-2.0
//! `gopswarm init`: a new swarm's keys (see `gopswarm_proto::keys` for the layout).

use anyhow::Result;
use gopswarm_proto::keys::{DEFAULT_MERGER, DEFAULT_OPERATOR, KeyDir};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InitOptions {
    /// Key directory to create (made 0700; every secret in it 0600)
    dir: PathBuf,
    /// One-time host enrolment tokens to make (tokens/N.token)
    #[arg(long, default_value_t = 4)]
    tokens: usize,
    /// Name of the operator key (operators/NAME.key)
    #[arg(long, default_value = DEFAULT_OPERATOR)]
    operator: String,
    /// Name of the merger key (mergers/NAME.key)
    #[arg(long, default_value = DEFAULT_MERGER)]
    merger: String,
    /// Add this many tokens to an existing key directory instead
    #[arg(long, value_name = "N", conflicts_with_all = ["tokens", "operator", "merger"])]
    add_tokens: Option<usize>,
    /// Make, in an existing key directory, a token for this host alone (issued/ID/: the trust
    /// file and enrol.token to copy to it). The only way to give a host that is enrolled
    /// already a new key (rotation); a spare token enrols new host ids only
    #[arg(long, value_name = "ID", conflicts_with_all = ["tokens", "operator", "merger", "add_tokens"])]
    token_for: Option<String>,
    /// Add an operator key to an existing key directory (operators/NAME.key, and its public
    /// half in trust.json; restart the orchestrator to trust it)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tokens", "operator", "merger", "add_tokens", "token_for"])]
    add_operator: Option<String>,
    /// Add a merger key to an existing key directory (mergers/NAME.key, and its public half in
    /// trust.json; restart the hosts to trust it)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tokens", "operator", "merger", "add_tokens", "token_for", "add_operator"])]
    add_merger: Option<String>,
    /// Add an SRT passphrase (srt.passphrase) to a key directory made before SRT partial
    /// streams were encrypted; copy it to every host and merger
    #[arg(long, conflicts_with_all = ["tokens", "operator", "merger", "add_tokens", "token_for", "add_operator", "add_merger"])]
    add_srt_passphrase: bool,
    /// A DNS name or IP address parts reach the embedded broker at, besides localhost,
    /// 127.0.0.1 and ::1 (repeatable; for its TLS certificate, broker/broker.pem)
    #[arg(long = "broker-name", value_name = "NAME")]
    broker_names: Vec<String>,
    /// Make the embedded broker's certificate again in an existing key directory, for
    /// --broker-name (the swarm CA stays: parts that trust it trust the new certificate);
    /// restart the orchestrator to serve it
    #[arg(long, conflicts_with_all = ["tokens", "operator", "merger", "add_tokens", "token_for", "add_operator", "add_merger", "add_srt_passphrase"])]
    broker_cert: bool,
    /// A DNS name or IP address hosts reach a merger's TCP listener at (`merge --listen
    /// tcp://`), besides localhost, 127.0.0.1 and ::1 (repeatable; for the mergers' TLS
    /// certificate, merger/tls.pem)
    #[arg(long = "merger-name", value_name = "NAME")]
    merger_names: Vec<String>,
    /// Make the mergers' TLS certificate (again) in an existing key directory, for
    /// --merger-name; copy merger/ to the mergers and restart them
    #[arg(long, conflicts_with_all = ["tokens", "operator", "merger", "add_tokens", "token_for", "add_operator", "add_merger", "add_srt_passphrase", "broker_cert"])]
    merger_cert: bool,
}

pub fn run(o: InitOptions) -> Result<()> {
    if o.merger_cert {
        let kd = KeyDir::new(&o.dir);
        kd.trust().map_err(anyhow::Error::msg)?;
        let path = kd
            .make_merger_cert(&o.merger_names)
            .map_err(anyhow::Error::msg)?;
        println!(
            "merger TLS certificate: {} (swarm CA {}/broker/ca.pem)",
            path.display(),
            kd.dir.display()
        );
        return Ok(());
    }
    if o.broker_cert {
        let kd = KeyDir::new(&o.dir);
        kd.trust().map_err(anyhow::Error::msg)?;
        let path = kd
            .make_broker_cert(&o.broker_names)
            .map_err(anyhow::Error::msg)?;
        println!(
            "embedded broker certificate: {} (swarm CA {}/broker/ca.pem)",
            path.display(),
            kd.dir.display()
        );
        return Ok(());
    }
    if o.add_srt_passphrase {
        let kd = KeyDir::new(&o.dir);
        kd.trust().map_err(anyhow::Error::msg)?;
        let path = kd.add_srt_passphrase().map_err(anyhow::Error::msg)?;
        println!(
            "SRT passphrase: {} (copy it to every host and merger)",
            path.display()
        );
        return Ok(());
    }
    let added = match (&o.add_operator, &o.add_merger) {
        (Some(n), _) => Some(gopswarm_proto::signed::Principal::Operator(n.clone())),
        (_, Some(n)) => Some(gopswarm_proto::signed::Principal::Merger(n.clone())),
        _ => None,
    };
    if let Some(who) = added {
        let path = KeyDir::new(&o.dir)
            .add_signer(&who)
            .map_err(anyhow::Error::msg)?;
        println!(
            "{who}: {} (and its public key in trust.json)",
            path.display()
        );
        return Ok(());
    }
    if let Some(host) = &o.token_for {
        let kd = KeyDir::new(&o.dir);
        kd.trust().map_err(anyhow::Error::msg)?;
        let (own, token) = kd.issue_host(host).map_err(anyhow::Error::msg)?;
        match token {
            Some(_) => println!(
                "for host {host}: {} (copy the folder to it; gopswarm host --id {host} --keys DIR \
                 --enrol-token DIR/enrol.token)",
                own.dir.display()
            ),
            None => println!(
                "host {host} has its key in {} already; delete it there first to give it a new one",
                own.dir.display()
            ),
        }
        return Ok(());
    }
    if let Some(n) = o.add_tokens {
        let kd = KeyDir::new(&o.dir);
        kd.trust().map_err(anyhow::Error::msg)?;
        for path in kd.add_tokens(n).map_err(anyhow::Error::msg)? {
            println!("token {}", path.display());
        }
        return Ok(());
    }
    let kd = KeyDir::init(&o.dir, &o.operator, &o.merger, o.tokens).map_err(anyhow::Error::msg)?;
    if !o.broker_names.is_empty() {
        kd.make_broker_cert(&o.broker_names)
            .map_err(anyhow::Error::msg)?;
    }
    if !o.merger_names.is_empty() {
        kd.make_merger_cert(&o.merger_names)
            .map_err(anyhow::Error::msg)?;
    }
    let d = kd.dir.display();
    println!("swarm keys in {d}:");
    println!("  {d}/trust.json          public keys: copy to every host, merger and operator");
    println!("  {d}/orchestrator.key    the orchestrator's (gopswarm orchestrator --keys {d})");
    println!(
        "  {d}/operators/{}.key   for gopswarm stream / rolling-update",
        o.operator
    );
    println!("  {d}/mergers/{}.key     for gopswarm merge", o.merger);
    println!("  {d}/srt.passphrase      encrypts SRT partial streams: copy to hosts and mergers");
    println!(
        "  {d}/broker/ca.pem       the swarm CA: copy to every part (it trusts the embedded broker \
         and the mergers' TCP listeners)"
    );
    println!("  {d}/merger/            the mergers' TLS certificate for partial streams over TCP");
    println!(
        "  {d}/tokens/            {} one-time enrolment tokens: give one to each new host \
         (gopswarm host --keys DIR --enrol-token FILE)",
        o.tokens
    );
    Ok(())
}
