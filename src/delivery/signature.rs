//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256
//! of "id.timestamp.body">`, so receivers can use any Standard Webhooks
//! library to check that a request came from us and was not altered.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A webhook's signing key.
#[derive(Clone)]
pub(crate) struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// `whsec_<base64>` (the Standard Webhooks form) or any other text, used as is.
    pub(crate) fn from_secret(secret: &str) -> Result<SigningKey, String> {
        match secret.strip_prefix("whsec_") {
            Some(encoded) => STANDARD
                .decode(encoded)
                .map(SigningKey)
                .map_err(|_| "a whsec_ secret must be base64 after the prefix".to_owned()),
            None if secret.is_empty() => Err("must not be empty".to_owned()),
            None => Ok(SigningKey(secret.as_bytes().to_vec())),
        }
    }

    pub(crate) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_raw_secret_is_used_as_is_and_changes_the_signature() {
        let raw = SigningKey::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = raw.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_ne!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(signature.starts_with("v1,"));
    }

    #[test]
    fn a_malformed_whsec_secret_or_an_empty_one_is_refused() {
        assert!(SigningKey::from_secret("whsec_not base64!").is_err());
        assert!(SigningKey::from_secret("").is_err());
        assert_eq!(
            format!("{:?}", SigningKey::from_secret("hunter2").unwrap()),
            "SigningKey([redacted])"
        );
    }
}
