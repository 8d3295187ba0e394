//! Issue 17 §2 and §6 over real MLLP sockets: a plain-TCP sender is bound to the addresses it
//! is registered at (a message claiming another hospital's MSH-4 gets AR and stores nothing; a
//! connection from an address no sender uses is closed at once), and the listener's per-address
//! cap and frame timeout hold while registered senders keep being answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tsunagi_adapter::listen::MllpIntake;
use tsunagi_adapter_hl7v2::{FeedConfig, Feeds, Intake, IntakeOptions};
use tsunagi_core::{FacilityId, clock::FixedClock, ids::logical_id};
use tsunagi_hl7v2::{
    Message,
    ack::{AckCode, read_ack},
};
use tsunagi_mapping::{CodeTables, pushed::IdentifyRules};
use tsunagi_mllp::ServerOptions;
use tsunagi_store::{Access, Store};
use tsunagi_store_sqlite::SqliteStore;

const SHONAI: &str = "0610100010";
const NIHONKAI: &str = "0610200018";

struct Gateway {
    store: Arc<SqliteStore>,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Shōnai sends from 127.0.0.2, Nihonkai from 127.0.0.3.
async fn gateway(options: ServerOptions) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("feed.db").display());
    let clock = Arc::new(FixedClock(1_764_000_000_000_000));
    let store = Arc::new(SqliteStore::open(&url, clock.clone()).await.unwrap());
    let feed = |facility: &str, sender: &str, address: &str| FeedConfig {
        facility: FacilityId::parse(facility).unwrap(),
        name: None,
        sending_facility: sender.to_owned(),
        sending_application: None,
        clients: Vec::new(),
        addresses: vec![address.parse().unwrap()],
        tables: Arc::new(CodeTables::default()),
        rules: IdentifyRules::default(),
        reports_for: Vec::new(),
    };
    let feeds = Arc::new(Feeds::new(vec![
        feed(SHONAI, "SHONAI", "127.0.0.2/32"),
        feed(NIHONKAI, "NIHONKAI", "127.0.0.3"),
    ]));
    let intake = Intake::start(store.clone(), feeds, clock, IntakeOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(tsunagi_mllp::serve(
        listener,
        None,
        options,
        Arc::new(MllpIntake(Arc::new(intake))),
    ));
    Gateway {
        store,
        address,
        _dir: dir,
    }
}

async fn connect_from(address: SocketAddr, from: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, from]), 0))
        .unwrap();
    socket.connect(address).await.unwrap()
}

fn a08(sender: &str, control_id: &str, patient: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|{sender}|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|{control_id}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||{patient}^^^^PI||Yamada^Taro^^^^^L||19600101|M\r\
         PV1||O\r"
    )
    .into_bytes()
}

/// Sends one framed message; the ACK's code and text, or `None` when the connection closed.
async fn send(stream: &mut TcpStream, message: &[u8]) -> Option<(AckCode, String)> {
    let mut frame = vec![0x0b];
    frame.extend_from_slice(message);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&frame).await.ok()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(&[0x1c, 0x0d]) {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        reply.push(byte[0]);
    }
    let text = String::from_utf8(reply[1..reply.len() - 2].to_vec()).unwrap();
    let ack = read_ack(&Message::parse(&text).unwrap()).unwrap();
    Some((ack.code, ack.text))
}

async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_plain_tcp_sender_is_the_hospital_only_from_its_addresses() {
    let gateway = gateway(ServerOptions::default()).await;
    // Shōnai from its own address: accepted.
    let mut shonai = connect_from(gateway.address, 2).await;
    let (code, _) = send(&mut shonai, &a08("SHONAI", "S1", "1000001"))
        .await
        .unwrap();
    assert_eq!(code, AckCode::AA);
    // Nihonkai's machine writing MSH-4 = SHONAI: refused, nothing stored.
    let mut impostor = connect_from(gateway.address, 3).await;
    let (code, text) = send(&mut impostor, &a08("SHONAI", "X1", "1000002"))
        .await
        .unwrap();
    assert_eq!(code, AckCode::AR);
    assert!(text.contains("does not connect from 127.0.0.3"), "{text}");
    let forged = logical_id(&[SHONAI, "1000002"]);
    assert!(
        gateway
            .store
            .read(&Access::Unrestricted, "Patient", &forged)
            .await
            .unwrap()
            .is_none()
    );
    // Its own messages still go through on the same connection.
    let (code, _) = send(&mut impostor, &a08("NIHONKAI", "N1", "2000001"))
        .await
        .unwrap();
    assert_eq!(code, AckCode::AA);
    // An address no sender is registered at is closed before a byte is read.
    let mut stranger = connect_from(gateway.address, 9).await;
    assert!(
        send(&mut stranger, &a08("SHONAI", "Z1", "1000003"))
            .await
            .is_none()
    );
    assert!(
        gateway
            .store
            .read(
                &Access::Unrestricted,
                "Patient",
                &logical_id(&[SHONAI, "1000003"])
            )
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn per_address_caps_and_frame_timeouts_leave_senders_served() {
    let gateway = gateway(ServerOptions {
        max_connections: 64,
        max_connections_per_peer: 8,
        idle_timeout: Duration::from_secs(30),
        frame_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    })
    .await;
    // Nihonkai's address opens 40 connections that start a frame and never end it.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut stream = connect_from(gateway.address, 3).await;
        let _ = stream.write_all(b"\x0bMSH|^~\\&|HIS|NIHONKAI|").await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Shōnai is answered meanwhile.
    let mut shonai = connect_from(gateway.address, 2).await;
    for number in 0..5 {
        let (code, _) = send(
            &mut shonai,
            &a08("SHONAI", &format!("C{number}"), "1000010"),
        )
        .await
        .unwrap();
        assert_eq!(code, AckCode::AA);
    }
    // Beyond eight, Nihonkai's connections were closed at once; the eight unfinished frames
    // are cut after the frame timeout, nothing stored.
    let started = Instant::now();
    let mut closed = 0;
    for stream in &mut held {
        if closed_within(stream, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 40);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // And Nihonkai can connect again once they are gone.
    let mut nihonkai = connect_from(gateway.address, 3).await;
    let (code, _) = send(&mut nihonkai, &a08("NIHONKAI", "N9", "2000009"))
        .await
        .unwrap();
    assert_eq!(code, AckCode::AA);
}

/// A refused message whose MSH writes `MSA|AA` about itself (the ACK repeats MSH-3 and MSH-4)
/// does not make its connection a proven sender's: at the cap such connections make room for a
/// real sender.
#[tokio::test]
async fn a_refused_message_that_spells_an_ack_proves_nothing() {
    let gateway = gateway(ServerOptions {
        max_connections: 4,
        max_connections_per_peer: 8,
        ..ServerOptions::default()
    })
    .await;
    let mut impostors = Vec::new();
    for number in 0..4 {
        let mut stream = connect_from(gateway.address, 3).await;
        let forged = format!(
            "MSH|^~\\&|MSA|AA|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|F{number}|P|2.5\rPID|||1^^^^PI\r"
        );
        let (code, _) = send(&mut stream, forged.as_bytes()).await.unwrap();
        assert_eq!(code, AckCode::AR);
        impostors.push(stream);
    }
    let mut shonai = connect_from(gateway.address, 2).await;
    let (code, _) = send(&mut shonai, &a08("SHONAI", "R1", "1000020"))
        .await
        .unwrap();
    assert_eq!(code, AckCode::AA, "the real sender got in");
    let mut closed = 0;
    for stream in &mut impostors {
        if closed_within(stream, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "one impostor made room");
}
