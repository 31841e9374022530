//! The homeserver client: the `as_token`, `?user_id=` masquerading, timeouts, and the one
//! retry policy of the crate ([`Homeserver::send`] and [`classify`]).

use std::{borrow::Cow, collections::BTreeSet, time::Duration};

use bytes::Bytes;
use http::StatusCode;
use ruma::{
    OwnedUserId, UserId,
    api::{
        AppserviceUserIdentity, EndpointError as _, IncomingResponseExt as _, MatrixVersion,
        OutgoingRequest, OutgoingRequestAppserviceExt as _, SupportedVersions,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::{account::whoami, appservice::request_ping},
        error::{Error as MatrixApiError, ErrorKind, RetryAfter},
        path_builder::PathBuilder,
    },
};
use tracing::debug;

use crate::secret::Secret;

/// Why a call to the homeserver failed, classified for retry.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    /// The homeserver could not be reached (connection refused, timeout, reset).
    #[error("unreachable: {0}")]
    Network(#[source] reqwest::Error),
    /// The homeserver kept answering 5xx or 429 until the retries ran out.
    #[error("unavailable: HTTP {status}")]
    Unavailable {
        /// The last status seen.
        status: StatusCode,
    },
    /// The homeserver refused the request; retrying would not help.
    #[error("refused: HTTP {status}: {errcode}")]
    Refused {
        /// The status code.
        status: StatusCode,
        /// The Matrix error kind, when the body had one.
        kind: Option<ErrorKind>,
        /// The `errcode`, for logs.
        errcode: String,
    },
    /// The homeserver answered something that is not the expected response.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The request could not be built (a bug or an unusable base URL).
    #[error("cannot build request: {0}")]
    Request(String),
}

impl HomeserverError {
    /// The Matrix error kind of a refusal.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Refused { kind, .. } => kind.as_ref(),
            _ => None,
        }
    }

    /// The HTTP status of a refusal or of the last unavailable answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } | Self::Unavailable { status } => Some(*status),
            _ => None,
        }
    }

    /// Whether the homeserver could not be reached or was unavailable, as opposed to
    /// refusing the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Network(_) | Self::Unavailable { .. })
    }
}

/// How often and how long a failed call is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of one delay, `retry_after_ms` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub const ONCE: Self = Self {
        attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    fn backoff(&self, retry: u32) -> Duration {
        self.base_delay
            .saturating_mul(1 << retry.min(16))
            .min(self.max_delay)
    }
}

/// What to do with one attempt's outcome.
enum Outcome {
    Done(http::Response<Bytes>),
    Retry {
        delay: Option<Duration>,
        error: HomeserverError,
    },
    Fail(HomeserverError),
}

/// Classifies an HTTP outcome: network errors and 5xx are transient, 429 waits
/// `retry_after_ms`, any other 4xx is permanent.
fn classify(result: Result<http::Response<Bytes>, reqwest::Error>) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            return Outcome::Retry {
                delay: None,
                error: HomeserverError::Network(error),
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Done(response);
    }
    let (parts, body) = response.into_parts();
    let parsed =
        MatrixApiError::from_http_response(http::Response::from_parts(parts, body.as_ref()));
    let kind = parsed.error_kind().cloned();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let delay = match &kind {
            Some(ErrorKind::LimitExceeded(data)) => match data.retry_after {
                Some(RetryAfter::Delay(d)) => Some(d),
                Some(RetryAfter::DateTime(at)) => Some(
                    at.duration_since(std::time::SystemTime::now())
                        .unwrap_or_default(),
                ),
                None => None,
            },
            _ => None,
        };
        return Outcome::Retry {
            delay,
            error: HomeserverError::Unavailable { status },
        };
    }
    if status.is_server_error() {
        return Outcome::Retry {
            delay: None,
            error: HomeserverError::Unavailable { status },
        };
    }
    let errcode = kind
        .as_ref()
        .map_or_else(|| "(no errcode)".to_owned(), |k| k.errcode().to_string());
    Outcome::Fail(HomeserverError::Refused {
        status,
        kind,
        errcode,
    })
}

/// The error of a homeserver's answer that is not a success (the call is not retried).
pub(super) fn classify_refusal(status: StatusCode, body: &Bytes) -> HomeserverError {
    let mut response = http::Response::new(body.clone());
    *response.status_mut() = status;
    match classify(Ok(response)) {
        Outcome::Retry { error, .. } | Outcome::Fail(error) => error,
        Outcome::Done(_) => HomeserverError::InvalidResponse(format!("HTTP {status}")),
    }
}

/// The homeserver, seen from the appservice.
#[derive(Debug, Clone)]
pub struct Homeserver {
    http: reqwest::Client,
    /// For streamed media: no total timeout (a large file takes as long as it takes), a
    /// read timeout instead.
    pub(super) media_http: reqwest::Client,
    pub(super) base_url: String,
    pub(super) as_token: Secret,
    pub(super) versions: SupportedVersions,
    retry: RetryPolicy,
}

