//! `GET /api/messaging/search`: full-text search over the channels a person may read.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{MAX_PAGE, Person, rate_limit};
use crate::{
    app::AppState,
    error::ApiError,
    store::{SearchHit, channel_id},
};

/// `?q=&channel_id=&limit=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Words; each matches as a prefix.
    q: Option<String>,
    /// Only this channel.
    channel_id: Option<String>,
    /// 1–100, default 20.
    limit: Option<i64>,
}

/// `{"results": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// Best first.
    pub results: Vec<SearchHit>,
}

/// # `GET /api/messaging/search`
///
/// Over the previews of the channels the caller may read, never encrypted ones.
#[utoipa::path(get, path = "/api/messaging/search", tag = "messaging", params(SearchQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SearchResults), (status = 422, description = "no query, or no word of 2 letters"),
        (status = 429, description = "rate limited; see Retry-After"),
        (status = 503, description = "searches busy or too slow (`busy`): try again")))]
pub async fn search(
    State(state): State<AppState>,
    person: Person,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResults>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let q = query.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() || q.chars().count() > 200 {
        return Err(ApiError::invalid("q", "must be 1 to 200 characters"));
    }
    if !crate::store::searchable(q) {
        return Err(ApiError::invalid(
            "q",
            "must hold a word of at least 2 letters (words of 3 or more match as prefixes)",
        ));
    }
    let limit = query.limit.unwrap_or(20);
    if limit < 1 {
        return Err(ApiError::invalid("limit", "must be 1 to 100"));
    }
    let channel = match query.channel_id.as_deref() {
        Some(id) => Some(channel_id(id).ok_or_else(ApiError::not_found)?),
        None => None,
    };
    rate_limit(
        &state,
        "searches",
        &[(
            &format!("search:u:{}", person.user_id),
            state.config.rates.searches_per_user,
        )],
    )?;
    let results = state
        .store
        .search(
            q,
            channel.as_ref(),
            person.user_id.as_str(),
            person.admin,
            limit.min(MAX_PAGE),
        )
        .await?;
    Ok(Json(SearchResults { results }))
}
