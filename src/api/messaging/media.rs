//! Files: `POST /api/messaging/channels/{id}/media` (an upload as the caller's own Matrix
//! user, then the message carrying it) and `GET /api/messaging/media/{server_name}/{media_id}`
//! (a file, or a thumbnail, to those who may read a channel where it was posted).

use std::path::PathBuf;

use axum::{
    body::Body,
    extract::{Multipart, Query, State, multipart::Field},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use ruma::{OwnedEventId, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use utoipa::{IntoParams, ToSchema};

use super::{
    Person, event_id_field, join_if_needed, limit_message,
    messages::{KEY_TAKEN_OVER_AFTER, idempotency_key, replay},
    puppeting_disabled, random_txn, rate_limit, related_in_channel, sent, text_field,
    user_action_error,
};
use crate::{
    api::extract::ApiPath,
    app::AppState,
    auth::bearer_token,
    error::ApiError,
    matrix::{Thumbnail, is_too_large},
    messaging::{
        Outgoing,
        access::{self, Readable},
        media::{self, HEAD_BYTES},
    },
};

/// What a form may hold beside the file (its other fields and part headers): a request
/// whose `Content-Length` passes `MEDIA_MAX_BYTES` by more is refused before it is read.
pub const FORM_SLACK_BYTES: u64 = 256 * 1024;
/// The longest text field (`text`, `reply_to`, `thread_root`), in bytes.
const MAX_FIELD_BYTES: usize = 64 * 1024;
/// How long a browser may keep a file it was served (files never change; the right to
/// read them may).
const CACHE_SECONDS: u32 = 3600;
/// The largest thumbnail side.
const MAX_THUMBNAIL: u32 = 1600;

/// The form of an upload (`multipart/form-data`), for the OpenAPI document.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file (its type is read from its first bytes).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// A caption, at most 16,000 characters.
    text: Option<String>,
    /// The event id of the message this replies to.
    reply_to: Option<String>,
    /// The event id of the thread's root.
    thread_root: Option<String>,
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        crate::error::ErrorCode::TooLarge,
    )
    .with_field("file")
    .with_detail(format!("files may be at most {max} bytes"))
}

fn bad_form(error: &axum::extract::multipart::MultipartError, max: u64) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(max);
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        crate::error::ErrorCode::BadMultipart,
    )
    .with_detail(error.body_text())
}

fn spool_failed(error: &std::io::Error) -> ApiError {
    tracing::error!(%error, "cannot spool an upload to a temporary file");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::error::ErrorCode::InternalError,
    )
}

/// A file received to a temporary file (Synapse needs its length before its bytes),
/// deleted when dropped; memory holds its first bytes only.
struct Spooled {
    path: PathBuf,
    len: u64,
    head: Vec<u8>,
    name: String,
    claimed_type: Option<String>,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "cannot delete a spooled upload");
        }
    }
}

/// Receives the `file` part to disk, counting: 413 as soon as it passes `max`.
async fn spool(mut field: Field<'_>, max: u64) -> Result<Spooled, ApiError> {
    let path = std::env::temp_dir().join(format!("city-bridge-upload-{}", random_txn()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| spool_failed(&e))?;
    let mut spooled = Spooled {
        path,
        len: 0,
        head: Vec::new(),
        name: media::file_name(field.file_name()),
        claimed_type: field.content_type().map(ToOwned::to_owned),
    };
    while let Some(chunk) = field.chunk().await.map_err(|e| bad_form(&e, max))? {
        spooled.len += chunk.len() as u64;
        if spooled.len > max {
            return Err(too_large(max));
        }
        let room = HEAD_BYTES
            .saturating_sub(spooled.head.len())
            .min(chunk.len());
        spooled.head.extend_from_slice(&chunk[..room]);
        file.write_all(&chunk).await.map_err(|e| spool_failed(&e))?;
    }
    file.flush().await.map_err(|e| spool_failed(&e))?;
    Ok(spooled)
}

/// A small text part.
async fn text_part(mut field: Field<'_>, name: &'static str, max: u64) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| bad_form(&e, max))? {
        if bytes.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(ApiError::invalid(name, "too long"));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(name, "must be UTF-8 text"))
}

/// An upload form, read.
#[derive(Default)]
struct Form {
    file: Option<Spooled>,
    caption: Option<String>,
    reply_to: Option<OwnedEventId>,
    thread_root: Option<OwnedEventId>,
}

