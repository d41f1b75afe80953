//! JWTs from an OpenID provider (`ORDO_JWT_ISSUER`, `ORDO_JWT_AUDIENCE`,
//! `ORDO_JWT_JWKS`, `ORDO_JWT_USER_CLAIM`).
//!
//! Verified with `jsonwebtoken` (RustCrypto backend; ordo only verifies, so
//! the `rsa` crate's timing advisory on private-key operations does not
//! apply). Only asymmetric algorithms are accepted (RS256, ES256, EdDSA) and
//! only the algorithm of the key the `kid` names: `alg: none`, HS256 signed
//! with a public key and algorithm swaps are refused. `iss`, `aud` and `exp`
//! are required and checked, with [`LEEWAY`] for clocks apart.
//!
//! Keys come from a JWKS file or an https URL (plain http only to a
//! loopback address, for local providers). A token naming a key not in the
//! set makes the verifier read the set again, at most once per
//! [`REFETCH_INTERVAL`]; a URL is also re-read hourly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::scope::Scopes;
use super::{Actor, Caller, Refusal};

/// Clock difference tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Unknown `kid`s re-read the key set at most this often.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// A URL's key set is re-read at least this often.
const REREAD_INTERVAL: Duration = Duration::from_secs(3600);

/// The algorithms accepted.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Where the key set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file.
    File(PathBuf),
    /// An https URL (http to loopback only).
    Url(String),
}

impl JwksSource {
    /// A path, or an `https://` URL; `http://` only to a loopback host.
    pub fn parse(text: &str) -> Result<JwksSource, String> {
        if let Some(rest) = text.strip_prefix("https://") {
            if rest.is_empty() {
                return Err("ORDO_JWT_JWKS: an https URL needs a host".into());
            }
            return Ok(JwksSource::Url(text.to_owned()));
        }
        if let Some(rest) = text.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
                || rest.starts_with("[::1]");
            if !loopback {
                return Err("ORDO_JWT_JWKS: keys are fetched over https (plain http only from a loopback address)".into());
            }
            return Ok(JwksSource::Url(text.to_owned()));
        }
        if text.contains("://") {
            return Err("ORDO_JWT_JWKS: a file path or an https URL".into());
        }
        Ok(JwksSource::File(PathBuf::from(text)))
    }
}

/// How JWTs are checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// The provider's keys.
    pub jwks: JwksSource,
    /// The claim holding a customer's user id.
    pub user_claim: String,
}

#[derive(Debug, Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    /// Keys without a `kid` (a set of one key may omit it).
    unnamed: Vec<(DecodingKey, Algorithm)>,
    read_at: Option<Instant>,
}

/// Checks JWTs; cheap to clone.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    config: Arc<JwtConfig>,
    keys: Arc<Mutex<Keys>>,
    http: reqwest::Client,
    /// Times the key set was read (for tests and `/metrics`).
    reads: Arc<std::sync::atomic::AtomicU64>,
}

/// What goes wrong reading a key set.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the JWT key set ({origin}): {detail}")]
pub struct JwksError {
    origin: String,
    detail: String,
}

impl JwtVerifier {
    /// A verifier whose key set is read now (an error names what is wrong
    /// with it).
    pub async fn new(config: JwtConfig) -> Result<JwtVerifier, JwksError> {
        install_crypto();
        let verifier = JwtVerifier {
            config: Arc::new(config),
            keys: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| JwksError {
                    origin: "client".into(),
                    detail: e.to_string(),
                })?,
            reads: Arc::default(),
        };
        let keys = verifier.read_keys().await?;
        *verifier.keys.lock().await = keys;
        Ok(verifier)
    }

    /// How many times the key set has been read.
    pub fn key_reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn read_keys(&self) -> Result<Keys, JwksError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (source, text) = match &self.config.jwks {
            JwksSource::File(path) => (
                path.display().to_string(),
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| JwksError {
                        origin: path.display().to_string(),
                        detail: e.to_string(),
                    }),
            ),
            JwksSource::Url(url) => (url.clone(), self.fetch(url).await),
        };
        let text = text?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| JwksError {
            origin: source.clone(),
            detail: format!("not a JWKS document: {e}"),
        })?;
        let mut keys = Keys {
            read_at: Some(Instant::now()),
            ..Keys::default()
        };
        for jwk in &set.keys {
            let Some(algorithm) = algorithm_of(jwk) else {
                tracing::warn!(kid = ?jwk.common.key_id, "JWKS: key of an algorithm ordo does not accept; passed over");
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                tracing::warn!(kid = ?jwk.common.key_id, "JWKS: unreadable key; passed over");
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), (key, algorithm));
                }
                None => keys.unnamed.push((key, algorithm)),
            }
        }
        Ok(keys)
    }

    async fn fetch(&self, url: &str) -> Result<String, JwksError> {
        let failed = |detail: String| JwksError {
            origin: url.to_owned(),
            detail,
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("answered {}", response.status())));
        }
        response.text().await.map_err(|e| failed(e.to_string()))
    }

    /// The key for `kid` and `algorithm`, reading the set again when the
    /// `kid` is unknown (at most once per [`REFETCH_INTERVAL`]) or the set
    /// is old.
    async fn key(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<DecodingKey> {
        let mut keys = self.keys.lock().await;
        let age = keys.read_at.map(|at| at.elapsed());
        let stale = matches!(self.config.jwks, JwksSource::Url(_))
            && age.is_none_or(|a| a > REREAD_INTERVAL);
        let known = find(&keys, kid, algorithm).is_some();
        if stale || (!known && age.is_none_or(|a| a >= REFETCH_INTERVAL)) {
            match self.read_keys().await {
                Ok(fresh) => *keys = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "keeping the key set read before");
                    // Not again for a while.
                    keys.read_at = Some(Instant::now());
                }
            }
        }
        find(&keys, kid, algorithm)
    }

    /// The caller a JWT names, or why not.
    pub async fn verify(&self, token: &str) -> Result<Caller, Refusal> {
        let refused = |why: &str| Refusal::Jwt(why.to_owned());
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refused("unreadable header"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(refused("algorithm not accepted"));
        }
        let key = self
            .key(header.kid.as_deref(), header.alg)
            .await
            .ok_or_else(|| refused("no key of that kid and algorithm"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| Refusal::Jwt(format!("{:?}", e.kind())))?;
        let claims = data.claims;
        let scopes = Scopes::known(
            claims
                .scope
                .as_deref()
                .unwrap_or_default()
                .split_whitespace(),
        );
        let user = claims
            .rest
            .get(&self.config.user_claim)
            .and_then(|v| v.as_str())
            .and_then(|v| Uuid::try_parse(v).ok());
        Ok(Caller {
            actor: Actor::Jwt {
                issuer: claims.iss,
                subject: claims.sub,
            },
            scopes,
            user,
            confined: None,
        })
    }
}

