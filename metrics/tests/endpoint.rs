// SPDX-License-Identifier: MPL-2.0
//! The `/metrics` endpoint over real sockets: what it answers, and that bad, slow or many
//! clients neither hurt it nor each other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gopswarm_metrics::{CONTENT_TYPE, Limits, Registry, serve, serve_with};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse failed")
}

fn gauge(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| {
            x.metric == metric
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .map(|x| match x.value {
            Value::Gauge(v) => v,
            ref other => panic!("not a gauge: {other:?}"),
        })
}

/// A raw HTTP exchange: status code, headers (lower-cased names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("reply timed out"))??;
    let text = String::from_utf8(raw).map_err(std::io::Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no head in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().map_err(std::io::Error::other)?;
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header without colon");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

async fn get_metrics(addr: SocketAddr) -> Reply {
    exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n",
    )
    .await
    .expect("GET /metrics failed")
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn serves_metrics_over_http() {
    let registry = Arc::new(Registry::new());
    let g = registry
        .gauge(
            "gopswarm_host_stability_score",
            "Stability score 0-100 of a host",
            &["host"],
        )
        .unwrap();
    let server = serve(registry.clone(), loopback()).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    g.set(&["h1"], 87.5).unwrap();
    let reply = get_metrics(addr).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE));
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert_eq!(reply.body, registry.render());
    let s = scrape(&reply.body);
    assert_eq!(
        gauge(&s, "gopswarm_host_stability_score", &[("host", "h1")]),
        Some(87.5)
    );

    // A value set just before the next scrape is in it; a removed host is gone.
    g.set(&["h2"], 12.0).unwrap();
    g.remove(&["h1"]).unwrap();
    let s = scrape(&get_metrics(addr).await.body);
    assert_eq!(
        gauge(&s, "gopswarm_host_stability_score", &[("host", "h2")]),
        Some(12.0)
    );
    assert_eq!(
        gauge(&s, "gopswarm_host_stability_score", &[("host", "h1")]),
        None
    );

    // HEAD: same headers, no body. HTTP/1.0 is answered too.
    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(registry.render().len().to_string().as_str())
    );
    let mut old = TcpStream::connect(addr).await.unwrap();
    old.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    old.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw}");
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_path_and_method() {
    let server = serve(Arc::new(Registry::new()), loopback()).await.unwrap();
    let addr = server.local_addr();
    for path in ["/other", "/", "/metrics/"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let reply = exchange(addr, request.as_bytes()).await.unwrap();
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(reply.body.contains("/metrics"), "{}", reply.body);
    }
    for method in ["DELETE", "POST", "PUT"] {
        let request = format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let reply = exchange(addr, request.as_bytes()).await.unwrap();
        assert_eq!(reply.status, 405, "{method}");
        let allow = reply.header("allow").unwrap_or_default().replace(' ', "");
        assert_eq!(allow, "GET,HEAD");
    }
    // Empty registry: 200 with an empty body.
    let reply = get_metrics(addr).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("0"));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_do_not_hurt_the_server() {
    let registry = Arc::new(Registry::new());
    let g = registry.gauge("up", "x", &[]).unwrap();
    let server = serve(registry.clone(), loopback()).await.unwrap();
    let addr = server.local_addr();

    // Garbage.
    let reply = exchange(addr, b"\x00\x01\x02 not http at all\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
    // Binary garbage without a head terminator, then the client hangs up.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0xff; 100]).await.unwrap();
    }
    // A TLS ClientHello-like prefix, then a half-close: closed soon, answer or not.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00])
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "{read:?}");
    }
    // Connect and close at once.
    drop(TcpStream::connect(addr).await.unwrap());

    // Oversized head: 16 KiB of headers.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while big.len() < 16 * 1024 {
        big.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    big.extend_from_slice(b"\r\n");
    let reply = exchange(addr, &big).await.unwrap();
    assert_eq!(reply.status, 431);
    // Oversized request line with no newline at all.
    let long_line = vec![b'A'; 20 * 1024];
    let reply = exchange(addr, &long_line).await.unwrap();
    assert!(matches!(reply.status, 400 | 431), "{}", reply.status);
    // A head well within 8 KiB still works.
    let mut fits = b"GET /metrics HTTP/1.1\r\nX-Fill: ".to_vec();
    fits.resize(6 * 1024, b'a');
    fits.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exchange(addr, &fits).await.unwrap().status, 200);

    g.set(&[], 1.0).unwrap();
    let reply = get_metrics(addr).await;
    assert_eq!(reply.status, 200);
    assert_eq!(gauge(&scrape(&reply.body), "up", &[]), Some(1.0));
    server.shutdown().await;
}

#[tokio::test]
async fn slow_clients_time_out_and_do_not_block_others() {
    let limits = Limits {
        deadline: Duration::from_millis(300),
        max_connections: 2,
    };
    let registry = Arc::new(Registry::new());
    registry
        .gauge("up", "x", &[])
        .unwrap()
        .set(&[], 1.0)
        .unwrap();
    let server = serve_with(registry, loopback(), limits).await.unwrap();
    let addr = server.local_addr();

    // One client that sends half a request and stalls.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    // Others are still served meanwhile (one slot left).
    assert_eq!(get_metrics(addr).await.status, 200);
    // The stalled one is closed after the deadline, with nothing written.
    let started = Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
        .await
        .expect("slow client was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Fill both slots with idle clients: a third waits for a slot instead of failing,
    // and is answered once the idle ones time out.
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let idle_b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let reply = get_metrics(addr).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "third connection was not held back: {:?}",
        started.elapsed()
    );
    drop((idle_a, idle_b));
    server.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_scrapes() {
    let registry = Arc::new(Registry::new());
    let g = registry.gauge("g", "x", &["i"]).unwrap();
    for i in 0..100 {
        g.set(&[&i.to_string()], i as f64).unwrap();
    }
    let server = serve(registry.clone(), loopback()).await.unwrap();
    let addr = server.local_addr();
    let mut clients = JoinSet::new();
    for _ in 0..100 {
        clients.spawn(async move { get_metrics(addr).await });
    }
    let expected = scrape(&registry.render());
    while let Some(reply) = clients.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        let got = scrape(&reply.body);
        assert_eq!(got.samples.len(), 100);
        for i in 0..100 {
            let i = i.to_string();
            assert_eq!(
                gauge(&got, "g", &[("i", &i)]),
                gauge(&expected, "g", &[("i", &i)])
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_scrapes_in_flight_and_frees_the_port() {
    let registry = Arc::new(Registry::new());
    registry
        .gauge("up", "x", &[])
        .unwrap()
        .set(&[], 1.0)
        .unwrap();
    let server = serve(registry.clone(), loopback()).await.unwrap();
    let addr = server.local_addr();
    // A scrape whose request is still coming when shutdown begins is answered.
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    in_flight.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    in_flight.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    tokio::time::timeout(Duration::from_secs(6), shutdown)
        .await
        .expect("shutdown hung")
        .unwrap();
    // Connecting now fails instead of hanging, and the port can be bound again.
    assert!(
        exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .is_err()
    );
    let again = serve(registry.clone(), addr).await.unwrap();
    assert_eq!(get_metrics(again.local_addr()).await.status, 200);
    // Dropping the server stops it as well.
    drop(again);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn serving_on_a_taken_port_is_a_clear_error() {
    let listener = std::net::TcpListener::bind(loopback()).unwrap();
    let taken = listener.local_addr().unwrap();
    let err = serve(Arc::new(Registry::new()), taken).await.unwrap_err();
    assert!(err.to_string().contains("metrics endpoint"), "{err}");
}
