use super::*;

// Captured from PostgreSQL 15.18 (Debian 15.18-0+deb12u1): a throwaway
// cluster with wal_level=logical, table
// `leads (id bigserial primary key, email text, notes text, score int)`
// in publication `leads_pub`, an enum `mood` and table
// `tags (id int primary key, m mood)` in publication `tags_pub`, slot
// `cap` created with `pg_create_logical_replication_slot('cap',
// 'pgoutput')` after row 1 got a 200 KB `repeat(md5(random()::text),
// 7000)` note (stored out of line), then read with
// `SELECT lsn, xid, encode(data, 'hex') FROM
// pg_logical_slot_peek_binary_changes('cap', NULL, NULL, 'proto_version',
// '1', 'publication_names', 'leads_pub,tags_pub', 'messages', 'true')`.
// The statement that produced each message is above it.

// INSERT INTO leads (email, notes, score) VALUES ('ann@example.com', NULL, 42); xid 730
const BEGIN_730: &str = "4200000000015342b000030434456ec170000002da";
const RELATION_LEADS: &str = "52000040017075626c6963006c65616473006400040169640000000014ffffffff00656d61696c0000000019ffffffff006e6f7465730000000019ffffffff0073636f72650000000017ffffffff";
const INSERT_ANN: &str =
    "49000040014e0004740000000132740000000f616e6e406578616d706c652e636f6d6e74000000023432";
const COMMIT_730: &str = "430000000000015342b000000000015342e000030434456ec170";
// UPDATE leads SET email = 'ann@example.org' WHERE id = 2;
const UPDATE_ANN_EMAIL: &str =
    "55000040014e0004740000000132740000000f616e6e406578616d706c652e6f72676e74000000023432";
// UPDATE leads SET score = 6 WHERE id = 1;  (the 200 KB note is untouched)
const UPDATE_KEEPING_TOAST: &str =
    "55000040014e0004740000000131740000000f626967406578616d706c652e636f6d75740000000136";
// DELETE FROM leads WHERE id = 2;
const DELETE_ANN: &str = "44000040014b00047400000001326e6e6e";
// SELECT pg_logical_emit_message(true, 'pfx', 'hello');
const MESSAGE_TRANSACTIONAL: &str = "4d010000000001534508706678000000000568656c6c6f";
// SELECT pg_logical_emit_message(false, 'nt', '\x00ff'::bytea);
const MESSAGE_NON_TRANSACTIONAL: &str = "4d0000000000015345706e74000000000200ff";
// ALTER TABLE leads REPLICA IDENTITY FULL; UPDATE leads SET score = 8 WHERE id = 3;
const RELATION_LEADS_FULL: &str = "52000040017075626c6963006c65616473006600040169640000000014ffffffff01656d61696c0000000019ffffffff016e6f7465730000000019ffffffff0173636f72650000000017ffffffff";
const UPDATE_FULL: &str = "55000040014f0004740000000133740000000f626f62406578616d706c652e636f6d740000000a736d616c6c206e6f74657400000001374e0004740000000133740000000f626f62406578616d706c652e636f6d740000000a736d616c6c206e6f7465740000000138";
// INSERT INTO tags VALUES (1, 'warm');
const TYPE_MOOD: &str = "590000400c7075626c6963006d6f6f6400";
const RELATION_TAGS: &str =
    "52000040137075626c69630074616773006400020169640000000017ffffffff006d000000400cffffffff";
const INSERT_TAG: &str = "49000040134e000274000000013174000000047761726d";
// pg_replication_origin_session_setup('upstream');
// pg_replication_origin_xact_setup('0/ABCDEF', now()); INSERT INTO tags ...
const BEGIN_740: &str = "420000000001534cc000030434456f3f62000002e4";
const ORIGIN_UPSTREAM: &str = "4f0000000000abcdef757073747265616d00";
// TRUNCATE leads;
const TRUNCATE_LEADS: &str = "54000000010000004001";

const CAPTURED: [&str; 17] = [
    BEGIN_730,
    RELATION_LEADS,
    INSERT_ANN,
    COMMIT_730,
    UPDATE_ANN_EMAIL,
    UPDATE_KEEPING_TOAST,
    DELETE_ANN,
    MESSAGE_TRANSACTIONAL,
    MESSAGE_NON_TRANSACTIONAL,
    RELATION_LEADS_FULL,
    UPDATE_FULL,
    TYPE_MOOD,
    RELATION_TAGS,
    INSERT_TAG,
    BEGIN_740,
    ORIGIN_UPSTREAM,
    TRUNCATE_LEADS,
];

