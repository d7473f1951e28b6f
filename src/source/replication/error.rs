//! Why a replication connection failed, typed where callers branch: a
//! refusal a person must fix is fatal, a slot in use means standing by,
//! anything else is retried.

use std::io;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, ErrorResponseBody};
use rustls::pki_types::InvalidDnsNameError;
use tokio_postgres::error::SqlState;

use crate::database::SslMode;

/// Why the replication connection failed.
///
/// `pub` (like the types of its variants) only because `SidecarError`
/// carries it; the module is crate-private.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot reach {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Server(ServerError),
    #[error("unexpected message from the server: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the server ended the replication stream")]
    Ended,
    #[error("{0} is read-only (a standby) and target_session_attrs=read-write asks for a primary")]
    ReadOnly(String),
}

impl ReplicationError {
    /// Another connection streams from the slot: this instance stands by.
    pub(crate) fn is_slot_in_use(&self) -> bool {
        self.server().is_some_and(ServerError::is_slot_in_use)
    }

    /// Bad password, no such role or database, no replication right: a
    /// reconnect cannot fix these.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, ReplicationError::Auth(_))
            || self.server().is_some_and(|e| {
                e.is_auth_failure() || e.is_unknown_database() || e.is_permission_denied()
            })
    }

    fn server(&self) -> Option<&ServerError> {
        match self {
            ReplicationError::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// Authentication failed on our side, before the server could say no.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the server asks for a password; put it in database.url")]
    PasswordMissing,
    #[error(
        "the server asks for an authentication method leadhook does not support (use scram-sha-256, md5 or password)"
    )]
    UnsupportedMethod,
    #[error("the server offers no SCRAM-SHA-256")]
    NoScramSha256,
    /// The server could not prove it knows the password.
    #[error("server signature: {0}")]
    ServerSignature(io::Error),
}

/// TLS could not be set up as `sslmode` asks.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{host}: {source}")]
    InvalidName {
        host: String,
        source: InvalidDnsNameError,
    },
    #[error("{0}")]
    Handshake(io::Error),
    #[error("the server does not support TLS but database.url asks for sslmode={0:?}")]
    Unavailable(SslMode),
}

/// The server sent something this step of the protocol does not allow.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Another message than the one this step waits for, e.g. "SASL final".
    #[error("expected {0}")]
    Expected(&'static str),
    #[error("unexpected message in the replication stream")]
    InStream,
    /// In the answer to this simple query.
    #[error("unexpected message in the answer to {0}")]
    InAnswer(String),
    #[error("truncated replication message")]
    Truncated,
    /// A frame header announcing more than `source.max_message_size`:
    /// refused before anything is read or reserved for it.
    #[error(
        "the server announced a {len}-byte message, over source.max_message_size ({limit} bytes): refused before reading it; \
         raise source.max_message_size if a lead row can be this large"
    )]
    TooLarge { len: usize, limit: usize },
    #[error("unknown replication message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("unexpected answer {0:#04x} to SSLRequest")]
    SslAnswer(u8),
    /// What is wrong with the answer to `IDENTIFY_SYSTEM`.
    #[error("IDENTIFY_SYSTEM: {0}")]
    IdentifySystem(&'static str),
    /// Not the server's doing, and not reached (no host means localhost);
    /// kept under the message it has always had.
    #[error("database.url names no host")]
    NoHost,
}

/// An ErrorResponse, kept whole so the message can tell the user what to do.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub(super) code: SqlState,
    pub(super) message: String,
    pub(super) detail: Option<String>,
    pub(super) hint: Option<String>,
}

impl ServerError {
    /// SQLSTATE class 28 (invalid authorization): a bad password, an
    /// unknown role, no `pg_hba.conf` entry.
    pub(crate) fn is_auth_failure(&self) -> bool {
        self.code.code().starts_with("28")
    }

    /// 3D000: the database does not exist.
    pub(crate) fn is_unknown_database(&self) -> bool {
        self.code == SqlState::INVALID_CATALOG_NAME
    }

    /// 42501: e.g. a role without the REPLICATION attribute.
    pub(crate) fn is_permission_denied(&self) -> bool {
        self.code == SqlState::INSUFFICIENT_PRIVILEGE
    }

    /// 55006 (object in use): the slot is streaming to another connection.
    pub(crate) fn is_slot_in_use(&self) -> bool {
        self.code == SqlState::OBJECT_IN_USE
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server error {}: {}", self.code.code(), self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Reads an ErrorResponse; the fields we do not show are skipped.
pub(super) fn server_error(body: &ErrorResponseBody) -> ReplicationError {
    let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), None, None);
    let mut fields: ErrorFields<'_> = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    ReplicationError::Server(ServerError {
        code: SqlState::from_code(&code),
        message,
        detail,
        hint,
    })
}
