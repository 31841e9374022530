//! The media repository: uploading a file as a user and fetching one (or a thumbnail) for
//! the bridge, both streamed. The paths and authentication come from ruma's request types;
//! the bodies are streams, which ruma's `Vec<u8>` bodies are not, so these two calls are
//! made here rather than through [`Homeserver::send`] (and are not retried: a stream is
//! read once).

use std::borrow::Cow;

use http::StatusCode;
use ruma::{
    OwnedMxcUri, ServerName, UInt, UserId,
    api::{
        AppserviceUserIdentity, IncomingResponseExt as _, OutgoingRequest,
        OutgoingRequestAppserviceExt as _,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::{
            authenticated_media::{get_content, get_content_thumbnail},
            media::create_content,
        },
        path_builder::PathBuilder,
    },
    media::Method,
};

use super::{Homeserver, HomeserverError, client::classify_refusal};

/// A thumbnail to ask for instead of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thumbnail {
    /// Wanted width, pixels.
    pub width: u32,
    /// Wanted height, pixels.
    pub height: u32,
    /// Scaled to fit, or cropped to fill.
    pub crop: bool,
}

impl Homeserver {
    /// `POST /_matrix/media/v3/upload` as `user`: `length` bytes of `content_type` read
    /// from `body`; the mxc URI the homeserver gives the file. (Synapse needs the length
    /// up front.) Its 413 is a refusal with that status.
    pub async fn upload(
        &self,
        user: &UserId,
        content_type: &str,
        filename: Option<&str>,
        length: u64,
        body: reqwest::Body,
    ) -> Result<OwnedMxcUri, HomeserverError> {
        let mut request = create_content::v3::Request::new(Vec::new());
        request.content_type = Some(content_type.to_owned());
        request.filename = filename.map(ToOwned::to_owned);
        let response = self
            .stream(request, Some(user), Some((length, body)))
            .await?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(HomeserverError::Network)?;
        let mut http_response = http::Response::new(bytes.as_ref());
        *http_response.status_mut() = status;
        Ok(
            create_content::v3::Response::try_from_http_response(http_response)
                .map_err(|e| HomeserverError::InvalidResponse(e.to_string()))?
                .content_uri,
        )
    }

    /// The file `server_name`/`media_id` (or a thumbnail of it) through the authenticated
    /// media API, as the bridge's own user; the response with its body still to be read.
    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        thumbnail: Option<Thumbnail>,
    ) -> Result<reqwest::Response, HomeserverError> {
        match thumbnail {
            None => {
                let request =
                    get_content::v1::Request::new(media_id.to_owned(), server_name.to_owned());
                self.stream(request, None, None).await
            }
            Some(t) => {
                let mut request = get_content_thumbnail::v1::Request::new(
                    media_id.to_owned(),
                    server_name.to_owned(),
                    UInt::from(t.width),
                    UInt::from(t.height),
                );
                request.method = Some(if t.crop { Method::Crop } else { Method::Scale });
                self.stream(request, None, None).await
            }
        }
    }

    /// Sends `request` (its body replaced by `body` of the given length, when given), once,
    /// on the client without a total timeout; a successful response unread, else the
    /// classified refusal.
    async fn stream<R>(
        &self,
        request: R,
        as_user: Option<&UserId>,
        body: Option<(u64, reqwest::Body)>,
    ) -> Result<reqwest::Response, HomeserverError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, ruma::api::SupportedVersions>>,
    {
        let identity = as_user.map(AppserviceUserIdentity::new).unwrap_or_default();
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base_url,
                SendAccessToken::Appservice(self.as_token.expose()),
                identity,
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| HomeserverError::Request(e.to_string()))?;
        let (parts, _) = http_request.into_parts();
        let mut builder = self
            .media_http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers);
        if let Some((length, body)) = body {
            builder = builder
                .header(http::header::CONTENT_LENGTH, length)
                .body(body);
        }
        let started = std::time::Instant::now();
        let endpoint = if as_user.is_some() {
            "media::create_content::v3"
        } else {
            "authenticated_media::get_content::v1"
        };
        let result = builder.send().await;
        let label = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "network".to_owned(),
        };
        crate::metrics::metrics().call(endpoint, label, started.elapsed(), 0);
        let response = result.map_err(HomeserverError::Network)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        Err(classify_refusal(status, &bytes))
    }
}

/// Whether a refusal is the homeserver's "too large" (HTTP 413).
pub fn is_too_large(error: &HomeserverError) -> bool {
    error.status() == Some(StatusCode::PAYLOAD_TOO_LARGE)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn the_homeservers_413_is_too_large_and_nothing_else_is() {
        let too_large = classify_refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Bytes::from_static(
                br#"{"errcode":"M_TOO_LARGE","error":"Upload request body is too large"}"#,
            ),
        );
        assert!(is_too_large(&too_large), "{too_large}");
        for status in [StatusCode::BAD_REQUEST, StatusCode::BAD_GATEWAY] {
            assert!(!is_too_large(&classify_refusal(status, &Bytes::new())));
        }
    }
}