async fn read_form(multipart: &mut Multipart, max: u64) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad_form(&e, max))?
    {
        match field.name() {
            Some("file") if form.file.is_some() => {
                return Err(ApiError::invalid("file", "send one file"));
            }
            Some("file") => form.file = Some(spool(field, max).await?),
            Some("text") => {
                let text = text_part(field, "text", max).await?;
                if !text.trim().is_empty() {
                    text_field(&text)?;
                    form.caption = Some(text);
                }
            }
            Some("reply_to") => {
                let id = text_part(field, "reply_to", max).await?;
                form.reply_to = event_id_field("reply_to", Some(&id))?;
            }
            Some("thread_root") => {
                let id = text_part(field, "thread_root", max).await?;
                form.thread_root = event_id_field("thread_root", Some(&id))?;
            }
            _ => drop(text_part(field, "other", max).await),
        }
    }
    Ok(form)
}

/// What is left of a form, read and dropped.
async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

/// A spooled file as a request body.
async fn file_body(spooled: &Spooled) -> Result<reqwest::Body, ApiError> {
    let file = tokio::fs::File::open(&spooled.path)
        .await
        .map_err(|e| spool_failed(&e))?;
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let n = file.read_buf(&mut buf).await?;
        Ok::<_, std::io::Error>((n > 0).then(|| (buf.freeze(), file)))
    });
    Ok(reqwest::Body::wrap_stream(chunks))
}

/// # `POST /api/messaging/channels/{id}/media`
///
/// A file (`multipart/form-data`: `file`, and optionally `text`, `reply_to`,
/// `thread_root`) uploaded to the homeserver's media repository as the caller's own Matrix
/// user, then sent as `m.image`, `m.video`, `m.audio` or `m.file` by what its first bytes
/// are. The rules of a text send apply (joining, membership, encryption, `Idempotency-Key`),
/// and a limit of uploads of its own.
#[utoipa::path(post, path = "/api/messaging/channels/{id}/media", tag = "messaging",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    security(("bearer" = [])),
    responses((status = 201, body = crate::store::MessageView), (status = 202, description = "sent, not indexed yet (as for texts)"),
        (status = 400, description = "not a well-formed multipart body"),
        (status = 403, description = "not a member, or archived"),
        (status = 404, description = "no such channel"), (status = 409, description = "encrypted channel, or a request with this Idempotency-Key is being sent"),
        (status = 413, description = "the file is larger than MEDIA_MAX_BYTES (or than the homeserver takes)"),
        (status = 415, description = "not multipart/form-data"),
        (status = 422, description = "no file part, an empty file, or an invalid field"),
        (status = 429, description = "rate limited; see Retry-After"),
        (status = 503, description = "puppeting disabled, or Synapse unavailable")))]
pub async fn upload(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let max = state.config.media_max_bytes;
    person
        .actor()
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max.saturating_add(FORM_SLACK_BYTES)) {
        return Err(too_large(max));
    }
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            crate::error::ErrorCode::NotMultipart,
        )
        .with_detail(format!(
            "send multipart/form-data with a file part ({})",
            e.body_text()
        ))
    })?;
    let answer = upload_form(&state, &person, &id, &headers, &mut multipart).await;
    // What is left of the body (all of it, for a refusal or a replay) is read and dropped,
    // within the route's body limit, so that a client still sending reads the answer
    // rather than a reset connection.
    drain(&mut multipart).await;
    answer
}

/// An upload whose body is a form: the channel's checks, the `Idempotency-Key`, then the
/// upload itself.
async fn upload_form(
    state: &AppState,
    person: &Person,
    id: &str,
    headers: &HeaderMap,
    multipart: &mut Multipart,
) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let channel = person.readable(state, id).await?;
    super::messages::not_encrypted(&channel)?;
    let user = person.user_id.as_str();
    if let Some(key) = &key
        && let Some(held) = state
            .store
            .reserve_send_key(user, key, channel.room.id.as_str(), KEY_TAKEN_OVER_AFTER)
            .await?
    {
        return replay(state, &channel.room, person, held).await;
    }
    let outcome = upload_now(state, &channel, person, multipart, key.as_deref()).await;
    if let Some(key) = &key
        && !matches!(outcome, Ok(Ok(_)))
    {
        state.store.release_send_key(user, key).await?;
    }
    match outcome? {
        Ok(event_id) => sent(state, &channel.room, &event_id, &person.user_id).await,
        Err(refused) => Ok(refused),
    }
}

