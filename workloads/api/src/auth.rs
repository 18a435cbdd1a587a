//! Bearer-token authentication: verifies a JWT signed with HS256 (a shared
//! secret) or RS256 (an RSA public key in PEM), requires `exp`, and turns the
//! claims into a [`Caller`]: `sub` is the user id (a decimal `u64`) and the
//! `scope` claim (a space-separated string or an array) grants the admin scope.
//! Every failure is one [`AuthError`] that the HTTP layer answers with 401.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// How tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`--jwt-secret`).
    Hs256,
    /// RSA-SHA256, verified with a public key (`--jwt-public-key-file`).
    Rs256,
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The user id from `sub`.
    pub user_id: u64,
    /// Whether the token carries the admin scope (read anyone's purchases).
    pub admin: bool,
}

impl Caller {
    /// Whether the caller may read `owner`'s purchases.
    pub fn may_read(&self, owner: u64) -> bool {
        self.admin || self.user_id == owner
    }
}

/// The verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// HS256 without a secret.
    #[error(
        "PAYSTREAM_JWT_SECRET (--jwt-secret) is not set; HS256 needs a secret of at least 32 bytes"
    )]
    NoSecret,
    /// A secret too short to be safe.
    #[error("PAYSTREAM_JWT_SECRET (--jwt-secret) is {0} bytes long; HS256 needs at least 32 bytes")]
    ShortSecret(usize),
    /// RS256 without a key file.
    #[error("--jwt-algorithm rs256 needs --jwt-public-key-file")]
    NoPublicKey,
    /// The PEM could not be used.
    #[error("the RS256 public key is not a usable PEM: {0}")]
    BadPem(String),
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("the request has no Authorization header; send 'Authorization: Bearer <token>'")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be 'Bearer <token>'")]
    NotBearer,
    /// Signature, expiry, algorithm or format rejected.
    #[error("the bearer token was rejected: {0}")]
    Invalid(String),
    /// `sub` is not a user id.
    #[error("the token's subject must be a user id (a positive integer)")]
    BadSubject,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scope {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<Scope>,
}

/// Verifies tokens; cheap to share.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    admin_scope: String,
}

/// What the verifier is built from.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Algorithm.
    pub algorithm: JwtAlgorithm,
    /// HS256 secret.
    pub secret: Option<String>,
    /// RS256 public key, PEM.
    pub public_key_pem: Option<Vec<u8>>,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// The scope that grants admin reads.
    pub admin_scope: String,
}

impl Verifier {
    /// Builds a verifier; refuses a missing or weak key.
    pub fn new(c: &VerifierConfig) -> Result<Self, KeyError> {
        let (alg, key) = match c.algorithm {
            JwtAlgorithm::Hs256 => {
                let s = c.secret.as_deref().ok_or(KeyError::NoSecret)?;
                if s.len() < 32 {
                    return Err(KeyError::ShortSecret(s.len()));
                }
                (Algorithm::HS256, DecodingKey::from_secret(s.as_bytes()))
            }
            JwtAlgorithm::Rs256 => {
                let pem = c.public_key_pem.as_deref().ok_or(KeyError::NoPublicKey)?;
                let key =
                    DecodingKey::from_rsa_pem(pem).map_err(|e| KeyError::BadPem(e.to_string()))?;
                (Algorithm::RS256, key)
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = c.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        match &c.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            key,
            validation,
            admin_scope: c.admin_scope.clone(),
        })
    }

    /// Authenticates the value of an `Authorization` header.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthError> {
        let raw = authorization.ok_or(AuthError::Missing)?;
        let token = bearer(raw).ok_or(AuthError::NotBearer)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let user_id = parse_subject(&claims.sub).ok_or(AuthError::BadSubject)?;
        let admin = match &claims.scope {
            None => false,
            Some(Scope::Text(s)) => s.split_ascii_whitespace().any(|x| x == self.admin_scope),
            Some(Scope::List(v)) => v.contains(&self.admin_scope),
        };
        Ok(Caller { user_id, admin })
    }
}

