//! The `save_lead` payload, pure: field values in, bytes out.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use super::{LeadError, SCORE};

/// A lead as notify mode's trigger captured it: payload field → the column's
/// text, exactly as the replication stream would carry it.
#[derive(Debug, serde::Deserialize)]
struct CapturedLead {
    email: Option<String>,
    company: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    website: Option<String>,
    position: Option<String>,
    twitter: Option<String>,
    linkedin: Option<String>,
    notes: Option<String>,
    score: Option<String>,
}

/// The payload of an outbox row's `lead` (JSON). Same rendering as the
/// stream, so the same row gives byte-identical payloads in both modes.
pub(crate) fn captured_payload(lead: &str) -> Result<Bytes, LeadError> {
    let lead: CapturedLead =
        serde_json::from_str(lead).map_err(|e| LeadError::Captured(e.to_string()))?;
    let fields = [
        lead.email,
        lead.company,
        lead.first_name,
        lead.last_name,
        lead.phone,
        lead.website,
        lead.position,
        lead.twitter,
        lead.linkedin,
        lead.notes,
        lead.score,
    ];
    let values = fields.map(|field| match field {
        Some(text) => FieldValue::Text(Cow::Owned(text.into_bytes())),
        None => FieldValue::Null,
    });
    Ok(render(&values))
}

/// A field's value before it is rendered.
#[derive(Debug)]
pub(super) enum FieldValue<'a> {
    Null,
    Text(Cow<'a, [u8]>),
    /// Not in the stream (unchanged TOAST); filled in before rendering.
    Unchanged,
}

impl FieldValue<'_> {
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            FieldValue::Text(bytes) => Some(String::from_utf8_lossy(bytes)),
            FieldValue::Null | FieldValue::Unchanged => None,
        }
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    data: Lead<'a>,
}

/// Field order here is the payload's key order.
#[derive(Serialize)]
struct Lead<'a> {
    email: Cow<'a, str>,
    company: Option<Cow<'a, str>>,
    first_name: Option<Cow<'a, str>>,
    last_name: Option<Cow<'a, str>>,
    phone: Option<Cow<'a, str>>,
    website: Cow<'a, str>,
    position: Option<Cow<'a, str>>,
    twitter: Option<Cow<'a, str>>,
    linkedin: Option<Cow<'a, str>>,
    notes: Option<Cow<'a, str>>,
    score: i64,
}

pub(super) fn render(values: &[FieldValue<'_>; 11]) -> Bytes {
    let text = |i: usize| values[i].text();
    let lead = Lead {
        email: text(0).unwrap_or_default(),
        company: text(1),
        first_name: text(2),
        last_name: text(3),
        phone: text(4),
        website: text(5).unwrap_or_default(),
        position: text(6),
        twitter: text(7),
        linkedin: text(8),
        notes: text(9),
        score: text(SCORE).and_then(|s| s.trim().parse().ok()).unwrap_or(0),
    };
    let mut out = Vec::with_capacity(256);
    // Serialising borrowed strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &Payload { data: lead });
    Bytes::from(out)
}
