//! The secret of an ordo token: `ordo_<id>_<secret>`.
//!
//! - `ordo_` makes a leaked token recognisable (secret scanners, logs).
//! - `<id>`: the token's id, 32 hex digits; it is what the store looks up,
//!   so no lookup ever depends on the secret's bytes.
//! - `<secret>`: 32 random bytes (256 bits), base64url without padding.
//!
//! Only the SHA-256 of the secret is stored; a presented secret's hash is
//! compared with it in constant time. A slow password hash is not needed:
//! 256 random bits cannot be guessed, however fast each guess is.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

/// The prefix of every ordo token.
pub const PREFIX: &str = "ordo_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// A token as handed to its holder, once.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret {
    /// The token's id.
    pub id: Uuid,
    secret: String,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in a debug dump.
        write!(f, "TokenSecret({}, <redacted>)", self.id)
    }
}

impl TokenSecret {
    /// A new token with a fresh id and secret.
    pub fn generate() -> TokenSecret {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        TokenSecret {
            id: Uuid::now_v7(),
            secret: URL_SAFE_NO_PAD.encode(bytes),
        }
    }

    /// The token as its holder sends it.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}_{}", self.id.simple(), self.secret)
    }

    /// Reads a presented token; `None` when it is not shaped like an ordo
    /// token (it may then be a JWT, or garbage).
    pub fn parse(token: &str) -> Option<TokenSecret> {
        let rest = token.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let id = Uuid::try_parse(id).ok()?;
        let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
        if decoded.len() != SECRET_BYTES {
            return None;
        }
        Some(TokenSecret {
            id,
            secret: secret.to_owned(),
        })
    }

    /// What the store keeps of the secret.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.secret.as_bytes()).to_vec()
    }

    /// Whether this secret is the one whose hash is `stored`, compared in
    /// constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        self.hash().ct_eq(stored).into()
    }

    /// A secret chosen by an operator (`ORDO_BOOTSTRAP_TOKEN_FILE`) must be
    /// a token of this shape, so that it is as strong as a generated one.
    pub fn from_operator(text: &str) -> Result<TokenSecret, String> {
        TokenSecret::parse(text.trim()).ok_or_else(|| {
            format!(
                "a token must look like {PREFIX}<32 hex digits>_<43 base64url characters> \
                 (256 random bits); `ordo token generate` prints one"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_generated_token_reads_back_and_matches_only_its_hash() {
        let token = TokenSecret::generate();
        let text = token.expose();
        assert!(text.starts_with("ordo_"));
        assert_eq!(text.len(), 5 + 32 + 1 + 43);
        let read = TokenSecret::parse(&text).unwrap();
        assert_eq!(read, token);
        assert!(read.matches(&token.hash()));
        assert!(!read.matches(&TokenSecret::generate().hash()));
        assert!(!read.matches(&[]));
    }

    #[test]
    fn two_tokens_never_share_id_or_secret() {
        let a = TokenSecret::generate();
        let b = TokenSecret::generate();
        assert_ne!(a.id, b.id);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn misshapen_tokens_are_not_ordo_tokens() {
        let good = TokenSecret::generate().expose();
        for bad in [
            "",
            "ordo_",
            "ordo__",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &good.replacen("ordo_", "odro_", 1),
            &good.replacen('_', "-", 2),
            "ordo_0123456789abcdef0123456789abcdeg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "eyJhbGciOiJSUzI1NiJ9.e30.sig",
        ] {
            assert!(TokenSecret::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let token = TokenSecret::generate();
        let text = token.expose();
        let secret = text.rsplit('_').next().unwrap();
        assert!(!format!("{token:?}").contains(secret));
    }
}
