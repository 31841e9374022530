//! The appservice's virtual users (agents): registration, profile, presence.

use ruma::{
    UserId,
    api::{client::account::register, error::ErrorKind},
    profile::ProfileFieldValue,
};

use super::{Homeserver, HomeserverError};

impl Homeserver {
    /// Sets the presence of `user` (a user of the appservice), as that user.
    pub async fn set_presence(
        &self,
        user: &UserId,
        presence: ruma::presence::PresenceState,
        status_msg: Option<String>,
    ) -> Result<(), HomeserverError> {
        let mut request =
            ruma::api::client::presence::set_presence::v3::Request::new(user.to_owned(), presence);
        request.status_msg = status_msg;
        self.send(request, Some(user)).await?;
        Ok(())
    }

    /// Registers the virtual user `localpart` (`m.login.application_service`, no login).
    /// A user that already exists is not an error.
    pub async fn register_user(&self, localpart: &str) -> Result<(), HomeserverError> {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.login_type = Some(register::LoginType::ApplicationService);
        request.inhibit_login = true;
        match self.send(request, None).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), Some(ErrorKind::UserInUse)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets the display name of `user` (a user of the appservice), as that user.
    pub async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), HomeserverError> {
        let request = ruma::api::client::profile::set_profile_field::v3::Request::new(
            user.to_owned(),
            ProfileFieldValue::DisplayName(name.to_owned()),
        );
        self.send(request, Some(user)).await?;
        Ok(())
    }
}
