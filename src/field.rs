//! The fields of the `save_lead` payload: the one list that the column
//! mapping, the payload, the outbox trigger and the prerequisite checks all
//! derive from, so adding or renaming a field is a change in one place.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A key under `data` in the payload. Declared in payload order: the
/// discriminant is the position, which [`FieldMap`] relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    Email,
    Company,
    FirstName,
    LastName,
    Phone,
    Website,
    Position,
    Twitter,
    Linkedin,
    Notes,
    Score,
}

/// How a field's column value becomes its payload value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// A string; NULL is sent as `""` (receivers treat these as required).
    Text,
    /// A string, or `null`.
    NullableText,
    /// An integer; NULL, or text that does not parse as one, is sent as `0`.
    Integer,
}

/// Type oids an integer field's column may have: smallint, integer, bigint.
const INTEGER_TYPES: [u32; 3] = [21, 23, 20];

impl Field {
    /// Every field, in payload order.
    pub(crate) const ALL: [Field; 11] = [
        Field::Email,
        Field::Company,
        Field::FirstName,
        Field::LastName,
        Field::Phone,
        Field::Website,
        Field::Position,
        Field::Twitter,
        Field::Linkedin,
        Field::Notes,
        Field::Score,
    ];
    pub(crate) const COUNT: usize = Field::ALL.len();

    /// The names in payload order, for serde's "expected one of" messages.
    const NAMES: [&'static str; Field::COUNT] = {
        let mut names = [""; Field::COUNT];
        let mut i = 0;
        while i < Field::COUNT {
            names[i] = Field::ALL[i].name();
            i += 1;
        }
        names
    };

    /// The JSON key, which is also the key in `[source.columns]` and the
    /// default column name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::Company => "company",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Phone => "phone",
            Field::Website => "website",
            Field::Position => "position",
            Field::Twitter => "twitter",
            Field::Linkedin => "linkedin",
            Field::Notes => "notes",
            Field::Score => "score",
        }
    }

    pub(crate) const fn kind(self) -> FieldKind {
        match self {
            Field::Email | Field::Website => FieldKind::Text,
            Field::Score => FieldKind::Integer,
            _ => FieldKind::NullableText,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.name() == name)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl FieldKind {
    /// Whether a column of type `type_oid` can feed a field of this kind:
    /// text takes any type (as the type's text form), an integer needs
    /// smallint, integer or bigint.
    pub(crate) fn accepts(self, type_oid: u32) -> bool {
        match self {
            FieldKind::Text | FieldKind::NullableText => true,
            FieldKind::Integer => INTEGER_TYPES.contains(&type_oid),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field by its name; any other name is an unknown field, reported (with
/// the expected names) where serde reports a struct's unknown fields.
impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a payload field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Field::from_name(name).ok_or_else(|| E::unknown_field(name, &Field::NAMES))
            }
        }
        d.deserialize_identifier(Name)
    }
}

/// One value per field, addressed by field rather than by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldMap<T>([T; Field::COUNT]);

impl<T> FieldMap<T> {
    pub(crate) fn from_fn(mut value: impl FnMut(Field) -> T) -> Self {
        FieldMap(std::array::from_fn(|i| value(Field::ALL[i])))
    }

    /// In payload order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Field, &T)> {
        Field::ALL.into_iter().zip(&self.0)
    }

    pub(crate) fn map<U>(self, value: impl FnMut(T) -> U) -> FieldMap<U> {
        FieldMap(self.0.map(value))
    }
}

impl<T> Index<Field> for FieldMap<T> {
    type Output = T;
    fn index(&self, field: Field) -> &T {
        &self.0[field.index()]
    }
}

impl<T> IndexMut<Field> for FieldMap<T> {
    fn index_mut(&mut self, field: Field) -> &mut T {
        &mut self.0[field.index()]
    }
}

/// An object keyed by field names, such as `[source.columns]` or a captured
/// lead; a field not given is `None`. An unknown name is an error (a typo in
/// the config must not be ignored).
impl<'de, T: Deserialize<'de>> Deserialize<'de> for FieldMap<Option<T>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Entries::<Field, T>(PhantomData))
    }
}

impl<T> FieldMap<Option<T>> {
    /// Like deserializing, but keys that name no field are skipped: for
    /// data written by something else, which may carry more.
    pub(crate) fn deserialize_lenient<'de, D>(d: D) -> Result<Self, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        d.deserialize_map(Entries::<Lenient, T>(PhantomData))
    }
}

