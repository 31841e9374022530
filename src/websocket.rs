//! The WebSocket protocol as the presence fan-out speaks it, on the socket itself: the
//! upgrade handshake (RFC 6455 §4.2), frames written once and shared by every client
//! (a server's frames are not masked, so one update is the same bytes on every socket),
//! and a reader of what clients send.
//!
//! The other sockets (a channel's feed, a person's) use axum's WebSocket: few clients
//! each, no shared frames to gain from.

use std::io::Cursor;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tungstenite::protocol::frame::{
    FrameHeader,
    coding::{Control, Data, OpCode},
};

use crate::error::{ApiError, ErrorCode};

/// The largest message a client may send (bytes); a larger one closes its socket (1009).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A request to upgrade to a WebSocket, checked: `GET`, `Connection: upgrade`,
/// `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a key. Anything else is a 400
/// with the API's error body (426 when the connection cannot be upgraded at all).
///
/// The router must be served by `app::serve`, which gives hyper the `TcpStream` itself:
/// behind a server that wraps the socket (`axum::serve`), the client gets its 101 and
/// then the connection ends, with an error in the log.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

fn refused(status: StatusCode, detail: &'static str) -> ApiError {
    ApiError::new(status, ErrorCode::Invalid).with_detail(detail)
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        if parts.method != Method::GET
            || !header_has(headers, header::CONNECTION, "upgrade")
            || !header_has(headers, header::UPGRADE, "websocket")
        {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "a WebSocket upgrade (GET with Connection: upgrade, Upgrade: websocket) is required",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|version| version != "13")
        {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing"))?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            refused(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded (HTTP/1.1 is required)",
            )
        })?;
        Ok(Self { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers 101 and, once the client has it, runs `serve` with the TCP socket and any
    /// bytes the client sent after its request.
    pub fn on_upgrade<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(TcpStream, Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "WebSocket upgrade not completed");
                    return;
                }
            };
            // The server loop (`app::serve`) hands hyper the socket itself.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => serve(parts.io.into_inner(), parts.read_buf).await,
                Err(_) => tracing::error!("an upgraded connection that is not a TCP socket"),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(&accept).expect("base64 is a header value"),
                ),
            ],
        )
            .into_response()
    }
}

/// One unmasked, final frame of `opcode` (RFC 6455 §5.2), as a server sends it.
fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut out = BytesMut::with_capacity(header.len(length) + payload.len()).writer();
    header
        .format(length, &mut out)
        .expect("writing to memory does not fail");
    let mut out = out.into_inner();
    out.put_slice(payload);
    out.freeze()
}

/// A text frame, ready for any number of sockets.
pub fn text(payload: &str) -> Bytes {
    frame(OpCode::Data(Data::Text), payload.as_bytes())
}

/// A close frame with its code and reason.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame(OpCode::Control(Control::Close), &payload)
}

/// A pong answering a ping with `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), payload)
}

/// What a client sent, message by message.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A whole text message.
    Text(String),
    /// A ping: answer with a pong of the same payload.
    Ping(Bytes),
    /// A close frame, with its code if it has one: answer with a close, then end.
    Close(Option<u16>),
    /// A binary message, a pong, a frame of an unfinished message: nothing to do.
    Nothing,
}

/// Why a client's socket is closed by the server: the close code to send (RFC 6455 §7.4.1).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Violation {
    /// 1002: not a WebSocket frame a client may send (unmasked, reserved bits or opcodes,
    /// a control frame too long or fragmented, a continuation with nothing to continue).
    Protocol,
    /// 1007: a text message that is not UTF-8.
    NotUtf8,
    /// 1009: a message over [`MAX_MESSAGE`].
    TooBig,
}

impl Violation {
    /// The close frame to send before the connection ends.
    pub fn close_frame(self) -> Bytes {
        match self {
            Self::Protocol => close(1002, "protocol error"),
            Self::NotUtf8 => close(1007, "text must be UTF-8"),
            Self::TooBig => close(1009, "message too big"),
        }
    }
}

