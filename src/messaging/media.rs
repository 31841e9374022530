//! Files: what an upload is (by its first bytes, not by what the client says), the
//! message that carries it, and which stored types may be served as themselves.

use serde_json::{Value, json};

/// How many of a file's first bytes are kept for sniffing its type and dimensions.
pub const HEAD_BYTES: usize = 64 * 1024;

/// Longest file name kept, in characters.
const NAME_CHARS: usize = 255;

/// What a file is, as its first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    /// The type uploaded to the homeserver and put in `info.mimetype`.
    pub mimetype: String,
    /// `m.image`, `m.video`, `m.audio` or `m.file`.
    pub msgtype: &'static str,
    /// Pixels, for images whose header says.
    pub width: Option<u32>,
    /// Pixels, for images whose header says.
    pub height: Option<u32>,
    /// Milliseconds, where the header says (WAV).
    pub duration: Option<u64>,
}

/// The type of a file from `head` (its first bytes); the client's `claimed` type is used
/// only when the bytes say nothing and it claims no image, video or audio type (which
/// clients would render), else `application/octet-stream`.
pub fn sniff(head: &[u8], claimed: Option<&str>) -> Sniffed {
    let known = |mimetype: &str, msgtype| Sniffed {
        mimetype: mimetype.to_owned(),
        msgtype,
        width: None,
        height: None,
        duration: None,
    };
    let image = |mimetype: &str, size: Option<(u32, u32)>| Sniffed {
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        ..known(mimetype, "m.image")
    };
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return image("image/png", png_size(head));
    }
    if at(0, b"\xff\xd8\xff") {
        return image("image/jpeg", jpeg_size(head));
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        let size = (head.len() >= 10).then(|| (le16(head, 6), le16(head, 8)));
        return image("image/gif", size);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return image("image/webp", webp_size(head));
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return Sniffed {
            duration: wav_duration(head),
            ..known("audio/wav", "m.audio")
        };
    }
    if at(0, b"%PDF-") {
        return known("application/pdf", "m.file");
    }
    if at(4, b"ftyp") {
        return match head.get(8..12) {
            Some(b"qt  ") => known("video/quicktime", "m.video"),
            Some(b"M4A ") => known("audio/mp4", "m.audio"),
            _ => known("video/mp4", "m.video"),
        };
    }
    if at(0, b"\x1a\x45\xdf\xa3") {
        return known("video/webm", "m.video");
    }
    if at(0, b"OggS") {
        return known("audio/ogg", "m.audio");
    }
    if at(0, b"fLaC") {
        return known("audio/flac", "m.audio");
    }
    if at(0, b"ID3")
        || (head.len() >= 2 && head[0] == 0xff && matches!(head[1], 0xfb | 0xf3 | 0xf2))
    {
        return known("audio/mpeg", "m.audio");
    }
    if at(0, b"PK\x03\x04") {
        return known("application/zip", "m.file");
    }
    let claimed = claimed.and_then(essence).filter(|t| {
        !(t.starts_with("image/") || t.starts_with("video/") || t.starts_with("audio/"))
    });
    known(
        claimed.as_deref().unwrap_or("application/octet-stream"),
        "m.file",
    )
}

/// The `type/subtype` of a media type, lower case, without parameters; `None` unless it
/// is a well-formed one.
pub fn essence(value: &str) -> Option<String> {
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    (token(kind) && token(sub)).then_some(essence)
}

/// Types served as themselves by the download endpoint: images, video and audio a
/// browser only displays or plays (no SVG, no HTML, nothing with scripts). Everything
/// else is served as `application/octet-stream`, as an attachment.
pub fn is_inert(mimetype: &str) -> bool {
    matches!(
        mimetype,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "video/mp4"
            | "video/webm"
            | "video/ogg"
            | "video/quicktime"
            | "audio/mpeg"
            | "audio/ogg"
            | "audio/wav"
            | "audio/x-wav"
            | "audio/webm"
            | "audio/mp4"
            | "audio/aac"
            | "audio/flac"
            | "audio/opus"
    )
}

