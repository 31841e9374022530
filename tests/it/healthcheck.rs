//! `city-bridge healthcheck`, the container image's HEALTHCHECK, run as the built binary:
//! 0 against a running bridge, 1 for an error answer or when nothing listens.

use std::process::Output;

use crate::support::Bridge;

async fn healthcheck(url: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_city-bridge"))
        .args(["healthcheck", "--url", url])
        .output()
        .await
        .expect("run city-bridge healthcheck")
}

#[tokio::test]
async fn healthcheck_exits_0_on_the_bridges_healthz_and_1_otherwise() {
    let bridge = Bridge::start().await;

    let live = healthcheck(&format!("{}/healthz", bridge.url())).await;
    let stdout = String::from_utf8_lossy(&live.stdout);
    assert_eq!(live.status.code(), Some(0), "{live:?}");
    assert!(stdout.contains(r#""status":"ok""#), "{stdout}");

    let not_found = healthcheck(&format!("{}/no-such-path", bridge.url())).await;
    let stderr = String::from_utf8_lossy(&not_found.stderr);
    assert_eq!(not_found.status.code(), Some(1), "{not_found:?}");
    assert!(stderr.contains("404"), "{stderr}");
    bridge.stop().await;

    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{closed}/healthz");
    let refused = healthcheck(&url).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(stderr.contains(&url), "{stderr}");
}
