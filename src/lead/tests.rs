use bytes::Bytes;

use super::mapping::*;
use super::payload::*;
use crate::field::{ColumnMap, Field, FieldMap};
use crate::setup::table::KeyColumn;
use crate::source::pgoutput::{Column, OldTuple, Relation, Value};

fn relation(columns: &[(&str, u32)]) -> Relation {
    Relation {
        id: 1,
        namespace: "public".into(),
        name: "leads".into(),
        replica_identity: b'd',
        columns: columns
            .iter()
            .map(|&(name, type_oid)| Column {
                is_key: name == "id",
                name: name.into(),
                type_oid,
                type_modifier: -1,
            })
            .collect(),
    }
}

const TABLE: &str = r#""public"."leads""#;

fn text(s: &str) -> Value {
    Value::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn mapping(columns: ColumnMap, rel: &Relation) -> LeadMapping {
    let key = vec![KeyColumn {
        name: "id".into(),
        type_name: "bigint".into(),
    }];
    let mut mapping = LeadMapping::new(&columns, key, TABLE.into());
    mapping.describe(rel);
    mapping
}

/// The payload as sent (key order matters) and parsed.
fn render_row(mapping: &LeadMapping, new: &[Value]) -> (String, serde_json::Value) {
    let values = FieldMap::from_fn(|field| mapping.value(field, new, None));
    let body = render(&values);
    (
        String::from_utf8(body.to_vec()).unwrap(),
        serde_json::from_slice(&body).unwrap(),
    )
}

const ALL: [(&str, u32); 12] = [
    ("id", 20),
    ("email", 25),
    ("company", 25),
    ("first_name", 25),
    ("last_name", 25),
    ("phone", 25),
    ("website", 25),
    ("position", 25),
    ("twitter", 25),
    ("linkedin", 25),
    ("notes", 25),
    ("score", 23),
];

#[test]
fn nulls_become_empty_strings_nulls_and_zero_by_field_type() {
    let rel = relation(&ALL);
    let m = mapping(ColumnMap::default(), &rel);
    let mut row = vec![Value::Null; 12];
    row[0] = text("1");
    let (body, _) = render_row(&m, &row);
    assert_eq!(
        body,
        r#"{"data":{"email":"","company":null,"first_name":null,"last_name":null,"phone":null,"website":"","position":null,"twitter":null,"linkedin":null,"notes":null,"score":0}}"#
    );
}

#[test]
fn text_is_delivered_byte_exact_and_score_as_an_integer() {
    let rel = relation(&ALL);
    let m = mapping(ColumnMap::default(), &rel);
    let tricky = "Zoë \"quoted\" \\ back\nslash ✓ 🚀";
    let mut row: Vec<Value> = (0..12).map(|_| text(tricky)).collect();
    row[11] = text("-9000000000");
    let (body, json) = render_row(&m, &row);
    assert_eq!(json["data"]["notes"], tricky);
    assert_eq!(json["data"]["email"], tricky);
    assert_eq!(json["data"]["score"], -9_000_000_000i64);
    let positions: Vec<usize> = Field::ALL
        .iter()
        .map(|f| body.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert!(positions.is_sorted(), "keys in payload order: {body}");
}

#[test]
fn field_names_need_no_escaping_as_json_keys() {
    for field in Field::ALL {
        let name = field.name();
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name} is written into the payload unescaped"
        );
    }
}

#[test]
fn invalid_utf8_in_a_text_column_arrives_replaced_not_dropped() {
    let rel = relation(&ALL);
    let m = mapping(ColumnMap::default(), &rel);
    let mut row: Vec<Value> = (0..12).map(|_| text("ok")).collect();
    row[11] = text("3");
    // A SQL_ASCII database passes any bytes through.
    row[1] = Value::Text(Bytes::from_static(b"caf\xe9@example.com"));
    let (_, json) = render_row(&m, &row);
    assert_eq!(json["data"]["email"], "caf\u{fffd}@example.com");
    assert_eq!(json["data"]["company"], "ok");
}

