//! Issue 17 §2 and §5 over real loopback sockets: idle, silent and slow connections are
//! reclaimed in bounded time while the server keeps answering; caps per address and per
//! listener turn connections away with an OperationOutcome while connections already open keep
//! working; bodies are bounded in size and time; and every error answer — from a handler, an
//! extractor, the router or the limits — is an OperationOutcome, for 300 random hostile
//! requests too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Reply, fresh_store, parse_reply, request, serve, token_for};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tsunagi_server::{Settings, listen::HttpLimits};

/// A connection to `addr` from the loopback address `127.0.0.<from>`.
async fn connect_from(addr: SocketAddr, from: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, from]), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// A connection from `127.0.0.<from>` that carried `ask` (an authenticated request) and was
/// answered 200: one the listener spares at its cap.
async fn proven_from(addr: SocketAddr, from: u8, ask: &str) -> TcpStream {
    let mut stream = connect_from(addr, from).await;
    stream.write_all(ask.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
    stream
}

/// Reads one HTTP/1.1 answer from a connection that stays open (Content-Length framing).
async fn read_answer(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |value| value.trim().parse().unwrap());
            if raw.len() >= split + 4 + length {
                return parse_reply(&raw[..split + 4 + length]).unwrap();
            }
        }
        let read = stream.read(&mut byte).await.unwrap();
        assert!(read > 0, "closed before a whole answer: {raw:?}");
        raw.extend_from_slice(&byte[..read]);
    }
}

/// Whether the server has closed `stream` (reads EOF or a reset), waiting at most `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let waited = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    waited.await.is_ok()
}

fn outcome(reply: &Reply) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some("application/fhir+json; charset=utf-8"),
        "status {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert!(body["issue"][0]["diagnostics"].as_str().is_some(), "{body}");
    body
}

async fn server(limits: HttpLimits) -> (SocketAddr, tempfile::TempDir) {
    let (store, dir) = fresh_store().await;
    let settings = Settings {
        limits,
        ..Settings::default()
    };
    (serve(store, settings).await, dir)
}

