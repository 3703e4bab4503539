//! Administration: users, roles and permissions as data. The admin API and
//! the command line call these same functions.

use std::sync::Arc;

use super::audit::{Actor, Audit, Ending, EventType};
use super::keys;
use super::keys::KeyManager;
use super::principals::Principals;
use super::sessions::Sessions;
use crate::model::oidc::IdTokenAlg;
use crate::model::types::{Permission, RoleName, UserId};
use crate::store::{AdminChange, AdminChangeError, KeyPurpose, UserRecord, UserStore};

/// Most users one page may hold.
pub const MAX_PAGE: u32 = 200;

/// One page of users and the cursor of the next, if any.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<UserRecord>,
    pub next_cursor: Option<String>,
}

/// A malformed pagination cursor.
pub use crate::model::cursor::{BadCursor, PageError};
use crate::model::cursor::{decode_cursor, encode_cursor};

/// Whether `actor`'s changes to users and roles must leave at least one
/// enabled user holding `gatehouse:admin`: a signed-in user's (the admin
/// API's) must, or the last administrator could lock everyone out of it;
/// the command line's need not, since it is how an operator recovers.
pub(crate) fn keeps_an_admin(actor: Actor) -> bool {
    matches!(actor, Actor::User(_))
}

/// A role and its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<String>,
}

/// Users, roles and signing keys, as the admin API and the command line
/// change them.
pub struct Admin {
    users: Arc<dyn UserStore>,
    sessions: Arc<Sessions>,
    principals: Arc<Principals>,
    keys: Arc<KeyManager>,
    audit: Arc<Audit>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    pub fn new(
        users: Arc<dyn UserStore>,
        sessions: Arc<Sessions>,
        principals: Arc<Principals>,
        keys: Arc<KeyManager>,
        audit: Arc<Audit>,
    ) -> Self {
        Self {
            users,
            sessions,
            principals,
            keys,
            audit,
        }
    }

    /// Rotates the access-token signing key (see [`KeyManager::rotate`])
    /// and records who did. Returns the new kid.
    ///
    /// # Errors
    /// As [`KeyManager::rotate`].
    pub async fn rotate_signing_key(&self, actor: Actor) -> anyhow::Result<String> {
        let kid = self.keys.rotate().await?;
        let event = self
            .audit
            .event(EventType::KeyRotated, actor)
            .detail("kid", kid.as_str())
            .detail("alg", keys::alg_name(self.keys.ring().alg))
            .detail("purpose", KeyPurpose::Access.as_str());
        self.audit.record_one(event).await;
        Ok(kid)
    }

    /// Rotates the ID-token signing keys, one of each algorithm (see
    /// [`KeyManager::rotate_id_token_keys`]), and records who did, one
    /// `key_rotated` event a key. Returns the new kids in the order of
    /// [`IdTokenAlg::ALL`].
    ///
    /// # Errors
    /// As [`KeyManager::rotate_id_token_keys`].
    pub async fn rotate_id_token_keys(&self, actor: Actor) -> anyhow::Result<Vec<String>> {
        let kids = self.keys.rotate_id_token_keys().await?;
        let events = IdTokenAlg::ALL
            .into_iter()
            .zip(&kids)
            .map(|(alg, kid)| {
                self.audit
                    .event(EventType::KeyRotated, actor)
                    .detail("kid", kid.as_str())
                    .detail("alg", alg.as_str())
                    .detail("purpose", KeyPurpose::IdToken.as_str())
            })
            .collect();
        self.audit.record(events).await;
        Ok(kids)
    }

    /// Creates a role or replaces its permissions. A signed-in
    /// administrator (the admin API) may not leave no enabled user holding
    /// `gatehouse:admin`; the command line may.
    ///
    /// # Errors
    /// [`AdminChangeError::LastAdmin`]; store failures.
    pub async fn set_role(
        &self,
        name: &RoleName,
        permissions: &[Permission],
        actor: Actor,
    ) -> Result<(), AdminChangeError> {
        let mut perms: Vec<String> = permissions.iter().map(|p| p.as_str().to_owned()).collect();
        perms.sort();
        perms.dedup();
        let users = &self.users;
        if keeps_an_admin(actor) {
            users
                .change_keeping_an_admin(AdminChange::PutRole(name, &perms))
                .await?;
        } else {
            users.put_role(name, &perms).await?;
        }
        self.principals.changed().await;
        let event = self
            .audit
            .event(EventType::RoleChanged, actor)
            .detail("role", name.as_str())
            .detail("permissions", perms);
        self.audit.record_one(event).await;
        Ok(())
    }

    /// A page of users in creation order.
    ///
    /// # Errors
    /// [`PageError::BadCursor`] for a cursor we did not issue;
    /// [`PageError::Store`] for store failures.
    pub async fn list_users(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<UserPage, PageError> {
        let after = cursor.map(|c| decode_cursor(c).map(UserId)).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        // One more than asked tells whether a next page exists.
        let mut users = self.users.list_users(after, limit + 1).await?;
        let next_cursor = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users.last().map(|u| encode_cursor(u.id.0))
        } else {
            None
        };
        Ok(UserPage { users, next_cursor })
    }

    /// One user.
    ///
    /// # Errors
    /// Store failures.
    pub async fn user(&self, id: UserId) -> anyhow::Result<Option<UserRecord>> {
        self.users.user_by_id(id).await
    }

