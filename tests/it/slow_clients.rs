//! Clients that hold connections without finishing a request.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{Bridge, env};

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let bridge = Bridge::start().await;
    let mut slow = tokio::net::TcpStream::connect(env().bridge_addr)
        .await
        .unwrap();
    // The start of a request, and then nothing more.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        city_bridge::app::HEADER_READ_TIMEOUT + Duration::from_secs(10),
        slow.read_to_end(&mut answer),
    )
    .await;
    assert!(
        read.is_ok(),
        "the connection is still open {:?} later",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= city_bridge::app::HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "not before the timeout"
    );
    // A client that sends its request in time is served as ever.
    let response = reqwest::get(format!("{}/healthz", bridge.url()))
        .await
        .unwrap();
    assert!(response.status().is_success() || response.status().as_u16() == 503);
    bridge.stop().await;
}