/// Reads client frames out of what the socket delivers.
#[derive(Debug, Default)]
pub struct Reader {
    /// Bytes read and not yet taken as frames.
    buffer: BytesMut,
    /// The message being assembled from fragments: whether it is text, and its bytes.
    message: Option<(bool, BytesMut)>,
}

impl Reader {
    /// A reader that starts with `read` (bytes that came with the upgrade request).
    pub fn new(read: Bytes) -> Self {
        Self {
            buffer: BytesMut::from(&read[..]),
            message: None,
        }
    }

    /// Where the socket's next bytes go: at least `want` free bytes.
    pub fn buffer(&mut self, want: usize) -> &mut BytesMut {
        self.buffer.reserve(want);
        &mut self.buffer
    }

    /// The next message the buffered bytes make, if whole; `Ok(None)` when more bytes
    /// are needed.
    pub fn message(&mut self) -> Result<Option<Received>, Violation> {
        loop {
            let mut cursor = Cursor::new(&self.buffer[..]);
            let Some((head, length)) =
                FrameHeader::parse(&mut cursor).map_err(|_| Violation::Protocol)?
            else {
                if self.buffer.is_empty() {
                    // An idle socket holds no buffer.
                    self.buffer = BytesMut::new();
                }
                return Ok(None);
            };
            let length = usize::try_from(length).map_err(|_| Violation::TooBig)?;
            if length > MAX_MESSAGE {
                return Err(Violation::TooBig);
            }
            let header = usize::try_from(cursor.position()).expect("a header is short");
            if self.buffer.len() < header + length {
                return Ok(None);
            }
            let Some(mask) = head.mask else {
                return Err(Violation::Protocol);
            };
            if head.rsv1 || head.rsv2 || head.rsv3 {
                return Err(Violation::Protocol);
            }
            self.buffer.advance(header);
            let mut payload = self.buffer.split_to(length);
            for (n, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[n % 4];
            }
            match head.opcode {
                OpCode::Control(control) => {
                    if !head.is_final || length > 125 {
                        return Err(Violation::Protocol);
                    }
                    match control {
                        Control::Ping => return Ok(Some(Received::Ping(payload.freeze()))),
                        Control::Pong => return Ok(Some(Received::Nothing)),
                        Control::Close => return close_of(&payload).map(Some),
                        Control::Reserved(_) => return Err(Violation::Protocol),
                    }
                }
                OpCode::Data(Data::Reserved(_)) => return Err(Violation::Protocol),
                OpCode::Data(Data::Continue) => {
                    let Some((_, message)) = self.message.as_mut() else {
                        return Err(Violation::Protocol);
                    };
                    if message.len() + payload.len() > MAX_MESSAGE {
                        return Err(Violation::TooBig);
                    }
                    message.unsplit(payload);
                }
                OpCode::Data(data) => {
                    if self.message.is_some() {
                        return Err(Violation::Protocol);
                    }
                    self.message = Some((data == Data::Text, payload));
                }
            }
            if head.is_final {
                let (is_text, message) = self.message.take().expect("a message was begun");
                if !is_text {
                    return Ok(Some(Received::Nothing));
                }
                return String::from_utf8(message.to_vec())
                    .map(|text| Some(Received::Text(text)))
                    .map_err(|_| Violation::NotUtf8);
            }
        }
    }
}