/// A key of a lenient field map: `None` for a name that is no field.
struct Lenient(Option<Field>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Lenient, E> {
                Ok(Lenient(Field::from_name(name)))
            }
        }
        d.deserialize_identifier(Name)
    }
}

impl From<Lenient> for Option<Field> {
    fn from(key: Lenient) -> Self {
        key.0
    }
}

/// Visits a map keyed by `K` (a field, or maybe not) with values `T`.
struct Entries<K, T>(PhantomData<(K, T)>);

impl<'de, K, T> Visitor<'de> for Entries<K, T>
where
    K: Deserialize<'de> + Into<Option<Field>>,
    T: Deserialize<'de>,
{
    type Value = FieldMap<Option<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of payload fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut map = FieldMap::from_fn(|_| None);
        let mut seen = FieldMap::from_fn(|_| false);
        while let Some(key) = entries.next_key::<K>()? {
            let Some(field) = key.into() else {
                entries.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[field], true) {
                return Err(de::Error::duplicate_field(field.name()));
            }
            map[field] = entries.next_value()?;
        }
        Ok(map)
    }
}

/// Which column each field is read from, as `[source.columns]` says: a
/// field left out is read from the column of its own name; `false` (`None`
/// here) declares that the table has no such column, and the field is then
/// always sent as its NULL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnMap(FieldMap<Option<String>>);

impl Default for ColumnMap {
    fn default() -> Self {
        ColumnMap(FieldMap::from_fn(|field| Some(field.name().to_owned())))
    }
}

impl ColumnMap {
    /// The column `field` is read from; `None`: the table has none.
    pub(crate) fn column(&self, field: Field) -> Option<&str> {
        self.0[field].as_deref()
    }

    /// Every field and its column, in payload order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Field, Option<&str>)> {
        self.0
            .iter()
            .map(|(field, column)| (field, column.as_deref()))
    }

    /// Reads `field` from `column` (`None`: the table has no such column).
    pub(crate) fn set(&mut self, field: Field, column: Option<String>) {
        self.0[field] = column;
    }
}

/// What `[source.columns]` may say of a field.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ColumnSpec {
    Column(String),
    /// `true` = the column of the same name, `false` = no such column.
    Present(bool),
}

impl<'de> Deserialize<'de> for ColumnMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let specs = FieldMap::<Option<ColumnSpec>>::deserialize(d)?;
        let mut columns = ColumnMap::default();
        for (field, spec) in specs.iter() {
            match spec {
                None | Some(ColumnSpec::Present(true)) => {}
                Some(ColumnSpec::Present(false)) => columns.set(field, None),
                Some(ColumnSpec::Column(name)) => columns.set(field, Some(name.clone())),
            }
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_declared_in_payload_order_with_unique_names() {
        for (i, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(field.index(), i, "{field}");
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
        assert_eq!(Field::NAMES[Field::Score.index()], "score");
    }

    #[test]
    fn only_email_and_website_are_required_text_and_only_score_an_integer() {
        let kinds: Vec<_> = Field::ALL.into_iter().map(Field::kind).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == FieldKind::Text).count(),
            2,
            "{kinds:?}"
        );
        assert_eq!(Field::Score.kind(), FieldKind::Integer);
        assert!(FieldKind::Integer.accepts(20) && !FieldKind::Integer.accepts(25));
        assert!(FieldKind::NullableText.accepts(25));
    }

    #[test]
    fn a_lenient_map_skips_unknown_keys_and_a_strict_one_names_them() {
        let json = r#"{"email": "a@b.c", "fax": "0", "score": null}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        let lenient = FieldMap::<Option<String>>::deserialize_lenient(&mut de).unwrap();
        assert_eq!(lenient[Field::Email].as_deref(), Some("a@b.c"));
        assert_eq!(lenient[Field::Score], None);
        let strict = serde_json::from_str::<FieldMap<Option<String>>>(json).unwrap_err();
        assert!(
            strict.to_string().contains("unknown field `fax`"),
            "{strict}"
        );
        let twice =
            serde_json::from_str::<FieldMap<Option<String>>>(r#"{"notes": "a", "notes": "b"}"#)
                .unwrap_err();
        assert!(
            twice.to_string().contains("duplicate field `notes`"),
            "{twice}"
        );
    }
}