impl Homeserver {
    /// A client of the homeserver at `base_url` that authenticates with `as_token`.
    pub fn new(base_url: &str, as_token: Secret, retry: RetryPolicy) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("the TLS backend initialises");
        let media_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("the TLS backend initialises");
        Self {
            http,
            media_http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            as_token,
            versions: SupportedVersions {
                versions: BTreeSet::from([MatrixVersion::V1_11]),
                features: BTreeSet::new(),
            },
            retry,
        }
    }

    /// The same client with another retry policy.
    #[must_use]
    pub fn with_retry(&self, retry: RetryPolicy) -> Self {
        Self {
            retry,
            ..self.clone()
        }
    }

    /// Sends `request` as the appservice, or as `as_user` (masquerading) when given,
    /// retrying as the [`RetryPolicy`] says.
    pub async fn send<R>(
        &self,
        request: R,
        as_user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, HomeserverError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let identity = as_user.map(AppserviceUserIdentity::new).unwrap_or_default();
        let endpoint = endpoint_name::<R>();
        let started = std::time::Instant::now();
        let mut retry = 0;
        let record = |status: String, retries: u32| {
            crate::metrics::metrics().call(endpoint, status, started.elapsed(), retries);
        };
        loop {
            let http_request = request
                .clone()
                .try_into_http_request_with_identity::<Vec<u8>>(
                    &self.base_url,
                    SendAccessToken::Appservice(self.as_token.expose()),
                    identity,
                    Cow::Borrowed(&self.versions),
                )
                .map_err(|e| HomeserverError::Request(e.to_string()))?;
            let path = http_request.uri().path().to_owned();
            match classify(self.execute(http_request).await) {
                Outcome::Done(response) => {
                    record(response.status().as_u16().to_string(), retry);
                    let (parts, body) = response.into_parts();
                    return R::IncomingResponse::try_from_http_response(
                        http::Response::from_parts(parts, body.as_ref()),
                    )
                    .map_err(|e| HomeserverError::InvalidResponse(e.to_string()));
                }
                Outcome::Fail(error) => {
                    record(status_label(&error), retry);
                    return Err(error);
                }
                Outcome::Retry { delay, error } => {
                    retry += 1;
                    if retry >= self.retry.attempts {
                        record(status_label(&error), retry - 1);
                        return Err(error);
                    }
                    let delay = delay
                        .unwrap_or_else(|| self.retry.backoff(retry - 1))
                        .min(self.retry.max_delay);
                    debug!(%path, %error, ?delay, retry, "retrying homeserver call");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn execute(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Bytes>, reqwest::Error> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let response = self.http.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }

    /// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: asks the homeserver to
    /// ping the appservice back, which also makes it retry its backlog of transactions.
    pub async fn ping(&self, appservice_id: &str) -> Result<Duration, HomeserverError> {
        let response = self
            .send(
                request_ping::v1::Request::new(appservice_id.to_owned()),
                None,
            )
            .await?;
        Ok(response.duration)
    }

    /// `GET /_matrix/client/v3/account/whoami` as the appservice: proves the homeserver
    /// is up and accepts our `as_token`.
    pub async fn whoami(&self) -> Result<OwnedUserId, HomeserverError> {
        Ok(self.send(whoami::v3::Request::new(), None).await?.user_id)
    }
}

/// The endpoint of a request type, for metrics: `message::send_message_event::v3` of
/// `ruma_client_api::message::send_message_event::v3::Request`.
fn endpoint_name<R>() -> &'static str {
    let name = std::any::type_name::<R>();
    let name = name.strip_suffix("::Request").unwrap_or(name);
    name.split_once("::").map_or(name, |(_, rest)| rest)
}

fn status_label(error: &HomeserverError) -> String {
    error
        .status()
        .map_or_else(|| "network".to_owned(), |s| s.as_u16().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Result<http::Response<Bytes>, reqwest::Error> {
        let mut r = http::Response::new(Bytes::from(body.to_owned()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok(r)
    }

    #[test]
    fn retry_classification() {
        assert!(matches!(classify(response(200, "{}")), Outcome::Done(_)));
        assert!(matches!(
            classify(response(502, "bad gateway")),
            Outcome::Retry { delay: None, .. }
        ));
        match classify(response(
            429,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}"#,
        )) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, Some(Duration::from_millis(1500))),
            _ => panic!("429 must be retried"),
        }
        match classify(response(
            400,
            r#"{"errcode":"M_ROOM_IN_USE","error":"taken"}"#,
        )) {
            Outcome::Fail(e) => assert!(matches!(e.kind(), Some(ErrorKind::RoomInUse)), "{e}"),
            _ => panic!("4xx is permanent"),
        }
    }

    #[test]
    fn endpoints_are_named_by_their_module() {
        assert_eq!(
            endpoint_name::<ruma::api::client::account::whoami::v3::Request>(),
            "account::whoami::v3"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(0), Duration::from_millis(200));
        assert_eq!(policy.backoff(1), Duration::from_millis(400));
        assert_eq!(policy.backoff(30), Duration::from_secs(5));
    }
}
