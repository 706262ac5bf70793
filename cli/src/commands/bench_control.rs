// SPDX-License-Identifier: MPL-2.0
//! `gopswarm bench-control`: control-plane benchmarks. The controller's assignment round for a
//! large simulated swarm, and control messages per second through real brokers on loopback
//! (mosquitto, started here, and the embedded rumqttd), measured side by side in one run.

use crate::loopback::{free_port, wait_listen};
use anyhow::{Context, Result, bail};
use gopswarm_proto::*;
use gopswarm_sim::bench::{assignment_rounds, percentile};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchControlOptions {
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    #[arg(long, default_value_t = 2_000)]
    streams: usize,
    #[arg(long, default_value_t = 3)]
    slots: u32,
    /// Rounds to time
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Messages per broker throughput run
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
}

pub fn run(o: BenchControlOptions) -> Result<()> {
    print_assignment(o.hosts, o.streams, o.slots, o.rounds);
    print_signatures(o.hosts, o.streams, o.slots, o.rounds);
    print_rescore(o.hosts, o.rounds);
    print_throughput(o.messages)
}

pub fn print_assignment(hosts: usize, streams: usize, slots: u32, repeat: usize) {
    eprintln!(
        "assignment round: {hosts} hosts, {streams} streams x {slots} slots, {repeat} rounds"
    );
    let t = assignment_rounds(hosts, streams, slots, repeat, None);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "assignment round ({hosts} hosts, {streams} streams, {slots} slots, r=1): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} messages per round)",
        ms(percentile(&t.rounds, 0.5)),
        ms(percentile(&t.rounds, 0.99)),
        ms(*t.rounds.last().unwrap()),
        t.messages_per_round
    );
    println!(
        "one stream placed (prepare, acks, commit): p50 {:.3} ms  p99 {:.3} ms",
        ms(percentile(&t.per_stream, 0.5)),
        ms(percentile(&t.per_stream, 0.99))
    );
}

/// What signatures cost: per message kind, per chunk-sized payload, and in the assignment
/// round (the same round as above, with every message signed and checked), side by side.
pub fn print_signatures(hosts: usize, streams: usize, slots: u32, repeat: usize) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (kind, bytes, seal, open) in gopswarm_sim::bench::signature_costs(2000) {
        println!(
            "signature, {kind} ({bytes} bytes): sign {:.1} us  check {:.1} us",
            us(seal),
            us(open)
        );
    }
    // A 2 s GOP at 3 Mbit/s.
    let chunk = 750_000;
    let (sign, verify) = gopswarm_sim::bench::chunk_signature_cost(chunk, 200);
    println!(
        "signature, one {chunk}-byte chunk (a 2 s GOP at 3 Mbit/s): sign {:.2} ms  verify {:.2} ms",
        ms(sign),
        ms(verify)
    );
    let mut keys = gopswarm_sim::bench::Keys::new(hosts);
    let plain = assignment_rounds(hosts, streams, slots, repeat, None);
    let signed = assignment_rounds(hosts, streams, slots, repeat, Some(&mut keys));
    println!(
        "assignment round signed ({hosts} hosts, {streams} streams): p50 {:.1} ms  p99 {:.1} ms  (unsigned, same run: p50 {:.1} ms  p99 {:.1} ms)",
        ms(percentile(&signed.rounds, 0.5)),
        ms(percentile(&signed.rounds, 0.99)),
        ms(percentile(&plain.rounds, 0.5)),
        ms(percentile(&plain.rounds, 0.99)),
    );
}

/// Rescoring every host (once per keep-alive in the orchestrator): stability, fitness, tier and
/// its explanation, scores published.
pub fn print_rescore(hosts: usize, repeat: usize) {
    let t = gopswarm_sim::bench::rescore_rounds(hosts, repeat.max(1));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "rescore ({hosts} hosts): p50 {:.1} ms  p99 {:.1} ms; scoring alone, p50: with the arithmetic written out {:.1} ms, numbers only {:.1} ms",
        ms(percentile(&t.rounds, 0.5)),
        ms(percentile(&t.rounds, 0.99)),
        ms(percentile(&t.explained, 0.5)),
        ms(percentile(&t.quiet, 0.5))
    );
}

/// Heartbeats through a broker: one publisher, one subscriber, QoS 1. Messages per second
/// from the first publish to the last delivery.
// Raw rumqttc, not `proto::link`: this measures the brokers, with one fixed client setting
// (inflight 1000, clean session, no presence or reconnects) that the link does not offer.
async fn throughput(port: u16, n: usize) -> Result<f64> {
    let hb = Heartbeat {
        host: "bench-host".into(),
        seq: 1,
        metrics: Metrics::default(),
        tasks: vec![TaskStatus {
            stream: "s".into(),
            profile: "p".into(),
            layout_epoch: 1,
            current_gop: Some(1),
            gops_sent: 1,
            ready: true,
            error: None,
        }],
        score: None,
    };
    let payload = encode(&hb);
    let topic = Topic::Heartbeat("bench-host".into()).path();
    let mut so = MqttOptions::new(format!("bench-sub-{port}"), "127.0.0.1", port);
    so.set_keep_alive(Duration::from_secs(30));
    so.set_inflight(1000);
    let (sub, mut sub_el) = AsyncClient::new(so, 1000);
    sub.subscribe(&topic, QoS::AtLeastOnce).await?;
    // Wait for the subscription to be in place.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sub_el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("subscriber: {e}"),
            Err(_) => bail!("no SUBACK"),
        }
    }
    let counter = tokio::spawn(async move {
        let mut got = 0usize;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(20), sub_el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => got += 1,
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        (got, Instant::now())
    });
    let mut po = MqttOptions::new(format!("bench-pub-{port}"), "127.0.0.1", port);
    po.set_keep_alive(Duration::from_secs(30));
    po.set_inflight(1000);
    let (publ, mut pub_el) = AsyncClient::new(po, 1000);
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    let start = Instant::now();
    for _ in 0..n {
        publ.publish(&topic, QoS::AtLeastOnce, false, payload.clone())
            .await?;
    }
    let (got, end) = counter.await?;
    if got < n {
        bail!("only {got} of {n} messages arrived");
    }
    Ok(n as f64 / end.duration_since(start).as_secs_f64())
}

pub fn print_throughput(n: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // mosquitto, started and stopped here.
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("gopswarm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"),
    )?;
    let mut mosquitto = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mosquitto (scripts/setup-debian.sh installs it)")?;
    wait_listen(port, Duration::from_secs(10))?;
    let m = rt.block_on(throughput(port, n));
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "control messages through mosquitto (loopback, QoS 1, {} B heartbeats): {:.0} msg/s",
        encode_len(),
        m?
    );
    let port = free_port()?;
    gopswarm_orchestrator::broker::start_embedded(format!("127.0.0.1:{port}").parse()?, None)?;
    let r = rt.block_on(throughput(port, n))?;
    println!("control messages through embedded rumqttd (same load): {r:.0} msg/s");
    Ok(())
}

fn encode_len() -> usize {
    encode(&Heartbeat {
        host: "bench-host".into(),
        seq: 1,
        metrics: Metrics::default(),
        tasks: vec![],
        score: None,
    })
    .len()
}
