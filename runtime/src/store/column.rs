//! Column types: the one place where the two engines encode a value differently.
//!
//! SQLite keeps ids as UUID text, times as INTEGER milliseconds and lists as JSON text
//! arrays; PostgreSQL has UUID, TIMESTAMPTZ and arrays. Each type here binds and decodes
//! the right way on each engine, so every query and row struct is written once and an
//! existing database of either kind reads as before. On PostgreSQL every type is its inner
//! value; on SQLite each says how it is stored.
//!
//! A value that does not decode is a [`StoreError::Corrupt`](super::StoreError::Corrupt).
//! [`Src`] and [`Participant`] parse the same text on both engines.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

use crate::protocol::Source;

/// An id column: UUID text on SQLite (sqlx's own `Uuid` would be a blob there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Id(pub Uuid);

/// A time column: INTEGER milliseconds since the epoch on SQLite.
#[derive(Debug, Clone, Copy)]
pub(super) struct Time(pub DateTime<Utc>);

/// For `#[sqlx(try_from = "Time")]` on a `DateTime` field of a row struct.
impl From<Time> for DateTime<Utc> {
    fn from(t: Time) -> Self {
        t.0
    }
}

/// A project's tags: a JSON text array on SQLite, `TEXT[]` on PostgreSQL.
#[derive(Debug, Clone)]
pub(super) struct Tags(pub Vec<String>);

/// A list bound as one parameter: an array on PostgreSQL (`= ANY($n)`, `UNNEST`), a JSON
/// text array on SQLite (read with `json_each`). One parameter, so the statement text is
/// the same whatever the length and stays prepared.
#[derive(Debug, Clone)]
pub(super) struct List<T>(pub Vec<T>);

/// PostgreSQL stores each type as its inner value.
macro_rules! postgres_as_inner {
    ($($ty:ty => $inner:ty),+ $(,)?) => {$(
        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <$inner as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <$inner as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <$inner as Encode<Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                <$inner as Decode<Postgres>>::decode(value).map(Self)
            }
        }
    )+};
}

postgres_as_inner!(Id => Uuid, Time => DateTime<Utc>, Tags => Vec<String>);

impl<T: PgHasArrayType> Type<Postgres> for List<T> {
    fn type_info() -> PgTypeInfo {
        T::array_type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        T::array_compatible(ty)
    }
}

impl<T> Encode<'_, Postgres> for List<T>
where
    for<'q> T: Encode<'q, Postgres> + Type<Postgres> + PgHasArrayType,
{
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<T> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

/// SQLite stores the type as `$repr`, converted on the way in and out.
macro_rules! sqlite_as {
    ($ty:ty, $repr:ty, |$e:ident| $enc:expr, |$d:ident| $dec:expr) => {
        impl Type<Sqlite> for $ty {
            fn type_info() -> SqliteTypeInfo {
                <$repr as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <$repr as Type<Sqlite>>::compatible(ty)
            }
        }

        impl Encode<'_, Sqlite> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut SqliteArgumentsBuffer,
            ) -> Result<IsNull, BoxDynError> {
                let $e = self;
                <$repr as Encode<Sqlite>>::encode($enc, buf)
            }
        }

        impl<'r> Decode<'r, Sqlite> for $ty {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let $d = value;
                $dec
            }
        }
    };
}

// Encoded by the closure on the left, decoded by the one on the right.
sqlite_as!(Id, String, |id| id.0.to_string(), |v| {
    Ok(Id(Uuid::from_str(<&str as Decode<Sqlite>>::decode(v)?)?))
});

sqlite_as!(Time, i64, |t| t.0.timestamp_millis(), |v| {
    let ms = <i64 as Decode<Sqlite>>::decode(v)?;
    DateTime::from_timestamp_millis(ms)
        .map(Time)
        .ok_or_else(|| format!("time {ms}").into())
});

sqlite_as!(Tags, String, |tags| serde_json::to_string(&tags.0)?, |v| {
    Ok(Tags(serde_json::from_str(
        <&str as Decode<Sqlite>>::decode(v)?,
    )?))
});

impl<T> Type<Sqlite> for List<T> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<T: Serialize> Encode<'_, Sqlite> for List<T> {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(&self.0)?, buf)
    }
}

/// An event's source, parsed from its stored name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Src(pub Source);

/// A participant id column (sender, driver, agent), parsed from its text.
#[derive(Debug, Clone)]
pub(super) struct Participant(pub ParticipantId);

/// Text columns parsed into a Rust type: the same on both engines.
macro_rules! parsed_text {
    ($ty:ty, |$s:ident| $parse:expr) => {
        impl<DB: Database> Type<DB> for $ty
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s = <&'r str as Decode<'r, DB>>::decode(value)?;
                $parse
            }
        }
    };
}

parsed_text!(Src, |s| Source::parse(s)
    .map(Src)
    .ok_or_else(|| format!("unknown source {s:?}").into()));

parsed_text!(Participant, |s| Ok(Participant(ParticipantId::parse(s)?)));