#[test]
fn renamed_and_absent_columns_follow_the_config() {
    let rel = relation(&[("id", 20), ("mail", 25), ("points", 21)]);
    let mut columns = ColumnMap::default();
    columns.set(Field::Email, Some("mail".into()));
    columns.set(Field::Score, Some("points".into()));
    columns.set(Field::Twitter, None);
    let mut m = LeadMapping::new(&columns, Vec::new(), TABLE.into());
    let warnings = m.describe(&rel);
    // Fields left at their default name but missing from this table are warned about.
    assert_eq!(warnings.len(), 8, "{warnings:?}");
    assert!(
        !warnings.iter().any(|w| w.contains("twitter")),
        "absent by config: {warnings:?}"
    );
    let (_, json) = render_row(&m, &[text("7"), text("a@b.c"), text("12")]);
    assert_eq!(json["data"]["email"], "a@b.c");
    assert_eq!(json["data"]["score"], 12);
    assert_eq!(json["data"]["twitter"], serde_json::Value::Null);
}

#[test]
fn an_unchanged_large_value_is_taken_from_a_full_old_tuple() {
    let rel = relation(&ALL);
    let m = mapping(ColumnMap::default(), &rel);
    let mut new = vec![Value::Null; 12];
    new[10] = Value::UnchangedToast;
    let mut old_values = vec![Value::Null; 12];
    old_values[10] = text("long notes");
    let old = OldTuple::Full(crate::source::pgoutput::Tuple { values: old_values });
    assert!(
        matches!(m.value(Field::Notes, &new, Some(&old)), FieldValue::Text(t) if &t[..] == b"long notes")
    );
    assert!(matches!(
        m.value(Field::Notes, &new, None),
        FieldValue::Unchanged
    ));
}

#[test]
fn a_score_column_that_stops_being_an_integer_is_warned_about() {
    let mut cols = ALL;
    cols[11] = ("score", 25);
    let rel = relation(&cols);
    let mut m = LeadMapping::new(&ColumnMap::default(), Vec::new(), TABLE.into());
    let warnings = m.describe(&rel);
    assert!(
        warnings.iter().any(|w| w.contains("not an integer")),
        "{warnings:?}"
    );
}

#[test]
fn a_captured_lead_renders_like_a_streamed_row() {
    let rel = relation(&ALL);
    let m = mapping(ColumnMap::default(), &rel);
    let mut row = vec![Value::Null; 12];
    row[1] = text("a@b.c");
    row[10] = text("line\nbreak \"quoted\" ✓");
    row[11] = text("7");
    let (streamed, _) = render_row(&m, &row);
    let captured = captured_payload(
        r#"{"email": "a@b.c", "company": null, "first_name": null, "last_name": null, "phone": null, "website": null,
            "position": null, "twitter": null, "linkedin": null, "notes": "line\nbreak \"quoted\" ✓", "score": "7"}"#,
    )
    .unwrap();
    assert_eq!(streamed.as_bytes(), &captured[..]);
    assert!(captured_payload("[]").is_err());
}

#[test]
fn the_lookup_query_quotes_names_and_casts_the_key() {
    let rel = relation(&ALL);
    let m = mapping(ColumnMap::default(), &rel);
    assert_eq!(
        m.lookup_query(&[Field::Notes, Field::Company]),
        r#"SELECT xmin::text, "notes"::text, "company"::text FROM "public"."leads" WHERE "id" = $1::text::bigint"#
    );
}

#[test]
fn the_sample_payload_has_every_field_in_order_with_a_value() {
    let payload = sample_payload();
    let text = std::str::from_utf8(&payload).unwrap();
    let mut at = 0;
    for field in Field::ALL {
        let key = format!("\"{}\":", field.name());
        let found = text[at..].find(&key).map(|i| at + i);
        at = found.unwrap_or_else(|| panic!("{key} missing or out of order in {text}"));
    }
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let data = json["data"].as_object().unwrap();
    assert_eq!(data.len(), Field::COUNT, "{text}");
    assert!(data.values().all(|v| !v.is_null()), "{text}");
    assert_eq!(data["email"], "jane.doe@example.com");
    assert_eq!(data["score"], 42);
}
