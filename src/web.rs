//! The live city page at `/`: the static files of `web/` (HTML, CSS and JavaScript
//! modules, no build step), embedded in the binary and served to anyone, outside the JWT
//! and outside CORS. The page itself signs in with the user's JWT and calls the REST API
//! and the WebSockets like any other client.

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    /// The name under `/web/` (`index.html` is also `/`).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A strong validator of `body`, computed at compile time.
    etag: &'static str,
}

/// FNV-1a 64 of the bytes: enough to tell two versions of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"<16 hex digits>"`, as an ETag is quoted.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../web/", $name));
        const ETAG: [u8; 18] = etag_of(BODY);
        Asset {
            name: $name,
            content_type: $content_type,
            body: BODY,
            etag: match std::str::from_utf8(&ETAG) {
                Ok(etag) => etag,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

/// Every file of the page.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("media.js", "text/javascript; charset=utf-8"),
    asset!("channels.js", "text/javascript; charset=utf-8"),
    asset!("panels.js", "text/javascript; charset=utf-8"),
];

/// Scripts and styles from this origin only, sockets back to it, no framing: the page
/// handles a token, and message text never becomes markup.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The page's routes: `/` and `/web/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/web/{file}", get(file))
}

/// # `GET /`
async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// # `GET /web/{file}`
async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found().into_response(),
    }
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    // Revalidated on every load (one 304 each): a new bridge never runs with an old script.
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == asset.etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `?token=` must not leak to the sites the page links to.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_own_etag_and_a_text_type() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(asset.content_type.starts_with("text/"), "{}", asset.name);
            assert_eq!(asset.etag.len(), 18);
            assert!(!asset.body.is_empty(), "{}", asset.name);
            for other in &ASSETS[i + 1..] {
                assert_ne!(asset.etag, other.etag, "{} {}", asset.name, other.name);
            }
        }
        assert_eq!(ASSETS[0].name, "index.html");
    }

    #[test]
    fn the_page_loads_only_files_that_are_served() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for script in ["/web/app.js", "/web/style.css"] {
            assert!(html.contains(script), "{script}");
        }
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for import in text.lines().filter_map(|l| l.split(" from './").nth(1)) {
                let name = import.split('\'').next().unwrap();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not served",
                    asset.name
                );
            }
        }
    }
}
