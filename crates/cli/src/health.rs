//! `tsunagi health`: asks a running server whether it is ready (`GET /health/ready`, plain
//! HTTP on loopback, as a container's health check or a script does), and fails unless it
//! answers 200 within the time given. No other tool is needed in the image.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{Context, bail};

/// Checks `url` (`http://host:port/path`).
pub(crate) fn check(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: expected http://host:port/path"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("{authority}: not an address"))?
        .next()
        .with_context(|| format!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("{url}: cannot connect"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .with_context(|| format!("{url}: no answer"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or("");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    if status != "200" {
        bail!("{url}: {status} {body}");
    }
    println!("{body}");
    Ok(())
}