fn bearer(raw: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(raw).ok()?;
    let (scheme, token) = s.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn parse_subject(sub: &str) -> Option<u64> {
    if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    sub.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs() -> Verifier {
        Verifier::new(&VerifierConfig {
            algorithm: JwtAlgorithm::Hs256,
            secret: Some(SECRET.into()),
            public_key_pem: None,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            admin_scope: "admin".into(),
        })
        .unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn accepts_a_good_token_and_reads_scopes() {
        let v = hs();
        let t = token(serde_json::json!({"sub": "42", "exp": exp()}), SECRET);
        let c = v.verify(Some(format!("Bearer {t}").as_bytes())).unwrap();
        assert_eq!(
            c,
            Caller {
                user_id: 42,
                admin: false
            }
        );
        assert!(c.may_read(42) && !c.may_read(43));
        let t = token(
            serde_json::json!({"sub": "1", "exp": exp(), "scope": "read admin"}),
            SECRET,
        );
        assert!(
            v.verify(Some(format!("bearer {t}").as_bytes()))
                .unwrap()
                .admin
        );
        let t = token(
            serde_json::json!({"sub": "1", "exp": exp(), "scope": ["admin"]}),
            SECRET,
        );
        assert!(
            v.verify(Some(format!("Bearer {t}").as_bytes()))
                .unwrap()
                .may_read(9)
        );
    }

    #[test]
    fn rejects_bad_tokens() {
        let v = hs();
        assert_eq!(v.verify(None), Err(AuthError::Missing));
        assert_eq!(v.verify(Some(b"Basic abc")), Err(AuthError::NotBearer));
        assert_eq!(v.verify(Some(b"Bearer ")), Err(AuthError::NotBearer));
        let wrong = token(
            serde_json::json!({"sub": "1", "exp": exp()}),
            "another-secret-another-secret-xx",
        );
        assert!(matches!(
            v.verify(Some(format!("Bearer {wrong}").as_bytes())),
            Err(AuthError::Invalid(_))
        ));
        let expired = token(serde_json::json!({"sub": "1", "exp": 1000}), SECRET);
        assert!(matches!(
            v.verify(Some(format!("Bearer {expired}").as_bytes())),
            Err(AuthError::Invalid(_))
        ));
        let no_exp = token(serde_json::json!({"sub": "1"}), SECRET);
        assert!(matches!(
            v.verify(Some(format!("Bearer {no_exp}").as_bytes())),
            Err(AuthError::Invalid(_))
        ));
        for sub in ["abc", "0", "-1", "99999999999999999999999"] {
            let t = token(serde_json::json!({"sub": sub, "exp": exp()}), SECRET);
            assert_eq!(
                v.verify(Some(format!("Bearer {t}").as_bytes())),
                Err(AuthError::BadSubject),
                "{sub}"
            );
        }
        assert!(matches!(
            v.verify(Some(b"Bearer not.a.jwt")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_weak_or_missing_keys() {
        let mut c = VerifierConfig {
            algorithm: JwtAlgorithm::Hs256,
            secret: Some("short".into()),
            public_key_pem: None,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            admin_scope: "admin".into(),
        };
        assert!(matches!(Verifier::new(&c), Err(KeyError::ShortSecret(5))));
        // One line that names the variable and the minimum.
        assert_eq!(
            KeyError::ShortSecret(5).to_string(),
            "PAYSTREAM_JWT_SECRET (--jwt-secret) is 5 bytes long; HS256 needs at least 32 bytes"
        );
        c.algorithm = JwtAlgorithm::Rs256;
        assert!(matches!(Verifier::new(&c), Err(KeyError::NoPublicKey)));
        c.public_key_pem = Some(b"not pem".to_vec());
        assert!(matches!(Verifier::new(&c), Err(KeyError::BadPem(_))));
    }
}
