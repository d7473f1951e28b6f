//! The `save_lead` payload, pure: field values in, bytes out.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::ser::{CompactFormatter, Formatter};

use super::LeadError;
use crate::field::{Field, FieldKind, FieldMap};

/// The payload of an outbox row's `lead` (JSON): payload field → the
/// column's text, as notify mode's trigger captured it, exactly as the
/// replication stream would carry it. Same rendering as the stream, so the
/// same row gives byte-identical payloads in both modes.
pub(crate) fn captured_payload(lead: &str) -> Result<Bytes, LeadError> {
    let captured = |e: serde_json::Error| LeadError::Captured(e.to_string());
    let mut json = serde_json::Deserializer::from_str(lead);
    let lead = FieldMap::<Option<String>>::deserialize_lenient(&mut json).map_err(captured)?;
    json.end().map_err(captured)?;
    let values = lead.map(|text| match text {
        Some(text) => FieldValue::Text(Cow::Owned(text.into_bytes())),
        None => FieldValue::Null,
    });
    Ok(render(&values))
}

/// The payload `leadhook webhooks test` sends: every field with a plausible
/// value, written by the same code as a real change's payload, so a partner
/// tests against exactly the shape they will get.
pub(crate) fn sample_payload() -> Bytes {
    let values =
        FieldMap::from_fn(|field| FieldValue::Text(Cow::Borrowed(sample_value(field).as_bytes())));
    render(&values)
}

/// A field's sample value, as its column's text (`score` parses as an
/// integer). A match rather than a list, so a new field cannot be left
/// without one.
fn sample_value(field: Field) -> &'static str {
    match field {
        Field::Email => "jane.doe@example.com",
        Field::Company => "Example Corp",
        Field::FirstName => "Jane",
        Field::LastName => "Doe",
        Field::Phone => "+1 555 0100",
        Field::Website => "https://example.com",
        Field::Position => "Head of Partnerships",
        Field::Twitter => "@janedoe",
        Field::Linkedin => "https://www.linkedin.com/in/janedoe",
        Field::Notes => "Test event sent by leadhook webhooks test",
        Field::Score => "42",
    }
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
            // Validated first: `from_utf8` checks ASCII a word at a time,
            // the lossy walk byte by byte (8 % of a lead's rendering).
            FieldValue::Text(bytes) => Some(match std::str::from_utf8(bytes) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(bytes),
            }),
            FieldValue::Null | FieldValue::Unchanged => None,
        }
    }
}

/// `{"data": {...}}`: the fields in payload order, each rendered as its
/// kind says. Written directly rather than through `Serialize`: the field
/// names are fixed ASCII, so only the values go through serde_json (which
/// escapes them); the struct serializer's calls per field and the quoting
/// of every name were half of a lead's rendering.
fn write_payload(out: &mut Vec<u8>, values: &FieldMap<FieldValue<'_>>) -> std::io::Result<()> {
    let mut json = CompactFormatter;
    out.extend_from_slice(b"{\"data\":{");
    for (i, (field, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.name().as_bytes());
        out.extend_from_slice(b"\":");
        match (field.kind(), value.text()) {
            (FieldKind::Text | FieldKind::NullableText, Some(text)) => {
                serde_json::to_writer(&mut *out, text.as_ref()).map_err(std::io::Error::from)?
            }
            (FieldKind::Text, None) => out.extend_from_slice(b"\"\""),
            (FieldKind::NullableText, None) => out.extend_from_slice(b"null"),
            (FieldKind::Integer, text) => {
                let number: i64 = text.and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                json.write_i64(out, number)?
            }
        }
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

pub(super) fn render(values: &FieldMap<FieldValue<'_>>) -> Bytes {
    // Sized up front: a Vec that grows by doubling would keep up to twice
    // the payload alive for as long as the event lives (the memory budget
    // counts the payload's length, not the Vec's capacity).
    let text: usize = values
        .iter()
        .map(|(_, value)| match value {
            FieldValue::Text(bytes) => bytes.len(),
            FieldValue::Null | FieldValue::Unchanged => 0,
        })
        .sum();
    let mut out = Vec::with_capacity(256 + text + text / 16);
    // Writing into a Vec cannot fail.
    let _ = write_payload(&mut out, values);
    if out.capacity() - out.len() > 4096 {
        out.shrink_to_fit();
    }
    Bytes::from(out)
}