/// The rest of an upload once its `Idempotency-Key` (if any) is held: limits, joining,
/// the form, the file to the homeserver, the message. `Ok(Err(answer))`: refused before
/// anything was sent (rate limited).
async fn upload_now(
    state: &AppState,
    channel: &Readable,
    person: &Person,
    multipart: &mut Multipart,
    key: Option<&str>,
) -> Result<Result<OwnedEventId, Response>, ApiError> {
    let max = state.config.media_max_bytes;
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let room_id = super::writable_room(state, channel).await?;
    let limited = rate_limit(
        state,
        "uploads",
        &[(
            &format!("upload:u:{}", person.user_id),
            state.config.rates.uploads_per_user,
        )],
    )
    .and_then(|()| limit_message(state, &person.user_id, &channel.room));
    if let Err(limited) = limited {
        return Ok(Err(limited.into_response()));
    }
    join_if_needed(state, channel, person, &room_id).await?;
    let form = read_form(multipart, max).await?;
    let Some(file) = form.file else {
        return Err(ApiError::invalid("file", "a file part is required"));
    };
    if file.len == 0 {
        return Err(ApiError::invalid("file", "the file is empty"));
    }
    related_in_channel(
        state,
        &channel.room,
        [
            ("reply_to", form.reply_to.as_deref()),
            ("thread_root", form.thread_root.as_deref()),
        ],
    )
    .await?;
    let sniffed = media::sniff(&file.head, file.claimed_type.as_deref());
    let mxc = homeserver
        .upload(
            &person.user_id,
            &sniffed.mimetype,
            Some(&file.name),
            file.len,
            file_body(&file).await?,
        )
        .await
        .map_err(|e| {
            if is_too_large(&e) {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    crate::error::ErrorCode::TooLarge,
                )
                .with_field("file")
                .with_detail("the homeserver refuses files this large")
            } else {
                user_action_error(e.into())
            }
        })?;
    // The file is the homeserver's now: the spooled copy goes.
    let (name, len) = (file.name.clone(), file.len);
    drop(file);
    let content = media::content(&sniffed, mxc.as_str(), &name, len, form.caption.as_deref());
    let outgoing = Outgoing::file(
        content,
        form.reply_to.as_deref(),
        form.thread_root.as_deref(),
    )?;
    super::messages::deliver(state, person, homeserver, &room_id, key, &outgoing)
        .await
        .map(Ok)
}

/// What a client needs to know before it uploads.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct MediaConfig {
    /// The largest file accepted, in bytes (`MEDIA_MAX_BYTES`).
    pub max_bytes: u64,
    /// Uploads a user may make per minute (`MEDIA_UPLOADS_PER_MINUTE`).
    pub uploads_per_minute: u32,
}

/// # `GET /api/messaging/media/config`
///
/// The upload limits, so that a client can refuse a file too large before sending it.
#[utoipa::path(get, path = "/api/messaging/media/config", tag = "messaging",
    responses((status = 200, body = MediaConfig)))]
pub async fn config(State(state): State<AppState>) -> axum::Json<MediaConfig> {
    axum::Json(MediaConfig {
        max_bytes: state.config.media_max_bytes,
        uploads_per_minute: state.config.rates.uploads_per_user,
    })
}

/// `?thumbnail=<w>x<h>&method=scale|crop&token=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DownloadQuery {
    /// A thumbnail of about this size (`320x240`; each side 1–1600) instead of the file.
    thumbnail: Option<String>,
    /// `scale` (default: fits within the size) or `crop` (fills it).
    method: Option<String>,
    /// The JWT, for `<img src>` and links, which cannot send `Authorization`.
    token: Option<String>,
}

fn thumbnail_of(query: &DownloadQuery) -> Result<Option<Thumbnail>, ApiError> {
    let crop = match query.method.as_deref() {
        None | Some("scale") => false,
        Some("crop") => true,
        Some(_) => return Err(ApiError::invalid("method", "must be scale or crop")),
    };
    let Some(size) = query.thumbnail.as_deref() else {
        if query.method.is_some() {
            return Err(ApiError::invalid("method", "only with thumbnail"));
        }
        return Ok(None);
    };
    let side = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_THUMBNAIL).contains(n))
    };
    match size.split_once('x').map(|(w, h)| (side(w), side(h))) {
        Some((Some(width), Some(height))) => Ok(Some(Thumbnail {
            width,
            height,
            crop,
        })),
        _ => Err(ApiError::invalid(
            "thumbnail",
            format!("must be <width>x<height>, each 1 to {MAX_THUMBNAIL}"),
        )),
    }
}