    /// A user by email (normalised first); `None` for an unknown or
    /// malformed address.
    ///
    /// # Errors
    /// Store failures.
    pub async fn user_by_email(&self, email: &str) -> anyhow::Result<Option<UserRecord>> {
        match crate::model::types::Email::parse(email) {
            Ok(e) => self.users.user_by_email(&e).await,
            Err(_) => Ok(None),
        }
    }

    /// Disables or enables a user. Disabling ends every session of the user
    /// and refuses their outstanding access tokens at once. A signed-in
    /// administrator may not disable the last enabled one.
    ///
    /// # Errors
    /// [`AdminChangeError::LastAdmin`]; store failures.
    pub async fn set_disabled(
        &self,
        id: UserId,
        disabled: bool,
        actor: Actor,
    ) -> Result<Option<UserRecord>, AdminChangeError> {
        let users = &self.users;
        // Enabling never takes an administrator away.
        let changed = if disabled && keeps_an_admin(actor) {
            users
                .change_keeping_an_admin(AdminChange::Disable(id))
                .await?
        } else {
            users.set_disabled(id, disabled).await?
        };
        if !changed {
            return Ok(None);
        }
        self.principals.changed().await;
        let kind = if disabled {
            EventType::UserDisabled
        } else {
            EventType::UserEnabled
        };
        self.audit
            .record_one(self.audit.event(kind, actor).user(id))
            .await;
        if disabled {
            // The flag is set first, so no new session can start meanwhile.
            self.sessions
                .end_all_of(id, None, actor, Ending::UserDisabled)
                .await?;
        }
        Ok(self.users.user_by_id(id).await?)
    }

    /// Deletes a user after ending every session of theirs (so their tokens
    /// are refused at once); `false` when there was no such user. A
    /// signed-in administrator may not delete the last enabled one: then
    /// nothing happens at all.
    ///
    /// # Errors
    /// [`AdminChangeError::LastAdmin`]; store failures.
    pub async fn delete_user(&self, id: UserId, actor: Actor) -> Result<bool, AdminChangeError> {
        let users = &self.users;
        let guarded = keeps_an_admin(actor);
        // Disabled first, so no new session can start meanwhile; for the
        // last administrator that is where the refusal comes, before any
        // session ends.
        let disabled = if guarded {
            users
                .change_keeping_an_admin(AdminChange::Disable(id))
                .await?
        } else {
            users.set_disabled(id, true).await?
        };
        if !disabled {
            return Ok(false);
        }
        self.principals.changed().await;
        self.sessions
            .end_all_of(id, None, actor, Ending::UserDeleted)
            .await?;
        let deleted = if guarded {
            users
                .change_keeping_an_admin(AdminChange::DeleteUser(id))
                .await?
        } else {
            users.delete_user(id).await?
        };
        self.principals.changed().await;
        if deleted {
            let event = self.audit.event(EventType::UserDeleted, actor).user(id);
            self.audit.record_one(event).await;
        }
        Ok(deleted)
    }

    /// Replaces a user's roles. Gatehouse's own decisions see the change at
    /// once (on other nodes within `principals::FRESH_FOR`); services that
    /// verify access tokens themselves at the token's next refresh. A
    /// signed-in administrator may not take `gatehouse:admin` from the last
    /// enabled user holding it.
    ///
    /// # Errors
    /// [`AdminChangeError::UnknownRole`] names the first role that does not
    /// exist; [`AdminChangeError::LastAdmin`]; store failures.
    pub async fn set_user_roles(
        &self,
        id: UserId,
        roles: &[RoleName],
        actor: Actor,
    ) -> Result<Option<UserRecord>, AdminChangeError> {
        let users = &self.users;
        let changed = if keeps_an_admin(actor) {
            users
                .change_keeping_an_admin(AdminChange::SetRoles(id, roles))
                .await?
        } else {
            users.set_roles(id, roles).await?
        };
        if !changed {
            return Ok(None);
        }
        self.principals.changed().await;
        let user = self.users.user_by_id(id).await?;
        if let Some(user) = &user {
            let event = self
                .audit
                .event(EventType::UserRolesChanged, actor)
                .user(id)
                .detail("roles", user.roles.clone());
            self.audit.record_one(event).await;
        }
        Ok(user)
    }

    /// Every role with its permissions.
    ///
    /// # Errors
    /// Store failures.
    pub async fn roles(&self) -> anyhow::Result<Vec<Role>> {
        Ok(self
            .users
            .roles()
            .await?
            .into_iter()
            .map(|(name, permissions)| Role { name, permissions })
            .collect())
    }

    /// Deletes a role; its holders lose its permissions at once. A
    /// signed-in administrator may not delete the last role granting
    /// `gatehouse:admin` to an enabled user.
    ///
    /// # Errors
    /// [`AdminChangeError::LastAdmin`]; store failures.
    pub async fn delete_role(
        &self,
        name: &RoleName,
        actor: Actor,
    ) -> Result<bool, AdminChangeError> {
        let users = &self.users;
        let deleted = if keeps_an_admin(actor) {
            users
                .change_keeping_an_admin(AdminChange::DeleteRole(name))
                .await?
        } else {
            users.delete_role(name).await?
        };
        self.principals.changed().await;
        if deleted {
            let event = self
                .audit
                .event(EventType::RoleDeleted, actor)
                .detail("role", name.as_str());
            self.audit.record_one(event).await;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let id = UserId::new();
        assert_eq!(decode_cursor(&encode_cursor(id.0)).expect("ours"), id.0);
        for bad in ["", "!!", "AAAA", "' OR 1=1 --"] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