/// A file name a client sent, as it is kept: its last path component, without control
/// characters, at most 255 characters; `file` when nothing is left.
pub fn file_name(sent: Option<&str>) -> String {
    let name = sent
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let name: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(NAME_CHARS)
        .collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        "file".to_owned()
    } else {
        name.to_owned()
    }
}

/// The content of the message carrying an uploaded file: `body` is the caption when
/// there is one (with `filename` apart, as Matrix 1.10 has it), else the file name.
pub fn content(
    sniffed: &Sniffed,
    mxc: &str,
    name: &str,
    size: u64,
    caption: Option<&str>,
) -> Value {
    let mut info = json!({"mimetype": sniffed.mimetype, "size": size});
    if let (Some(w), Some(h)) = (sniffed.width, sniffed.height) {
        info["w"] = json!(w);
        info["h"] = json!(h);
    }
    if let Some(duration) = sniffed.duration {
        info["duration"] = json!(duration);
    }
    json!({
        "msgtype": sniffed.msgtype,
        "body": caption.unwrap_or(name),
        "filename": name,
        "url": mxc,
        "info": info,
    })
}

/// The content of a file message as an edit makes it: the same file, a new caption.
pub fn recaptioned(msgtype: &str, media: &crate::store::model::Media, caption: &str) -> Value {
    let mut info = serde_json::Map::new();
    for (key, value) in [
        ("mimetype", media.mimetype.as_ref().map(|m| json!(m))),
        ("size", media.size.map(|n| json!(n))),
        ("w", media.width.map(|n| json!(n))),
        ("h", media.height.map(|n| json!(n))),
        ("duration", media.duration.map(|n| json!(n))),
    ] {
        if let Some(value) = value {
            info.insert(key.to_owned(), value);
        }
    }
    json!({
        "msgtype": msgtype,
        "body": caption,
        "filename": media.name.as_deref().unwrap_or(caption),
        "url": media.mxc,
        "info": info,
    })
}

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn png_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    let be32 = |at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    Some((be32(16)?, be32(20)?))
}

/// The size in the first start-of-frame segment, walking the segments from the start.
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        while *b.get(i)? == 0xff && *b.get(i + 1)? == 0xff {
            i += 1;
        }
        if *b.get(i)? != 0xff {
            return None;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            0xd0..=0xd9 | 0x01 => i += 2,
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                return Some((be16(b, i + 7)?, be16(b, i + 5)?));
            }
            _ => i += 2 + usize::try_from(be16(b, i + 2)?).ok()?,
        }
    }
}

