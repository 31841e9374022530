//! Bearer tokens and JWTs: read from the `Authorization` header only, never logged;
//! secrets are compared by [`crate::secret::Secret::matches`], in constant time.

use http::{HeaderMap, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The claims of a DAARION user JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user, e.g. `user:alice`.
    pub sub: String,
    /// Roles; `admin` may manage city rooms.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user's Matrix id, when it is not `@<name>:<server>` of `sub = "user:<name>"`.
    #[serde(default)]
    pub matrix_user_id: Option<String>,
    /// When the token ends, in seconds since the Unix epoch (required: a token without one
    /// is refused). Whatever it grants ends then, live connections included.
    pub exp: i64,
}

impl Claims {
    /// Whether the user is an admin.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// How long the token is still valid: zero once its `exp` has passed (a token within
    /// the verification leeway of 60 s past its `exp` is accepted, but has nothing left).
    pub fn valid_for(&self) -> std::time::Duration {
        let left = self
            .exp
            .saturating_mul(1000)
            .saturating_sub(chrono::Utc::now().timestamp_millis());
        std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }
}

/// Verifies an HS256 JWT (signature and `exp`) and returns its claims.
pub fn verify_jwt(token: &str, secret: &str) -> Option<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    // DAARION tokens may name an audience; the bridge is not one it checks.
    validation.validate_aud = false;
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()
    .map(|data| data.claims)
}

/// Signs an HS256 user JWT (for `city-bridge dev-token`).
pub fn sign_jwt(
    sub: &str,
    roles: &[&str],
    valid_for: chrono::Duration,
    secret: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = serde_json::json!({
        "sub": sub,
        "roles": roles,
        "exp": (chrono::Utc::now() + valid_for).timestamp(),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts() {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let exp = chrono::Utc::now().timestamp() + 600;
        let make = |claims: serde_json::Value, secret: &str| {
            encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let admin = make(
            serde_json::json!({"sub": "user:a", "exp": exp, "roles": ["admin"]}),
            "s",
        );
        assert!(verify_jwt(&admin, "s").unwrap().is_admin());
        assert!(verify_jwt(&admin, "other").is_none(), "wrong secret");
        let plain = make(serde_json::json!({"sub": "user:b", "exp": exp}), "s");
        assert!(!verify_jwt(&plain, "s").unwrap().is_admin());
        let expired = make(
            serde_json::json!({"sub": "user:a", "exp": 1000, "roles": ["admin"]}),
            "s",
        );
        assert!(verify_jwt(&expired, "s").is_none(), "expired");
        assert!(verify_jwt("not.a.jwt", "s").is_none());
    }

    #[test]
    fn signed_tokens_verify() {
        let token = sign_jwt("user:alice", &["admin"], chrono::Duration::hours(1), "s").unwrap();
        let claims = verify_jwt(&token, "s").unwrap();
        assert_eq!(claims.sub, "user:alice");
        assert!(claims.is_admin());
        let left = claims.valid_for();
        assert!(
            left > std::time::Duration::from_secs(3590)
                && left <= std::time::Duration::from_secs(3600),
            "{left:?}"
        );
        let just_expired = sign_jwt("user:a", &[], chrono::Duration::seconds(-5), "s").unwrap();
        let within_leeway = verify_jwt(&just_expired, "s").expect("within the leeway");
        assert_eq!(within_leeway.valid_for(), std::time::Duration::ZERO);
        let expired = sign_jwt("user:a", &[], chrono::Duration::hours(-1), "s").unwrap();
        assert!(verify_jwt(&expired, "s").is_none());
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