fn is_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `person` may read one of the channels where the file was posted.
async fn may_read(state: &AppState, person: &Person, mxc: &str) -> Result<bool, ApiError> {
    for channel in state.store.media_channels(mxc).await? {
        match access::readable(
            &state.store,
            &state.homeserver,
            &channel,
            &person.user_id,
            person.admin,
        )
        .await
        {
            Ok(_) => return Ok(true),
            Err(e) if e.status().is_client_error() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// # `GET /api/messaging/media/{server_name}/{media_id}`
///
/// The file of `mxc://{server_name}/{media_id}` (or `?thumbnail=`), streamed from the
/// homeserver's authenticated media API, to a caller who may read a channel where it was
/// posted (anyone else: 404, as for a file that does not exist). Served as its stored type
/// only for inert images, video and audio; anything else as `application/octet-stream`
/// with `Content-Disposition: attachment`. Always `X-Content-Type-Options: nosniff` and
/// `Content-Security-Policy: sandbox`; `ETag` and `Cache-Control: private`.
#[utoipa::path(get, path = "/api/messaging/media/{server_name}/{media_id}", tag = "messaging",
    params(("server_name" = String, Path, description = "the mxc URI's server"),
        ("media_id" = String, Path, description = "the mxc URI's media id"), DownloadQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "the file, or the thumbnail"),
        (status = 304, description = "If-None-Match matched"),
        (status = 401, description = "no valid JWT (header or ?token=)"),
        (status = 404, description = "no such file in a channel the caller may read"),
        (status = 422, description = "bad thumbnail or method")))]
pub async fn download(
    State(state): State<AppState>,
    ApiPath((server_name, media_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<DownloadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let token = bearer_token(&headers).or(query.token.as_deref());
    let (person, _) = Person::of_token(token, &state)?;
    let thumbnail = thumbnail_of(&query)?;
    let server = ServerName::parse(&server_name).map_err(|_| ApiError::not_found())?;
    if !is_media_id(&media_id) {
        return Err(ApiError::not_found());
    }
    let mxc = format!("mxc://{server}/{media_id}");
    if !may_read(&state, &person, &mxc).await? {
        return Err(ApiError::not_found());
    }
    let etag = match thumbnail {
        None => format!("\"{server}/{media_id}\""),
        Some(t) => format!(
            "\"{server}/{media_id}/{}x{}{}\"",
            t.width,
            t.height,
            if t.crop { "c" } else { "s" }
        ),
    };
    let mut out = HeaderMap::new();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("ids are header-safe"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("private, max-age={CACHE_SECONDS}"))
            .expect("a header value"),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let response = state
        .homeserver
        .download(&server, &media_id, thumbnail)
        .await
        .map_err(|e| {
            if e.status() == Some(StatusCode::NOT_FOUND) {
                ApiError::not_found()
            } else {
                crate::Error::from(e).into()
            }
        })?;
    let stored = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(media::essence);
    let disposition = response
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split_once(';')
                .map_or("", |(_, params)| params)
                .to_owned()
        })
        .unwrap_or_default();
    let (content_type, disposition) = match stored {
        Some(t) if media::is_inert(&t) => (t, format!("inline;{disposition}")),
        _ => (
            "application/octet-stream".to_owned(),
            format!("attachment;{disposition}"),
        ),
    };
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).expect("an essence is header-safe"),
    );
    if let Ok(value) = HeaderValue::from_str(disposition.trim_end_matches(';')) {
        out.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(length) = response.headers().get(header::CONTENT_LENGTH) {
        out.insert(header::CONTENT_LENGTH, length.clone());
    }
    Ok((out, Body::from_stream(response.bytes_stream())).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(thumbnail: Option<&str>, method: Option<&str>) -> DownloadQuery {
        DownloadQuery {
            thumbnail: thumbnail.map(Into::into),
            method: method.map(Into::into),
            token: None,
        }
    }

    #[test]
    fn thumbnails_are_asked_for_by_size_and_method() {
        assert_eq!(thumbnail_of(&query(None, None)).unwrap(), None);
        assert_eq!(
            thumbnail_of(&query(Some("320x240"), Some("crop"))).unwrap(),
            Some(Thumbnail {
                width: 320,
                height: 240,
                crop: true
            })
        );
        for (size, method) in [
            (Some("0x10"), None),
            (Some("10"), None),
            (Some("9999x10"), None),
            (Some("10x10"), Some("fit")),
            (None, Some("crop")),
        ] {
            assert!(
                thumbnail_of(&query(size, method)).is_err(),
                "{size:?} {method:?}"
            );
        }
    }

    #[test]
    fn media_ids_are_plain() {
        assert!(is_media_id("AbC_12-x"));
        for id in ["", "a/b", "a.b", "a%2F"] {
            assert!(!is_media_id(id), "{id}");
        }
    }
}
