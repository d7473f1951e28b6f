//! Values that must never reach a log line.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A value such as a header token or a URL with a password: as written
/// (`Secret<String>`) or parsed (`Secret<Url>`, `Secret<HeaderValue>`).
/// `Debug` and `Display` print a placeholder; only [`Secret::expose`] gives
/// the value, which makes every place that uses it easy to find.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret<T = String>(T);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
}

impl<T> Secret<T> {
    pub(crate) fn expose(&self) -> &T {
        &self.0
    }
}

/// Parsing a secret keeps it one.
impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new("Bearer hunter2");
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "Bearer hunter2");
    }
}
