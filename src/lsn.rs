//! WAL positions.
//!
//! A log sequence number is the one coordinate every stage agrees on: the
//! source reads it from the stream, delivery derives `webhook-id` from it and
//! the checkpoint confirms it back to the server. Timestamps travel with
//! positions in the stream, counted from PostgreSQL's own epoch.

use std::fmt;
use std::str::FromStr;

/// A position in the PostgreSQL write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Lsn(pub u64);

impl Lsn {
    /// The invalid position `0/0`; as a start position it means "where the slot is".
    pub(crate) const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    /// The server's own notation, e.g. `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC),
/// which the server's timestamps on the wire count from.
pub(crate) const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The text was not an LSN in the server's `X/Y` notation.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a WAL position (expected hexadecimal `X/Y`, e.g. `0/16B3748`)")]
pub(crate) struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip_in_server_notation() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
    }

    #[test]
    fn parse_rejects_text_that_is_not_a_position() {
        for bad in ["", "16", "16/", "/1", "g/1", "1/100000000"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad} parsed");
        }
    }
}