/// A client's close frame: no payload, or a code a peer may send (RFC 6455 §7.4) and a
/// UTF-8 reason.
fn close_of(payload: &[u8]) -> Result<Received, Violation> {
    match payload {
        [] => Ok(Received::Close(None)),
        [_] => Err(Violation::Protocol),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(Violation::Protocol);
            }
            std::str::from_utf8(reason).map_err(|_| Violation::NotUtf8)?;
            Ok(Received::Close(Some(code)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked, as RFC 6455 requires of clients.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(n, b)| b ^ mask[n % 4]));
        out
    }

    fn read(bytes: &[u8]) -> (Vec<Received>, Result<(), Violation>) {
        let mut reader = Reader::new(Bytes::new());
        let mut received = Vec::new();
        // A byte at a time: frames cut anywhere are read whole.
        for byte in bytes {
            reader.buffer(1).put_u8(*byte);
            loop {
                match reader.message() {
                    Ok(Some(message)) => received.push(message),
                    Ok(None) => break,
                    Err(violation) => return (received, Err(violation)),
                }
            }
        }
        (received, Ok(()))
    }

    #[test]
    fn client_messages_are_read_whole_however_the_bytes_arrive() {
        let long = "й".repeat(300);
        let mut bytes = masked(0x81, b"ping");
        bytes.extend(masked(0x89, b"are you there"));
        // A text message in three fragments, a ping between two of them.
        bytes.extend(masked(0x01, &long.as_bytes()[..101]));
        bytes.extend(masked(0x8A, b""));
        bytes.extend(masked(0x00, &long.as_bytes()[101..400]));
        bytes.extend(masked(0x80, &long.as_bytes()[400..]));
        bytes.extend(masked(0x82, &[0, 1, 2]));
        bytes.extend(masked(0x88, &[0x03, 0xE8]));
        let (received, ended) = read(&bytes);
        assert_eq!(ended, Ok(()));
        assert_eq!(
            received,
            [
                Received::Text("ping".to_owned()),
                Received::Ping(Bytes::from_static(b"are you there")),
                Received::Nothing,
                Received::Text(long),
                Received::Nothing,
                Received::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn what_a_client_may_not_send_closes_its_socket_with_the_code_that_says_why() {
        let unmasked = [0x81, 0x04, b'p', b'i', b'n', b'g'];
        let cases: [(Vec<u8>, Violation); 11] = [
            (unmasked.to_vec(), Violation::Protocol),
            (masked(0xC1, b"compressed"), Violation::Protocol),
            (masked(0x83, b"reserved opcode"), Violation::Protocol),
            (masked(0x09, b"fragmented ping"), Violation::Protocol),
            (masked(0x80, b"continues nothing"), Violation::Protocol),
            (masked(0x81, &[0xff, 0xfe]), Violation::NotUtf8),
            (masked(0x82, &vec![0; MAX_MESSAGE + 1]), Violation::TooBig),
            // Close frames: a code cut in half, codes no peer may send, a reason not UTF-8.
            (masked(0x88, &[0x03]), Violation::Protocol),
            (masked(0x88, &1005u16.to_be_bytes()), Violation::Protocol),
            (masked(0x88, &999u16.to_be_bytes()), Violation::Protocol),
            (masked(0x88, &[0x03, 0xE8, 0xff]), Violation::NotUtf8),
        ];
        for (bytes, violation) in cases {
            assert_eq!(read(&bytes).1, Err(violation), "{:x?}", &bytes[..2]);
        }
        // Too big is seen from the header (length and mask), before the bytes come.
        let mut reader = Reader::new(Bytes::new());
        reader
            .buffer(14)
            .put_slice(&[0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(reader.message(), Err(Violation::TooBig));
    }

    #[test]
    fn server_frames_carry_their_length_as_rfc_6455_says() {
        assert_eq!(&text("pong")[..], b"\x81\x04pong");
        let medium = text(&"x".repeat(300));
        assert_eq!(&medium[..4], [0x81, 126, 0x01, 0x2C]);
        assert_eq!(medium.len(), 304);
        let large = text(&"x".repeat(70_000));
        assert_eq!(&large[..2], [0x81, 127]);
        assert_eq!(u64::from_be_bytes(large[2..10].try_into().unwrap()), 70_000);
        assert_eq!(&close(4001, "bye")[..], b"\x88\x05\x0f\xa1bye");
        assert_eq!(&pong(b"hi")[..], b"\x8a\x02hi");
    }
}