const LEADS_OID: u32 = 0x4001;

fn hex(s: &str) -> Bytes {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .into()
}

fn ok(s: &str) -> LogicalMessage {
    decode(hex(s)).expect("captured message decodes")
}

fn text(s: &str) -> Value {
    Value::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn err(bytes: &[u8]) -> DecodeError {
    decode(Bytes::copy_from_slice(bytes)).expect_err("must not decode")
}

#[test]
fn begin_and_commit_of_a_captured_transaction_agree_on_lsn_and_time() {
    let LogicalMessage::Begin(begin) = ok(BEGIN_730) else {
        panic!("not a Begin")
    };
    let LogicalMessage::Commit(commit) = ok(COMMIT_730) else {
        panic!("not a Commit")
    };
    assert_eq!(begin.xid, 730);
    assert_eq!(begin.final_lsn, Lsn(0x0153_42B0));
    assert_eq!(commit.commit_lsn, begin.final_lsn);
    assert_eq!(commit.end_lsn, Lsn(0x0153_42E0));
    assert!(commit.end_lsn > commit.commit_lsn);
    assert_eq!(commit.commit_time, begin.commit_time);
    assert_eq!(commit.flags, 0);
    // Captured in 2026: between 2025 and 2030 in µs since 2000.
    assert!((788_918_400_000_000..946_684_800_000_000).contains(&begin.commit_time));
}

#[test]
fn relation_lists_the_lead_columns_with_the_primary_key_flagged() {
    let LogicalMessage::Relation(rel) = ok(RELATION_LEADS) else {
        panic!("not a Relation")
    };
    assert_eq!(rel.id, LEADS_OID);
    assert_eq!(
        (rel.namespace.as_str(), rel.name.as_str()),
        ("public", "leads")
    );
    assert_eq!(rel.replica_identity, b'd');
    let column = |is_key, name: &str, type_oid| Column {
        is_key,
        name: name.to_owned(),
        type_oid,
        type_modifier: -1,
    };
    assert_eq!(
        rel.columns,
        [
            column(true, "id", 20),
            column(false, "email", 25),
            column(false, "notes", 25),
            column(false, "score", 23),
        ]
    );
}

#[test]
fn replica_identity_full_flags_every_column_as_key() {
    let LogicalMessage::Relation(rel) = ok(RELATION_LEADS_FULL) else {
        panic!("not a Relation")
    };
    assert_eq!(rel.replica_identity, b'f');
    assert!(rel.columns.iter().all(|c| c.is_key));
}

#[test]
fn insert_carries_text_values_and_sql_null() {
    let msg = ok(INSERT_ANN);
    let expected = Insert {
        relation_id: LEADS_OID,
        new: Tuple {
            values: vec![text("2"), text("ann@example.com"), Value::Null, text("42")],
        },
    };
    assert_eq!(msg, LogicalMessage::Insert(expected));
}

#[test]
fn values_are_slices_of_the_input_not_copies() {
    let input = hex(INSERT_ANN);
    let range = input.as_ptr_range();
    let LogicalMessage::Insert(insert) = decode(input.clone()).unwrap() else {
        panic!("not an Insert")
    };
    let Some(Value::Text(email)) = insert.new.values.get(1) else {
        panic!("no email")
    };
    assert!(range.contains(&email.as_ptr()));
}

#[test]
fn update_that_keeps_the_key_has_no_old_tuple() {
    let LogicalMessage::Update(update) = ok(UPDATE_ANN_EMAIL) else {
        panic!("not an Update")
    };
    assert_eq!(update.relation_id, LEADS_OID);
    assert_eq!(update.old, None);
    assert_eq!(update.new.values.get(1), Some(&text("ann@example.org")));
}

#[test]
fn update_with_unchanged_toast_marks_the_value() {
    let LogicalMessage::Update(update) = ok(UPDATE_KEEPING_TOAST) else {
        panic!("not an Update")
    };
    assert_eq!(update.old, None);
    assert_eq!(
        update.new.values,
        [
            text("1"),
            text("big@example.com"),
            Value::UnchangedToast,
            text("6"),
        ]
    );
}

#[test]
fn update_under_replica_identity_full_carries_the_whole_old_row() {
    let LogicalMessage::Update(update) = ok(UPDATE_FULL) else {
        panic!("not an Update")
    };
    let row = |score| Tuple {
        values: vec![
            text("3"),
            text("bob@example.com"),
            text("small note"),
            text(score),
        ],
    };
    assert_eq!(update.old, Some(OldTuple::Full(row("7"))));
    assert_eq!(update.new, row("8"));
}

#[test]
fn delete_carries_only_the_key_columns() {
    let msg = ok(DELETE_ANN);
    let expected = Delete {
        relation_id: LEADS_OID,
        old: OldTuple::Key(Tuple {
            values: vec![text("2"), Value::Null, Value::Null, Value::Null],
        }),
    };
    assert_eq!(msg, LogicalMessage::Delete(expected));
}

#[test]
fn truncate_lists_the_relation_ids() {
    let msg = ok(TRUNCATE_LEADS);
    let expected = Truncate {
        options: 0,
        relation_ids: vec![LEADS_OID],
    };
    assert_eq!(msg, LogicalMessage::Truncate(expected));
}

#[test]
fn transactional_message_keeps_prefix_and_content() {
    let msg = ok(MESSAGE_TRANSACTIONAL);
    let expected = Message {
        transactional: true,
        lsn: Lsn(0x0153_4508),
        prefix: "pfx".to_owned(),
        content: Bytes::from_static(b"hello"),
    };
    assert_eq!(msg, LogicalMessage::Message(expected));
}

#[test]
fn non_transactional_message_keeps_raw_binary_content() {
    let LogicalMessage::Message(msg) = ok(MESSAGE_NON_TRANSACTIONAL) else {
        panic!("not a Message")
    };
    assert!(!msg.transactional);
    assert_eq!(msg.prefix, "nt");
    assert_eq!(msg.content, Bytes::from_static(&[0x00, 0xff]));
}

#[test]
fn type_message_names_the_enum_a_relation_then_uses() {
    let LogicalMessage::Type(ty) = ok(TYPE_MOOD) else {
        panic!("not a Type")
    };
    assert_eq!(
        (ty.namespace.as_str(), ty.name.as_str()),
        ("public", "mood")
    );
    let LogicalMessage::Relation(rel) = ok(RELATION_TAGS) else {
        panic!("not a Relation")
    };
    assert_eq!(rel.name, "tags");
    assert_eq!(rel.columns.get(1).map(|c| c.type_oid), Some(ty.id));
    let LogicalMessage::Insert(insert) = ok(INSERT_TAG) else {
        panic!("not an Insert")
    };
    assert_eq!(insert.relation_id, rel.id);
    assert_eq!(insert.new.values, [text("1"), text("warm")]);
}

#[test]
fn origin_names_the_upstream_and_its_commit_lsn() {
    let LogicalMessage::Begin(begin) = ok(BEGIN_740) else {
        panic!("not a Begin")
    };
    assert_eq!(begin.xid, 740);
    let expected = Origin {
        commit_lsn: Lsn(0xAB_CDEF),
        name: "upstream".to_owned(),
    };
    assert_eq!(ok(ORIGIN_UPSTREAM), LogicalMessage::Origin(expected));
}

#[test]
fn binary_values_are_kept_apart_from_text() {
    // The captured insert with its first value's kind switched to 'b'.
    let mut bytes = hex(INSERT_ANN).to_vec();
    assert_eq!(bytes.get(8), Some(&b't'));
    bytes[8] = b'b';
    let LogicalMessage::Insert(insert) = decode(bytes.into()).unwrap() else {
        panic!("not an Insert")
    };
    assert_eq!(
        insert.new.values.first(),
        Some(&Value::Binary(Bytes::from_static(b"2")))
    );
}

#[test]
fn every_proper_prefix_of_a_captured_message_is_an_error() {
    for captured in CAPTURED {
        let bytes = hex(captured);
        for len in 0..bytes.len() {
            let error = decode(bytes.slice(..len)).expect_err(captured);
            assert!(error.offset() <= len, "{error} for {len} bytes");
        }
    }
}

#[test]
fn one_trailing_byte_after_a_complete_message_is_an_error() {
    for captured in CAPTURED {
        let mut bytes = hex(captured).to_vec();
        let len = bytes.len();
        bytes.push(0);
        let error = err(&bytes);
        assert_eq!(error.offset(), len);
        assert!(error.to_string().contains("1 trailing bytes"), "{error}");
    }
}

#[test]
fn errors_name_the_message_and_the_offset() {
    let truncated = hex(INSERT_ANN).slice(..12);
    assert_eq!(
        decode(truncated).unwrap_err().to_string(),
        "pgoutput: truncated Insert message at byte 9"
    );
    assert_eq!(
        err(b"Z").to_string(),
        "pgoutput: unknown message tag 0x5a at byte 0"
    );
    assert_eq!(err(b"").to_string(), "pgoutput: empty message at byte 0");
}

#[test]
fn unknown_tags_are_rejected() {
    // Protocol 2+ streaming and two-phase tags are not version 1.
    for tag in [b'Z', b'S', b'E', b'A', b'c', b'b', b'P', 0, 0xff] {
        let error = err(&[tag, 0, 0, 0, 0]);
        assert_eq!(error.offset(), 0);
        assert!(error.to_string().contains("unknown message tag"), "{error}");
    }
}

#[test]
fn absurd_column_counts_fail_before_allocating() {
    // 65535 columns announced with three bytes of body.
    let relation = b"R\0\0\x40\x01public\0leads\0d\xff\xff\0\0\0";
    assert!(err(relation).to_string().contains("truncated Relation"));
    let insert = b"I\0\0\x40\x01N\xff\xffnnn";
    let error = err(insert);
    assert!(error.to_string().contains("truncated Insert"), "{error}");
    assert_eq!(error.offset(), 8);
    let truncate = b"T\xff\xff\xff\xff\0\0\0\x40\x01";
    assert!(err(truncate).to_string().contains("truncated Truncate"));
}

#[test]
fn invalid_utf8_in_a_name_is_rejected() {
    let relation = b"R\0\0\x40\x01public\0le\xffds\0d\0\0";
    let error = err(relation);
    assert!(error.to_string().contains("invalid UTF-8"), "{error}");
    assert_eq!(error.offset(), 12);
}

#[test]
fn a_name_without_its_nul_is_truncated() {
    let error = err(b"Y\0\0\x40\x0cpublic");
    assert!(error.to_string().contains("truncated Type"), "{error}");
}

#[test]
fn negative_value_length_is_rejected() {
    let insert = b"I\0\0\x40\x01N\0\x01t\xff\xff\xff\xfe";
    let error = err(insert);
    assert_eq!(
        error.to_string(),
        "pgoutput: negative length -2 in Insert message at byte 9"
    );
}

#[test]
fn value_length_past_the_end_is_truncated() {
    let insert = b"I\0\0\x40\x01N\0\x01t\0\0\0\x05abc";
    let error = err(insert);
    assert!(error.to_string().contains("truncated Insert"), "{error}");
    assert_eq!(error.offset(), 13);
    let message = b"M\x01\0\0\0\0\0\0\0\x01p\0\x7f\xff\xff\xffhello";
    assert!(err(message).to_string().contains("truncated Message"));
}

#[test]
fn unexpected_submessage_bytes_are_rejected() {
    for bad in [
        &b"I\0\0\x40\x01K\0\0"[..], // insert must carry 'N'
        b"U\0\0\x40\x01X\0\0",      // neither old nor new tuple
        b"U\0\0\x40\x01K\0\0K\0\0", // old tuple not followed by 'N'
        b"D\0\0\x40\x01N\0\0",      // delete needs an old tuple
        b"I\0\0\x40\x01N\0\x01x",   // unknown value kind
    ] {
        let error = err(bad);
        assert!(error.to_string().contains("unexpected byte"), "{error}");
    }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }
}

#[test]
fn mutated_captured_messages_never_panic() {
    let corpus: Vec<Vec<u8>> = CAPTURED.iter().map(|s| hex(s).to_vec()).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let mut input = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(input.len());
            match rng.below(6) {
                0 => input[at] ^= 1 << rng.below(8),
                1 => input[at] = [0, 0x7f, 0x80, 0xff][rng.below(4)],
                2 => input.truncate(at),
                3 => input.insert(at, rng.next() as u8),
                4 => {
                    let other = &corpus[rng.below(corpus.len())];
                    input.truncate(at);
                    input.extend_from_slice(&other[rng.below(other.len())..]);
                }
                _ => {
                    input.remove(at);
                }
            }
            if input.is_empty() {
                break;
            }
        }
        let len = input.len();
        match decode(input.into()) {
            Ok(_) => decoded += 1,
            Err(error) => assert!(error.offset() <= len, "{error} for {len} bytes"),
        }
    }
    // Some mutations (e.g. of value bytes) still decode: the loop reached
    // deep into the messages rather than failing at the tag.
    assert!(decoded > 100, "only {decoded} mutants decoded");
}