fn webp_size(b: &[u8]) -> Option<(u32, u32)> {
    match b.get(12..16)? {
        b"VP8 " if b.len() >= 30 => Some((le16(b, 26) & 0x3fff, le16(b, 28) & 0x3fff)),
        b"VP8L" => {
            let bits = le32(b, 21)?;
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => {
            let le24 = |at: usize| {
                let x = b.get(at..at + 3)?;
                Some(u32::from_le_bytes([x[0], x[1], x[2], 0]))
            };
            Some((le24(24)? + 1, le24(27)? + 1))
        }
        _ => None,
    }
}

/// The length of a WAV file whose `data` chunk follows the 16-byte PCM `fmt ` chunk.
fn wav_duration(b: &[u8]) -> Option<u64> {
    if b.get(36..40)? != b"data" {
        return None;
    }
    let byte_rate = u64::from(le32(b, 28)?);
    let data = u64::from(le32(b, 40)?);
    (byte_rate > 0).then(|| data * 1000 / byte_rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×2 PNG (header and IHDR only: enough for the sniffer).
    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b
    }

    #[test]
    fn images_are_known_by_their_bytes_with_their_size() {
        assert_eq!(
            sniff(&png(3, 2), Some("text/html")),
            Sniffed {
                mimetype: "image/png".into(),
                msgtype: "m.image",
                width: Some(3),
                height: Some(2),
                duration: None,
            }
        );
        let gif = b"GIF89a\x40\x01\xf0\x00rest";
        let s = sniff(gif, None);
        assert_eq!(
            (s.msgtype, s.width, s.height),
            ("m.image", Some(320), Some(240))
        );
        // A JPEG with an APP0 segment before its baseline frame.
        let mut jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
        jpeg.extend(b"\xff\xc0\x00\x11\x08\x01\xe0\x02\x80\x03");
        let s = sniff(&jpeg, None);
        assert_eq!(
            (s.mimetype.as_str(), s.width, s.height),
            ("image/jpeg", Some(640), Some(480))
        );
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend([0x7f, 0x02, 0x00, 0xdf, 0x01, 0x00]);
        let s = sniff(&vp8x, None);
        assert_eq!(
            (s.mimetype.as_str(), s.width, s.height),
            ("image/webp", Some(640), Some(480))
        );
        // Cut short: an image without a size.
        let s = sniff(&png(3, 2)[..18], None);
        assert_eq!((s.msgtype, s.width), ("m.image", None));
    }

    #[test]
    fn other_types_and_what_clients_claim() {
        assert_eq!(sniff(b"%PDF-1.7\n", None).mimetype, "application/pdf");
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42", None).msgtype, "m.video");
        assert_eq!(sniff(b"OggS\0", None).msgtype, "m.audio");
        let mut wav = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0".to_vec();
        wav.extend(16_000u32.to_le_bytes()); // bytes per second
        wav.extend(b"\x02\0\x10\0data");
        wav.extend(48_000u32.to_le_bytes());
        assert_eq!(sniff(&wav, None).duration, Some(3000));
        let html = sniff(b"<!doctype html><script>", Some("Text/HTML; charset=utf-8"));
        assert_eq!(
            (html.mimetype.as_str(), html.msgtype),
            ("text/html", "m.file")
        );
        // Bytes that are no image are not an image because the client says so.
        let fake = sniff(b"<svg onload=alert(1)>", Some("image/svg+xml"));
        assert_eq!(
            (fake.mimetype.as_str(), fake.msgtype),
            ("application/octet-stream", "m.file")
        );
        assert_eq!(
            sniff(b"x", Some("not a type")).mimetype,
            "application/octet-stream"
        );
        assert!(sniff(b"", None).msgtype == "m.file");
    }

    #[test]
    fn only_inert_types_are_served_as_themselves() {
        assert!(is_inert("image/png"));
        for t in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "application/xhtml+xml",
        ] {
            assert!(!is_inert(t), "{t}");
        }
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(file_name(Some("C:\\Users\\me\\plan.pdf")), "plan.pdf");
        assert_eq!(file_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(file_name(Some("a\u{0}b\nc.txt")), "abc.txt");
        assert_eq!(file_name(Some("..")), "file");
        assert_eq!(file_name(None), "file");
        assert_eq!(file_name(Some(&"я".repeat(300))).chars().count(), 255);
    }

    #[test]
    fn a_caption_is_the_body_with_the_file_name_apart() {
        let png = sniff(&png(3, 2), None);
        let c = content(&png, "mxc://s/m", "a.png", 99, Some("look"));
        assert_eq!(c["body"], "look");
        assert_eq!(c["filename"], "a.png");
        assert_eq!(
            c["info"],
            json!({"mimetype": "image/png", "size": 99, "w": 3, "h": 2})
        );
        assert_eq!(
            content(&png, "mxc://s/m", "a.png", 99, None)["body"],
            "a.png"
        );
        let media = crate::store::model::Media {
            mxc: "mxc://s/m".into(),
            mimetype: Some("image/png".into()),
            size: Some(99),
            name: Some("a.png".into()),
            width: Some(3),
            height: Some(2),
            duration: None,
        };
        assert_eq!(
            recaptioned("m.image", &media, "new"),
            json!({"msgtype": "m.image", "body": "new", "filename": "a.png", "url": "mxc://s/m",
                   "info": {"mimetype": "image/png", "size": 99, "w": 3, "h": 2}})
        );
    }
}