fn find(keys: &Keys, kid: Option<&str>, algorithm: Algorithm) -> Option<DecodingKey> {
    let matching = |(key, alg): &(DecodingKey, Algorithm)| (*alg == algorithm).then(|| key.clone());
    match kid {
        Some(kid) => keys.by_kid.get(kid).and_then(matching),
        None => match keys.unnamed.as_slice() {
            [only] => matching(only),
            _ => None,
        },
    }
}

/// The algorithm a JWK is for: its `alg` when it names one, else by key
/// type (RSA: RS256, P-256: ES256, Ed25519: EdDSA). Symmetric keys never.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(named) => {
            let named = named.to_string().parse::<Algorithm>().ok()?;
            (named == by_type).then_some(by_type)
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Makes RustCrypto jsonwebtoken's provider, once per process.
fn install_crypto() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sets_come_from_files_or_https() {
        assert_eq!(
            JwksSource::parse("/etc/ordo/jwks.json"),
            Ok(JwksSource::File("/etc/ordo/jwks.json".into()))
        );
        assert!(matches!(
            JwksSource::parse("https://id.example/jwks"),
            Ok(JwksSource::Url(_))
        ));
        assert!(matches!(
            JwksSource::parse("http://127.0.0.1:9000/jwks"),
            Ok(JwksSource::Url(_))
        ));
        assert!(matches!(
            JwksSource::parse("http://localhost/jwks"),
            Ok(JwksSource::Url(_))
        ));
        assert!(JwksSource::parse("http://id.example/jwks").is_err());
        assert!(JwksSource::parse("http://127.0.0.1.evil.example/jwks").is_err());
        assert!(JwksSource::parse("ftp://id.example/jwks").is_err());
    }

    /// A token naming a key the set does not hold makes the verifier read
    /// the set again, once: another such token within the minute is refused
    /// without reading it again, even though the key has arrived meanwhile.
    #[tokio::test]
    async fn unknown_keys_reread_the_set_at_most_once_a_minute() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use ring::signature::KeyPair as _;
        let key = |kid: &str| {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
            let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()) });
            (pkcs8.as_ref().to_vec(), jwk)
        };
        let (_, old) = key("old");
        let (new_secret, new) = key("new");
        let file = std::env::temp_dir().join(format!("ordo-jwks-test-{}.json", Uuid::now_v7()));
        std::fs::write(&file, serde_json::json!({ "keys": [old] }).to_string()).expect("write");
        let verifier = JwtVerifier::new(JwtConfig {
            issuer: "https://id.test".into(),
            audience: "ordo".into(),
            jwks: JwksSource::File(file.clone()),
            user_claim: "ordo_user_id".into(),
        })
        .await
        .expect("verifier");
        assert_eq!(verifier.key_reads(), 1);
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({ "iss": "https://id.test", "aud": "ordo", "sub": "s",
            "scope": "ops", "exp": now + 300 });
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("new".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&new_secret),
        )
        .expect("sign");
        // Read at start, then "new" is unknown: refused; the set was read
        // again only if a minute has passed since, which it has not.
        assert!(verifier.verify(&token).await.is_err());
        assert_eq!(verifier.key_reads(), 1, "read again within the minute");
        // The provider rotates: the key arrives; within the minute still
        // refused, and the set not read again.
        std::fs::write(&file, serde_json::json!({ "keys": [old, new] }).to_string())
            .expect("write");
        assert!(verifier.verify(&token).await.is_err());
        assert_eq!(verifier.key_reads(), 1);
        // A minute after the last read (set back by hand), the unknown kid
        // makes it read the set, once, and the token is good.
        verifier.keys.lock().await.read_at = Some(Instant::now() - REFETCH_INTERVAL);
        let caller = verifier
            .verify(&token)
            .await
            .expect("the rotated key is read");
        assert_eq!(verifier.key_reads(), 2);
        assert_eq!(caller.actor.to_string(), "jwt:https://id.test#s");
        assert!(verifier.verify(&token).await.is_ok());
        assert_eq!(verifier.key_reads(), 2, "a known kid reads nothing");
        let _ = std::fs::remove_file(&file);
    }
}
