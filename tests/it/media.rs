//! Files against the real stack: uploads through the API reach Matrix clients byte for
//! byte, images from Matrix clients are indexed and served back through the bridge to
//! readers only, and the limits and headers that keep files from doing harm.

use std::time::Duration;

use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{
    Bridge, MatrixUser, alias, api, city_room, count, encode, env, eventually, jwt, unique,
    until_frame,
};

fn token_of(user: &MatrixUser) -> String {
    jwt(&format!("user:{}", user.localpart()), &[])
}

/// A real PNG of `w`×`h` RGB pixels (stored, uncompressed deflate): small, and one that
/// Synapse's thumbnailer and a browser both read.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend([(x * 255 / w) as u8, (y * 255 / h) as u8, 160]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = u16::try_from(block.len()).unwrap();
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A part of a form: its name, its file name and type (for a file), its bytes.
type Part<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

const BOUNDARY: &str = "city-bridge-test-boundary";

/// A `multipart/form-data` body of `parts`.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some((filename, content_type)) => body.extend(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                     Content-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn upload_url(slug: &str) -> String {
    format!(
        "http://{}/api/messaging/channels/{slug}/media",
        env().bridge_addr
    )
}

/// Uploads a form to a channel; the status and the JSON answer.
async fn upload(
    token: &str,
    slug: &str,
    parts: &[Part<'_>],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(upload_url(slug))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form(parts));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A file through the bridge: the status, the headers and the bytes.
async fn download(path_and_query: &str, token: Option<&str>) -> (u16, HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new().get(format!(
        "http://{}/api/messaging/media/{path_and_query}",
        env().bridge_addr
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn media_path(mxc: &str) -> String {
    mxc.strip_prefix("mxc://").expect("an mxc URI").to_owned()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or_default())
}

/// The headers every file is served with.
fn assert_guarded(headers: &HeaderMap) {
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(headers, "content-security-policy"), "sandbox");
    assert!(
        header(headers, "cache-control").starts_with("private"),
        "{headers:?}"
    );
    assert!(!header(headers, "etag").is_empty(), "{headers:?}");
}

#[tokio::test]
async fn a_png_and_a_pdf_uploaded_through_the_api_reach_matrix_clients_byte_for_byte() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Files").await;
    let alice = MatrixUser::register("alice").await;
    let token = token_of(&alice);
    let url = format!(
        "ws://{}/ws/messaging/{slug}?token={token}",
        env().bridge_addr
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");

    // Alice, who has not joined, sends a photo with a caption: she is joined first.
    let image = png(64, 48);
    let caption = unique("панорама");
    let (status, sent) = upload(
        &token,
        &slug,
        &[
            ("text", None, caption.as_bytes()),
            (
                "file",
                Some(("plan.png", "application/octet-stream")),
                &image,
            ),
        ],
        &[],
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["msgtype"], "m.image", "known by its bytes: {sent}");
    assert_eq!(sent["content_preview"], caption.as_str());
    let media = &sent["media"];
    assert_eq!(media["mimetype"], "image/png", "{sent}");
    assert_eq!(media["size"], image.len());
    assert_eq!(
        (media["width"].as_i64(), media["height"].as_i64()),
        (Some(64), Some(48))
    );
    assert_eq!(media["name"], "plan.png");
    assert_eq!(media["duration"], Value::Null);
    let png_mxc = media["mxc"].as_str().expect("an mxc URI").to_owned();
    let created = until_frame(&mut socket, "message.created of the image", |f| {
        f["type"] == "message.created" && f["matrix_event_id"] == sent["matrix_event_id"]
    })
    .await;
    assert_eq!(created["media"]["mxc"], png_mxc.as_str(), "{created}");

    // A PDF, whatever type the client says, is a file.
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
    let (status, sent_pdf) = upload(
        &token,
        &slug,
        &[("file", Some(("city-minutes.pdf", "image/png")), pdf)],
        &[],
    )
    .await;
    assert_eq!(status, 201, "{sent_pdf}");
    assert_eq!(sent_pdf["msgtype"], "m.file");
    assert_eq!(sent_pdf["media"]["mimetype"], "application/pdf");
    assert_eq!(sent_pdf["content_preview"], "city-minutes.pdf");
    let pdf_mxc = sent_pdf["media"]["mxc"].as_str().unwrap().to_owned();

    // Bob, in a Matrix client, sees both from Alice and gets the same bytes from Synapse.
    let bob = MatrixUser::register("bob").await;
    let room_id = bob.join(&alias(&slug)).await.expect("bob joins");
    for (sent, mxc, bytes, msgtype) in [
        (&sent, &png_mxc, &image[..], "m.image"),
        (&sent_pdf, &pdf_mxc, &pdf[..], "m.file"),
    ] {
        let event = bob
            .get(&format!(
                "/v3/rooms/{}/event/{}",
                encode(&room_id),
                encode(sent["matrix_event_id"].as_str().unwrap())
            ))
            .await
            .expect("the event in Synapse");
        assert_eq!(event["sender"], alice.user_id.as_str());
        assert_eq!(event["content"]["msgtype"], msgtype);
        assert_eq!(event["content"]["url"], mxc.as_str());
        assert_eq!(event["content"]["info"]["size"], bytes.len());
        let (status, served) = bob.download(mxc).await;
        assert_eq!(status, 200);
        assert!(served == bytes, "Synapse serves the bytes uploaded");
    }
    assert_eq!(
        bob.get(&format!(
            "/v3/rooms/{}/event/{}",
            encode(&room_id),
            encode(sent["matrix_event_id"].as_str().unwrap())
        ))
        .await
        .unwrap()["content"]["info"],
        json!({"mimetype": "image/png", "size": image.len(), "w": 64, "h": 48})
    );

    // A new caption: the same file, edited as Element would.
    let (status, edited) = api(
        Method::PATCH,
        &format!(
            "/api/messaging/channels/{slug}/messages/{}",
            encode(sent["matrix_event_id"].as_str().unwrap())
        ),
        Some(&token),
        Some(json!({"text": "the new square"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["content_preview"], "the new square");
    assert_eq!(edited["media"], sent["media"], "the file is unchanged");

    // Through the bridge: the image as itself, the PDF as an attachment.
    let (status, headers, served) = download(&media_path(&png_mxc), Some(&token)).await;
    assert_eq!(status, 200);
    assert!(served == image);
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_guarded(&headers);
    let (status, headers, served) = download(&media_path(&pdf_mxc), Some(&token)).await;
    assert_eq!(status, 200);
    assert!(served == pdf);
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert!(
        header(&headers, "content-disposition").starts_with("attachment"),
        "{headers:?}"
    );
    assert_guarded(&headers);
    // A thumbnail, with the token in the query as an <img> sends it; then from the cache.
    let (status, headers, thumb) = download(
        &format!(
            "{}?thumbnail=32x32&method=scale&token={token}",
            media_path(&png_mxc)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&thumb));
    assert!(
        header(&headers, "content-type").starts_with("image/"),
        "{headers:?}"
    );
    assert!(thumb.len() > 8);
    let etag = header(&headers, "etag").to_owned();
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/messaging/media/{}?thumbnail=32x32&method=scale",
            env().bridge_addr,
            media_path(&png_mxc)
        ))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    let (status, _, _) = download(&media_path(&png_mxc), None).await;
    assert_eq!(status, 401, "no token, no file");

    // Search finds the PDF by its name and the photo by its (new) caption.
    for (q, event_id) in [
        ("minutes", &sent_pdf["matrix_event_id"]),
        ("square", &sent["matrix_event_id"]),
    ] {
        eventually("the file searchable", || async {
            let (status, body) = api(
                Method::GET,
                &format!("/api/messaging/search?q={}", encode(q)),
                Some(&token),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["matrix_event_id"] == *event_id)
                .then_some(())
        })
        .await;
    }

    // Deleted: its media is gone from the index, and the bridge no longer serves it.
    let (status, deleted) = api(
        Method::DELETE,
        &format!(
            "/api/messaging/channels/{slug}/messages/{}",
            encode(sent_pdf["matrix_event_id"].as_str().unwrap())
        ),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["redacted"], true);
    assert_eq!(deleted["media"], Value::Null);
    let (status, _, _) = download(&media_path(&pdf_mxc), Some(&token)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_image_from_a_matrix_client_is_indexed_and_served_to_readers_only() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let carol = MatrixUser::register("carol").await;
    let slug = unique("pics");
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&jwt(&format!("user:{}", alice.localpart()), &["admin"])),
        Some(json!({"slug": slug, "name": "Council", "visibility": "private"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let room_id = channel["matrix_room_id"].as_str().unwrap().to_owned();
    let (status, invited) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/members"),
        Some(&token_of(&alice)),
        Some(json!({"member_id": format!("user:{}", bob.localpart())})),
    )
    .await;
    assert_eq!(status, 201, "{invited}");
    bob.join(&room_id).await.expect("bob joins");

    // Bob's client uploads and sends an image, as Element does.
    let image = png(40, 30);
    let mxc = bob.upload("image/png", "view.png", image.clone()).await;
    let event_id = bob
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.image", "body": "view.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": image.len(), "w": 40, "h": 30}}),
        )
        .await
        .expect("send the image");
    // And one that is malformed: recorded, skipped, never in the way.
    let broken = bob
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.image", "body": "broken.png", "url": 5}),
        )
        .await
        .expect("send the broken image");
    let after = bob.send_text(&room_id, "and that was the view").await;

    let alice_token = token_of(&alice);
    let path = format!("/api/messaging/channels/{slug}/messages?limit=100");
    let indexed = eventually("the image and the text after it indexed", || async {
        let (status, page) = api(Method::GET, &path, Some(&alice_token), None).await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap().clone();
        let image = messages
            .iter()
            .find(|m| m["matrix_event_id"] == event_id.as_str())?;
        messages
            .iter()
            .any(|m| m["matrix_event_id"] == after.as_str())
            .then(|| image.clone())
    })
    .await;
    assert_eq!(indexed["msgtype"], "m.image");
    assert_eq!(indexed["content_preview"], "view.png");
    assert_eq!(
        indexed["media"],
        json!({"mxc": mxc, "mimetype": "image/png", "size": image.len(), "name": "view.png",
               "width": 40, "height": 30, "duration": null})
    );
    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM dead_letters WHERE event_id = $1",
            &broken
        )
        .await,
        1,
        "the malformed image is a dead letter"
    );
    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM messages WHERE matrix_event_id = $1",
            &broken
        )
        .await,
        0
    );

    // Alice reads the channel: the bridge serves her Bob's file.
    let (status, headers, served) = download(&media_path(&mxc), Some(&alice_token)).await;
    assert_eq!(status, 200);
    assert!(served == image, "the bytes Bob uploaded");
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_guarded(&headers);

    // Carol may not read it: the file is as absent as one that never was.
    let carol_token = token_of(&carol);
    let (status, _, refused) = download(&media_path(&mxc), Some(&carol_token)).await;
    assert_eq!(status, 404);
    let (status, _, unknown) = download(
        &format!("{}/nosuchmedia0000", env().server_name),
        Some(&carol_token),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        refused, unknown,
        "nothing tells a refused file from a missing one"
    );
    let (status, body) = upload(
        &carol_token,
        &slug,
        &[("file", Some(("x.png", "image/png")), &image)],
        &[],
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

/// The head of an upload whose `Content-Length` says more than the limit, sent without
/// its body: the answer's status line.
async fn declared_too_large(token: &str, slug: &str, length: u64) -> String {
    let mut stream = tokio::net::TcpStream::connect(env().bridge_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /api/messaging/channels/{slug}/media HTTP/1.1\r\nHost: bridge\r\n\
         Authorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answered without the body")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend(&buf[..n]);
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn limits_bad_forms_and_dangerous_files() {
    let bridge = Bridge::start_with(&[
        ("MEDIA_MAX_BYTES", "65536"),
        ("MEDIA_UPLOADS_PER_MINUTE", "4"),
    ])
    .await;
    let slug = city_room(bridge.pool(), "Limits").await;
    let alice = MatrixUser::register("alice").await;
    let token = token_of(&alice);

    // Too large by its Content-Length: refused before a byte of it is read.
    let status_line = declared_too_large(&token, &slug, 10 * 1024 * 1024).await;
    assert!(status_line.contains(" 413 "), "{status_line}");

    // Too large as it streams, with no Content-Length: refused once past the limit.
    let mut body = form(&[("file", Some(("big.bin", "application/octet-stream")), b"")]);
    let tail = body.split_off(body.len() - format!("\r\n--{BOUNDARY}--\r\n").len());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = std::iter::once(Ok(body))
        .chain((0..10).map(|_| Ok(vec![7u8; 16 * 1024])))
        .chain(std::iter::once(Ok(tail)))
        .collect();
    let response = reqwest::Client::new()
        .post(upload_url(&slug))
        .bearer_auth(&token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(response.status(), 413);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["error"], "too_large", "{refused}");

    // Empty, missing, not a form.
    let (status, body) = upload(
        &token,
        &slug,
        &[("file", Some(("e.txt", "text/plain")), b"")],
        &[],
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("file")),
        "{body}"
    );
    let (status, body) = upload(&token, &slug, &[("text", None, b"no file")], &[]).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("file")),
        "{body}"
    );
    let (status, body) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/media"),
        Some(&token),
        Some(json!({"file": "no"})),
    )
    .await;
    assert_eq!(status, 415, "{body}");

    // An HTML page is a file, served as an attachment that nothing renders.
    let html = b"<!doctype html><script>alert(document.cookie)</script>";
    let key = unique("key");
    let (status, sent) = upload(
        &token,
        &slug,
        &[("file", Some(("page.html", "text/html")), html)],
        &[("idempotency-key", &key)],
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(
        (sent["msgtype"].as_str(), sent["media"]["mimetype"].as_str()),
        (Some("m.file"), Some("text/html"))
    );
    let (status, again) = upload(
        &token,
        &slug,
        &[("file", Some(("page.html", "text/html")), html)],
        &[("idempotency-key", &key)],
    )
    .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        again["matrix_event_id"], sent["matrix_event_id"],
        "sent once"
    );
    let (status, headers, served) = download(
        &media_path(sent["media"]["mxc"].as_str().unwrap()),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert!(served == html);
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert!(
        header(&headers, "content-disposition").starts_with("attachment"),
        "{headers:?}"
    );
    assert_guarded(&headers);

    // Four uploads were counted (the refused ones too: the limit is taken before the file
    // is read); the fifth waits.
    let (status, body) = upload(
        &token,
        &slug,
        &[("file", Some(("a.txt", "text/plain")), b"a")],
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );

    // An encrypted channel takes no file: the bridge holds no keys.
    let secret = unique("enc");
    let (status, created) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&token),
        Some(json!({"slug": secret, "name": "Sealed", "visibility": "private", "encrypted": true})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = upload(
        &token,
        &secret,
        &[("file", Some(("a.txt", "text/plain")), b"a")],
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("encrypted_channel")),
        "{body}"
    );
}
