//! The `save_lead` payload, pure: field values in, bytes out.

use std::borrow::Cow;

use bytes::Bytes;
use serde::ser::{Serialize, SerializeStruct, Serializer};

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

/// `{"data": {...}}`
struct Payload<'v, 'a>(&'v FieldMap<FieldValue<'a>>);

impl Serialize for Payload<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut payload = serializer.serialize_struct("Payload", 1)?;
        payload.serialize_field("data", &Lead(self.0))?;
        payload.end()
    }
}

/// The fields in payload order, each rendered as its kind says.
struct Lead<'v, 'a>(&'v FieldMap<FieldValue<'a>>);

impl Serialize for Lead<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut lead = serializer.serialize_struct("Lead", Field::COUNT)?;
        for (field, value) in self.0.iter() {
            let text = value.text();
            let name = field.name();
            match field.kind() {
                FieldKind::Text => lead.serialize_field(name, &text.unwrap_or_default())?,
                FieldKind::NullableText => lead.serialize_field(name, &text)?,
                FieldKind::Integer => {
                    let number: i64 = text.and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                    lead.serialize_field(name, &number)?
                }
            }
        }
        lead.end()
    }
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
    // Serialising strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &Payload(values));
    if out.capacity() - out.len() > 4096 {
        out.shrink_to_fit();
    }
    Bytes::from(out)
}
