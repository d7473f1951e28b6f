//! Authentication after the startup message: cleartext password, md5 and
//! SCRAM-SHA-256 (without channel binding).

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{AuthenticationSaslBody, Message};
use postgres_protocol::message::frontend;

use super::error::{AuthError, ProtocolError, server_error};
use super::frame::Frame;
use super::{ReplicationConnection, ReplicationError};

impl ReplicationConnection {
    /// Answers whichever method the server asks for, until AuthenticationOk.
    pub(super) async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&[u8]>,
    ) -> Result<(), ReplicationError> {
        let need_password = || AuthError::PasswordMissing;
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationOk) => Ok(()),
            Frame::Message(Message::AuthenticationCleartextPassword) => {
                frontend::password_message(
                    password.ok_or_else(need_password)?,
                    &mut self.write_buf,
                )?;
                self.flush().await?;
                self.expect_auth_ok().await
            }
            Frame::Message(Message::AuthenticationMd5Password(body)) => {
                let hash = md5_hash(
                    user.as_bytes(),
                    password.ok_or_else(need_password)?,
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                self.flush().await?;
                self.expect_auth_ok().await
            }
            Frame::Message(Message::AuthenticationSasl(body)) => {
                self.scram(body, password.ok_or_else(need_password)?).await
            }
            Frame::Message(Message::ErrorResponse(body)) => Err(server_error(&body)),
            _ => Err(AuthError::UnsupportedMethod.into()),
        }
    }

    async fn scram(
        &mut self,
        body: AuthenticationSaslBody,
        password: &[u8],
    ) -> Result<(), ReplicationError> {
        let mut mechanisms = body.mechanisms();
        let mut offered = false;
        while let Some(mechanism) = mechanisms.next()? {
            offered |= mechanism == sasl::SCRAM_SHA_256;
        }
        if !offered {
            return Err(AuthError::NoScramSha256.into());
        }
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.write_buf)?;
        self.flush().await?;
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationSaslContinue(body)) => {
                scram.update(body.data())?
            }
            Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
            _ => return Err(ProtocolError::Expected("SASL continue").into()),
        }
        frontend::sasl_response(scram.message(), &mut self.write_buf)?;
        self.flush().await?;
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationSaslFinal(body)) => scram
                .finish(body.data())
                .map_err(AuthError::ServerSignature)?,
            Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
            _ => return Err(ProtocolError::Expected("SASL final").into()),
        }
        self.expect_auth_ok().await
    }

    async fn expect_auth_ok(&mut self) -> Result<(), ReplicationError> {
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationOk) => Ok(()),
            Frame::Message(Message::ErrorResponse(body)) => Err(server_error(&body)),
            _ => Err(ProtocolError::Expected("AuthenticationOk").into()),
        }
    }
}