#[tokio::test]
async fn idle_and_slow_sockets_are_reclaimed_while_others_are_answered() {
    let (addr, _dir) = server(HttpLimits {
        max_connections: 300,
        max_connections_per_peer: 40,
        header_read_timeout: Duration::from_secs(2),
        keep_alive_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    })
    .await;
    let started = Instant::now();
    // 100 silent sockets from one address: 40 held, the rest turned away with a 429 outcome.
    let mut opened = Vec::new();
    for _ in 0..100 {
        opened.push(connect_from(addr, 2).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut silent = Vec::new();
    let mut turned_away = 0;
    for mut stream in opened {
        let mut first = [0u8; 4096];
        // An admitted connection says nothing; one turned away has been answered.
        match stream.try_read(&mut first) {
            Ok(count) if count > 0 => {
                let mut raw = first[..count].to_vec();
                let _ = stream.read_to_end(&mut raw).await;
                let reply = parse_reply(&raw).unwrap();
                assert_eq!(reply.status, 429);
                assert!(
                    outcome(&reply)["issue"][0]["diagnostics"]
                        .as_str()
                        .unwrap()
                        .contains("max_connections_per_peer")
                );
                turned_away += 1;
            }
            _ => silent.push(stream),
        }
    }
    assert_eq!((silent.len(), turned_away), (40, 60));
    // 200 sockets from 10 other addresses that start a request and never finish its headers.
    let mut slow = Vec::new();
    for from in 3..13 {
        for _ in 0..20 {
            let mut stream = connect_from(addr, from).await;
            stream
                .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(stream);
        }
    }
    // 240 sockets held, and the API still answers everyone else at once.
    for _ in 0..20 {
        let asked = Instant::now();
        assert_eq!(
            request(addr, "GET", "/fhir/metadata", &[], "").await.status,
            200
        );
        assert_eq!(
            request(addr, "GET", "/fhir/Patient?_count=1", &[], "")
                .await
                .status,
            200
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    // Every held socket is closed by the server within its timeout and a margin.
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(4)).await,
            "silent socket kept"
        );
    }
    for stream in &mut slow {
        assert!(
            closed_within(stream, Duration::from_secs(4)).await,
            "slow socket kept"
        );
    }
    let reclaimed = started.elapsed();
    assert!(reclaimed < Duration::from_secs(8), "{reclaimed:?}");
    let metrics = request(addr, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("tsunagi_connections_refused_total{listener=\"http\"} 60"),
        "{text}"
    );
}

#[tokio::test]
async fn at_the_cap_unproven_sockets_make_room_and_proven_ones_keep_working() {
    let (addr, _dir) = server(HttpLimits {
        max_connections: 20,
        max_connections_per_peer: 20,
        header_read_timeout: Duration::from_secs(30),
        keep_alive_timeout: Duration::from_secs(30),
        ..HttpLimits::default()
    })
    .await;
    let token = token_for(addr);
    let ask = format!(
        "GET /fhir/Patient?_count=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let mut kept = connect_from(addr, 1).await;
    kept.write_all(ask.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.status, 200);
    // 19 idle sockets fill the listener.
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(connect_from(addr, 2).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A newcomer still gets in: the oldest idle socket is closed to make room, never the one
    // that carried a valid token, which keeps working.
    let mut newcomers = Vec::new();
    for round in 0..5 {
        let mut newcomer = connect_from(addr, 3).await;
        newcomer.write_all(ask.as_bytes()).await.unwrap();
        assert_eq!(
            read_answer(&mut newcomer).await.status,
            200,
            "round {round}"
        );
        kept.write_all(ask.as_bytes()).await.unwrap();
        assert_eq!(read_answer(&mut kept).await.status, 200, "round {round}");
        newcomers.push(newcomer);
    }
    let mut evicted = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(50)).await {
            evicted += 1;
        }
    }
    assert_eq!(evicted, 5, "one idle socket per newcomer");
    // When every open connection has proven itself, a newcomer is refused with 503.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut proven = newcomers;
    for _ in 0..14 {
        proven.push(proven_from(addr, 4, &ask).await);
    }
    let mut refused = connect_from(addr, 5).await;
    let mut raw = Vec::new();
    let _ = refused.read_to_end(&mut raw).await;
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    outcome(&reply);
    kept.write_all(ask.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.status, 200);
}

#[tokio::test]
async fn bodies_are_bounded_in_size_and_time() {
    let (addr, _dir) = server(HttpLimits {
        max_body_bytes: 1024 * 1024,
        body_read_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    })
    .await;
    let token = token_for(addr);
    let head = |extra: &str| {
        format!(
            "POST /fhir/Communication HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\n{extra}\r\n"
        )
    };
    // Declared too large: refused before a byte of it is read, and the connection closed.
    let mut declared = TcpStream::connect(addr).await.unwrap();
    declared
        .write_all(head("Content-Length: 52428800\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    declared.read_to_end(&mut raw).await.unwrap();
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 413);
    assert!(
        outcome(&reply)["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes")
    );
    // Chunked past the limit: refused while reading.
    let mut chunked = TcpStream::connect(addr).await.unwrap();
    chunked
        .write_all(head("Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let writer = async {
        for _ in 0..40 {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if chunked.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), chunked.read_to_end(&mut raw)).await;
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 413);
    outcome(&reply);
    // Without a valid token the body is never read: a declared body that never comes gets its
    // 401 at once, not a wait for the body.
    let mut anonymous = TcpStream::connect(addr).await.unwrap();
    anonymous
        .write_all(
            b"POST /fhir/Communication HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 500000\r\n\r\n",
        )
        .await
        .unwrap();
    let asked = Instant::now();
    let reply = read_answer(&mut anonymous).await;
    assert_eq!(reply.status, 401);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    // An endpoint open to all takes a small body only.
    let form = format!("grant_type=client_credentials&x={}", "a".repeat(70 * 1024));
    let reply = request(
        addr,
        "POST",
        "/auth/token",
        &[
            ("authorization", ""),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &form,
    )
    .await;
    assert_eq!(reply.status, 413);
    outcome(&reply);
    // A body that trickles in and stops: 408 after the body timeout.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(head("Content-Length: 100\r\n").as_bytes())
        .await
        .unwrap();
    trickle.write_all(b"{\"resourceType\":").await.unwrap();
    let asked = Instant::now();
    let mut raw = Vec::new();
    trickle.read_to_end(&mut raw).await.unwrap();
    let reply = parse_reply(&raw).unwrap();
    assert_eq!(reply.status, 408);
    outcome(&reply);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn every_error_is_an_operation_outcome() {
    let (addr, _dir) = server(HttpLimits::default()).await;
    let token = token_for(addr);
    let bearer = format!("Bearer {token}");
    let long_target = format!("/fhir/Patient?name={}", "a".repeat(9 * 1024));
    let many: Vec<(String, String)> = (0..120)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let big_header = "b".repeat(40 * 1024);
    // (method, target, headers, body, status)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str, u16);
    let cases: Vec<Case<'_>> = vec![
        ("PUT", "/fhir", vec![], "", 405),
        ("DELETE", "/fhir", vec![], "", 405),
        ("BREW", "/fhir/Patient", vec![], "", 405),
        ("DELETE", "/fhir/Patient/p1", vec![], "", 405),
        ("GET", "/fhir/Patient/%FF%FE", vec![], "", 400),
        ("GET", "/fhir/Patient/p1/_history/x/y", vec![], "", 404),
        ("GET", "/nowhere", vec![], "", 404),
        ("GET", &long_target, vec![], "", 414),
        (
            "GET",
            "/fhir/Patient",
            vec![("x-big", big_header.as_str())],
            "",
            431,
        ),
        ("GET", "/fhir/Patient", vec![("authorization", "")], "", 401),
        ("GET", "/fhir/Patient?_format=bogus", vec![], "", 406),
        (
            "GET",
            "/fhir/Patient",
            vec![("accept", "application/fhir+json; fhirVersion=5.0")],
            "",
            406,
        ),
        (
            "POST",
            "/fhir/Observation/$validate",
            vec![("content-type", "text/plain")],
            "hello",
            415,
        ),
        (
            "POST",
            "/fhir/Observation/$validate",
            vec![("content-type", "application/fhir+json")],
            "{not json",
            400,
        ),
        ("GET", "/fhir/Patient?_count=5000", vec![], "", 400),
        ("GET", "/fhir/Patient/nobody", vec![], "", 404),
    ];
    for (method, target, headers, body, status) in &cases {
        let mut headers = headers.clone();
        if !headers.iter().any(|(name, _)| *name == "authorization") {
            headers.push(("authorization", bearer.as_str()));
        }
        let reply = request(addr, method, target, &headers, body).await;
        let shown: String = target.chars().take(60).collect();
        assert_eq!(reply.status, *status, "{method} {shown}");
        let said = outcome(&reply);
        if *target == "/fhir" {
            assert_eq!(
                reply.header("allow"),
                Some("GET,HEAD,POST"),
                "{method} {target}"
            );
            assert!(
                said["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .contains(method),
                "{method} {target}: {said}"
            );
        }
    }
    // Too many header fields.
    let mut too_many: Vec<(&str, &str)> = many
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    too_many.push(("authorization", bearer.as_str()));
    let reply = request(addr, "GET", "/fhir/Patient", &too_many, "").await;
    assert_eq!(reply.status, 431);
    outcome(&reply);
    // An outcome in XML when XML was asked for.
    let reply = request(
        addr,
        "DELETE",
        "/fhir",
        &[
            ("accept", "application/fhir+xml"),
            ("authorization", &bearer),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(
        reply.header("content-type"),
        Some("application/fhir+xml; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&reply.body).contains("<OperationOutcome"));
    // The token endpoint keeps OAuth's own error form.
    let reply = request(
        addr,
        "POST",
        "/auth/token",
        &[("authorization", ""), ("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&reply.body).unwrap()["error"],
        "invalid_request"
    );
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test]
async fn three_hundred_random_hostile_requests_get_outcomes_and_no_5xx() {
    let (addr, _dir) = server(HttpLimits {
        max_body_bytes: 256 * 1024,
        ..HttpLimits::default()
    })
    .await;
    let token = token_for(addr);
    let bearer = format!("Bearer {token}");
    let mut random = Random(0x5eed_1717);
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "X",
    ];
    let segments = [
        "Patient",
        "Observation",
        "p1",
        "Patient",
        "Observation",
        "p1",
        "fhir",
        "$everything",
        "_history",
        "_search",
        "$validate",
        "%FF",
        "%00",
        "..",
        "%2e%2e",
        "Communication",
        "metadata",
        "auth",
        "token",
        "hl7v2",
        "%E3%81%82",
        "x%20y",
        "$lastn",
        "1",
        "_history",
        "Consent",
        "%ZZ",
        "",
        "a;b",
    ];
    let queries = [
        "",
        "?_count=-1",
        "?_format=xml",
        "?name=%FF",
        "?_sort=,,",
        "?code=a,b,c",
        "?date=ge",
        "?_include=*",
        "?x=%",
        "?_elements=id",
        "?patient=p1&patient=p2",
        "?_summary=maybe",
    ];
    let content_types = [
        "application/fhir+json",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/fhir+xml",
        "multipart/form-data; boundary=x",
        "",
    ];
    let bodies = [
        "",
        "{}",
        "[]",
        "null",
        "{\"resourceType\":\"Communication\"}",
        "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{}]}",
        "{\"resourceType\":\"Patient\",\"id\":5}",
        "not json at all",
        "\u{feff}{}",
        "{\"a\":",
    ];
    let mut answered = std::collections::BTreeMap::<u16, usize>::new();
    let mut wrong = Vec::new();
    for round in 0..300 {
        let method = random.pick(&methods);
        let depth = 1 + random.next() % 4;
        let mut target = String::new();
        if !random.next().is_multiple_of(5) {
            target.push_str("/fhir");
        }
        for _ in 0..depth {
            target.push('/');
            target.push_str(random.pick(&segments));
        }
        target.push_str(random.pick(&queries));
        let content_type = random.pick(&content_types);
        let mut body = random.pick(&bodies).to_owned();
        if random.next().is_multiple_of(25) {
            body = "x".repeat(300 * 1024);
        }
        let mut headers: Vec<(&str, &str)> = vec![("content-type", content_type)];
        if !random.next().is_multiple_of(4) {
            headers.push(("authorization", bearer.as_str()));
        } else {
            headers.push(("authorization", ""));
        }
        if random.next().is_multiple_of(5) {
            headers.push(("accept", "application/fhir+xml"));
        }
        let reply = request(addr, method, &target, &headers, &body).await;
        *answered.entry(reply.status).or_default() += 1;
        if reply.status >= 500 {
            wrong.push(format!("{round}: {method} {target}: {}", reply.status));
            continue;
        }
        if reply.status >= 400 && method != "HEAD" {
            let content_type = reply.header("content-type").unwrap_or_default();
            let is_outcome = (content_type.starts_with("application/fhir+json")
                && serde_json::from_slice::<Value>(&reply.body)
                    .is_ok_and(|v| v["resourceType"] == "OperationOutcome"))
                || (content_type.starts_with("application/fhir+xml")
                    && String::from_utf8_lossy(&reply.body).contains("<OperationOutcome"))
                || (target.starts_with("/auth/token")
                    && serde_json::from_slice::<Value>(&reply.body)
                        .is_ok_and(|v| v["error"].is_string()));
            if !is_outcome {
                wrong.push(format!(
                    "{round}: {method} {target} → {} {content_type}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{answered:?}\n{}", wrong.join("\n"));
    println!("answers by status: {answered:?}");
    assert!(
        answered.keys().filter(|status| **status >= 400).count() >= 5,
        "{answered:?}"
    );
}

/// With every connection of the API's listener proven (a newcomer gets 503), the health
/// listener still answers liveness, readiness and metrics, and serves nothing else; once the
/// API's listener stops, it says not ready (draining) and still live.
#[tokio::test]
async fn probes_are_answered_on_the_health_listener_while_the_api_is_full() {
    let (store, _dir) = fresh_store().await;
    let settings = Settings {
        limits: HttpLimits {
            max_connections: 4,
            max_connections_per_peer: 4,
            keep_alive_timeout: Duration::from_secs(30),
            ..HttpLimits::default()
        },
        ..Settings::default()
    };
    let (addr, health, stop) = support::serve_with_health(store, settings, true).await;
    let health = health.unwrap();
    let token = token_for(addr);
    let ask = format!(
        "GET /fhir/Patient?_count=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let mut proven = Vec::new();
    for _ in 0..4 {
        proven.push(proven_from(addr, 1, &ask).await);
    }
    let mut refused = connect_from(addr, 2).await;
    let mut raw = Vec::new();
    let _ = refused.read_to_end(&mut raw).await;
    assert_eq!(parse_reply(&raw).unwrap().status, 503);

    // No token: the health routes need none.
    let probe = |path: &'static str| async move {
        let mut stream = TcpStream::connect(health).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_answer(&mut stream).await
    };
    for (path, status) in [
        ("/health/live", 200),
        ("/health/ready", 200),
        ("/metrics", 200),
        ("/fhir/metadata", 404),
    ] {
        let reply = probe(path).await;
        assert_eq!(reply.status, status, "{path}");
        if path == "/metrics" {
            let text = String::from_utf8_lossy(&reply.body);
            assert!(
                text.contains("tsunagi_connections_open{listener=\"http\"} 4"),
                "{text}"
            );
        }
    }

    stop.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        let reply = probe("/health/ready").await;
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready.status, 503);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("draining"),
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_eq!(probe("/health/live").await.status, 200);
}

/// With a health listener, `/metrics` is served there only: the API's port, which the region's
/// clients reach, answers it 404. Its health routes stay.
#[tokio::test]
async fn metrics_leave_the_api_for_the_health_listener() {
    let (store, _dir) = fresh_store().await;
    let (addr, health, _stop) = support::serve_with_health(store, Settings::default(), true).await;
    let health = health.unwrap();
    // Answered by the health listener: its task has started.
    let scraped = request(health, "GET", "/metrics", &[("authorization", "")], "").await;
    assert_eq!(scraped.status, 200);
    assert!(
        String::from_utf8_lossy(&scraped.body).contains("tsunagi_http_requests_total"),
        "{}",
        String::from_utf8_lossy(&scraped.body)
    );
    let api = request(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(api.status, 404);
    assert!(
        String::from_utf8_lossy(&api.body).contains("served on the health listener"),
        "{}",
        String::from_utf8_lossy(&api.body)
    );
    assert_eq!(
        request(addr, "GET", "/health/ready", &[], "").await.status,
        200
    );
}
