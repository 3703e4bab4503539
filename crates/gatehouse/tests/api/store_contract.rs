//! The storage contract (the doc comments of `gatehouse::store`), written once
//! and run against every backend: each behaviour is one async function over
//! `Stores`, and `contract!` makes a `sqlite_*` and a `postgres_*` test of it,
//! each on a fresh database of its own. `redis_contract!` runs the session,
//! refresh-token, revocation and failure-counter behaviours once more with
//! sessions and counters on Redis (under a key prefix of the test's own) and
//! users on a fresh SQLite file.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::auth::audit::{Actor, AuditEvent, AuditQuery, EventType};
use gatehouse::auth::types::{Email, ResourceServerId, RoleName, SecretHash, SessionId, UserId};
use gatehouse::config::DatabaseUrl;
use gatehouse::model::amr::Amr;
use gatehouse::model::mail::{ClaimedMail, MailKind, OutboxMail, OutboxStats, TokenPurpose};
use gatehouse::store::{
    self, AdminChange, AdminChangeError, Attempt, Ceremony, CeremonyKind,
    CreateResourceServerError, CreateUserError, DeviceSeen, FactorSummary, KeyPurpose,
    MailTokenRecord, NewUser, PasskeyRecord, PendingLogin, RefreshRecord, ResourceServerRecord,
    RolesError, SessionRecord, StoredKey, Stores, TotpLogin, TotpRecord, UserRecord,
};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::{PG_SLOTS, PgDatabase, REDIS_URL, RedisPrefix};
use gatehouse::store::redis::RedisStore;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// Generates, for each behaviour, a test on a fresh SQLite file and a test on
/// a fresh PostgreSQL database.
macro_rules! contract {
    ($($behaviour:ident => $sqlite:ident, $postgres:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            let (stores, _db) = sqlite().await;
            $behaviour(stores).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let _slot = PG_SLOTS.acquire().await.expect("the semaphore is never closed");
            let (stores, _db) = postgres().await;
            $behaviour(stores).await;
        }
    )+};
}

/// Generates, for each behaviour, a test with users and keys on a fresh
/// SQLite file and sessions and failure counters on Redis, under a fresh key
/// prefix whose keys are deleted afterwards.
macro_rules! redis_contract {
    ($($behaviour:ident => $redis:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $redis() {
            let (stores, _prefix, _db) = redis().await;
            $behaviour(stores).await;
        }
    )+};
}

/// Users and keys on a new SQLite file; sessions, revocations and failure
/// counters on Redis under a prefix of the test's own (the many-nodes shape,
/// with SQLite standing in for PostgreSQL).
async fn redis() -> (Stores, RedisPrefix, tempfile::TempDir) {
    let prefix = RedisPrefix::create().await;
    let (stores, dir) = sqlite().await;
    let redis = RedisStore::open(REDIS_URL, &prefix.prefix)
        .await
        .unwrap_or_else(|e| panic!("opening the Redis store on {REDIS_URL}: {e:#}"));
    let redis = Arc::new(redis);
    let stores = Stores {
        sessions: redis.clone(),
        failures: redis,
        ..stores
    };
    (stores, prefix, dir)
}

/// The stores on a new SQLite file, and the directory that holds it.
async fn sqlite() -> (Stores, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("gatehouse.db");
    let url = DatabaseUrl::Sqlite(format!("sqlite://{}", path.display()));
    let stores = store::open_sql(&url)
        .await
        .unwrap_or_else(|e| panic!("opening {url:?}: {e:#}"));
    (stores, dir)
}

/// The stores on a new PostgreSQL database, and the guard that drops it.
async fn postgres() -> (Stores, PgDatabase) {
    let db = PgDatabase::create().await;
    let url = DatabaseUrl::Postgres(db.url().into());
    let stores = store::open_sql(&url)
        .await
        .unwrap_or_else(|e| panic!("opening the PostgreSQL stores on {url:?}: {e:#}"));
    (stores, db)
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// Every instant is fixed, so the stores judge time only by what they are told.
/// It lies far in the future because Redis applies its TTLs (PEXPIREAT) by its
/// own clock: a fixture in the past would vanish as soon as it was written.
const T0: OffsetDateTime = datetime!(2126-03-01 12:00 UTC);
const DAY: i64 = 86_400;
const MS: time::Duration = time::Duration::milliseconds(1);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("a valid email")
}

fn role(s: &str) -> RoleName {
    RoleName::parse(s).expect("a valid role name")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

async fn put_role(stores: &Stores, name: &str, permissions: &[&str]) {
    stores
        .users
        .put_role(&role(name), &strings(permissions))
        .await
        .expect("put_role");
}

fn new_user(address: &str, roles: &[&str]) -> NewUser {
    NewUser {
        id: UserId::new(),
        email: email(address),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".to_owned(),
        created_at: T0,
        roles: roles.iter().map(|r| role(r)).collect(),
    }
}

async fn create(stores: &Stores, address: &str, roles: &[&str]) -> UserRecord {
    stores
        .users
        .create_user(new_user(address, roles))
        .await
        .unwrap_or_else(|e| panic!("creating {address}: {e:#}"))
}

async fn user(stores: &Stores, id: UserId) -> Option<UserRecord> {
    stores.users.user_by_id(id).await.expect("user_by_id")
}

async fn roles_of(stores: &Stores, id: UserId) -> Vec<String> {
    user(stores, id).await.expect("the user exists").roles
}

async fn permissions(stores: &Stores, id: UserId) -> Vec<String> {
    stores
        .users
        .permissions_of(id)
        .await
        .expect("permissions_of")
}

/// A session of `user` whose secret hash is `[tag; 32]`, created and last
/// seen at `created_at`, expiring 30 days later.
fn session(user: UserId, tag: u8, created_at: OffsetDateTime) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        user_id: user,
        secret_hash: SecretHash([tag; 32]),
        created_at,
        last_seen_at: created_at,
        expires_at: created_at + time::Duration::days(30),
        user_agent: Some("contract-test/1.0".to_owned()),
        ip: Some("192.0.2.7".to_owned()),
        // Not the default, so that every store proves it keeps it.
        amr: Amr::PASSWORD_OTP,
        link: None,
    }
}

async fn insert(stores: &Stores, s: &SessionRecord) {
    stores
        .sessions
        .insert_session(s)
        .await
        .expect("insert_session");
}

async fn session_by_id(stores: &Stores, id: SessionId) -> Option<SessionRecord> {
    stores
        .sessions
        .session_by_id(id)
        .await
        .expect("session_by_id")
}

async fn sessions_of(stores: &Stores, id: UserId) -> Vec<SessionRecord> {
    stores.sessions.sessions_of(id).await.expect("sessions_of")
}

async fn revocations(stores: &Stores, now: OffsetDateTime) -> Vec<(SessionId, OffsetDateTime)> {
    sorted(stores.sessions.revocations(now).await.expect("revocations"))
}

async fn refresh(stores: &Stores, hash: SecretHash) -> Option<RefreshRecord> {
    stores
        .sessions
        .refresh_by_hash(&hash)
        .await
        .expect("refresh_by_hash")
}

/// An access-token key.
fn key(kid: &str, alg: &str, created_at: OffsetDateTime) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        purpose: KeyPurpose::Access,
        alg: alg.to_owned(),
        private_key: format!("pkcs8 of {kid}").into_bytes(),
        encrypted: false,
        public_jwk: format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"AAAA"}}"#),
        created_at,
        retire_at: None,
    }
}

/// An ID-token key.
fn id_key(kid: &str, alg: &str, created_at: OffsetDateTime) -> StoredKey {
    StoredKey {
        purpose: KeyPurpose::IdToken,
        ..key(kid, alg, created_at)
    }
}

async fn keys(stores: &Stores) -> Vec<StoredKey> {
    stores.keys.signing_keys().await.expect("signing_keys")
}

contract! {
    created_user_reads_back_by_normalised_email_and_id
        => sqlite_created_user_reads_back_by_normalised_email_and_id,
           postgres_created_user_reads_back_by_normalised_email_and_id;
    a_taken_email_is_refused
        => sqlite_a_taken_email_is_refused, postgres_a_taken_email_is_refused;
    concurrent_creates_of_one_email_admit_exactly_one
        => sqlite_concurrent_creates_of_one_email_admit_exactly_one,
           postgres_concurrent_creates_of_one_email_admit_exactly_one;
    an_unknown_role_is_named_and_no_user_is_left
        => sqlite_an_unknown_role_is_named_and_no_user_is_left,
           postgres_an_unknown_role_is_named_and_no_user_is_left;
    a_repeated_role_is_granted_once
        => sqlite_a_repeated_role_is_granted_once, postgres_a_repeated_role_is_granted_once;
    set_password_hash_replaces_only_the_hash
        => sqlite_set_password_hash_replaces_only_the_hash,
           postgres_set_password_hash_replaces_only_the_hash;
    permissions_are_the_sorted_distinct_union_over_roles
        => sqlite_permissions_are_the_sorted_distinct_union_over_roles,
           postgres_permissions_are_the_sorted_distinct_union_over_roles;
    a_user_with_permissions_is_its_two_reads_in_one
        => sqlite_a_user_with_permissions_is_its_two_reads_in_one,
           postgres_a_user_with_permissions_is_its_two_reads_in_one;
    put_role_replaces_the_permissions
        => sqlite_put_role_replaces_the_permissions, postgres_put_role_replaces_the_permissions;
    roles_are_listed_by_name_with_sorted_permissions
        => sqlite_roles_are_listed_by_name_with_sorted_permissions,
           postgres_roles_are_listed_by_name_with_sorted_permissions;
    delete_role_removes_it_and_its_assignments
        => sqlite_delete_role_removes_it_and_its_assignments,
           postgres_delete_role_removes_it_and_its_assignments;
    set_roles_replaces_the_roles
        => sqlite_set_roles_replaces_the_roles, postgres_set_roles_replaces_the_roles;
    set_roles_with_an_unknown_role_keeps_the_previous_roles
        => sqlite_set_roles_with_an_unknown_role_keeps_the_previous_roles,
           postgres_set_roles_with_an_unknown_role_keeps_the_previous_roles;
    set_roles_of_an_unknown_user_is_false
        => sqlite_set_roles_of_an_unknown_user_is_false,
           postgres_set_roles_of_an_unknown_user_is_false;
    set_disabled_sets_and_clears_the_flag
        => sqlite_set_disabled_sets_and_clears_the_flag,
           postgres_set_disabled_sets_and_clears_the_flag;
    delete_user_takes_roles_sessions_and_refresh_tokens_with_it
        => sqlite_delete_user_takes_roles_sessions_and_refresh_tokens_with_it,
           postgres_delete_user_takes_roles_sessions_and_refresh_tokens_with_it;
    list_users_pages_in_creation_order
        => sqlite_list_users_pages_in_creation_order, postgres_list_users_pages_in_creation_order;
    ping_answers => sqlite_ping_answers, postgres_ping_answers;
    resource_servers_read_back_by_key_hash_and_list_by_name
        => sqlite_resource_servers_read_back_by_key_hash_and_list_by_name,
           postgres_resource_servers_read_back_by_key_hash_and_list_by_name;
    a_taken_resource_server_name_is_refused
        => sqlite_a_taken_resource_server_name_is_refused,
           postgres_a_taken_resource_server_name_is_refused;
    concurrent_creates_of_one_resource_server_name_admit_exactly_one
        => sqlite_concurrent_creates_of_one_resource_server_name_admit_exactly_one,
           postgres_concurrent_creates_of_one_resource_server_name_admit_exactly_one;
    deleting_a_resource_server_ends_its_key
        => sqlite_deleting_a_resource_server_ends_its_key,
           postgres_deleting_a_resource_server_ends_its_key;
    changes_keeping_an_admin_refuse_to_leave_none
        => sqlite_changes_keeping_an_admin_refuse_to_leave_none,
           postgres_changes_keeping_an_admin_refuse_to_leave_none;
    changes_keeping_an_admin_are_made_while_another_admin_remains
        => sqlite_changes_keeping_an_admin_are_made_while_another_admin_remains,
           postgres_changes_keeping_an_admin_are_made_while_another_admin_remains;
    concurrent_changes_keeping_an_admin_leave_one
        => sqlite_concurrent_changes_keeping_an_admin_leave_one,
           postgres_concurrent_changes_keeping_an_admin_leave_one;

    session_reads_back_by_secret_hash_and_id
        => sqlite_session_reads_back_by_secret_hash_and_id,
           postgres_session_reads_back_by_secret_hash_and_id;
    touch_session_moves_last_seen
        => sqlite_touch_session_moves_last_seen, postgres_touch_session_moves_last_seen;
    sessions_of_lists_only_the_users_sessions_oldest_first
        => sqlite_sessions_of_lists_only_the_users_sessions_oldest_first,
           postgres_sessions_of_lists_only_the_users_sessions_oldest_first;
    delete_session_ends_only_the_owners_session_and_revokes_it
        => sqlite_delete_session_ends_only_the_owners_session_and_revokes_it,
           postgres_delete_session_ends_only_the_owners_session_and_revokes_it;
    delete_sessions_of_ends_every_session_and_revokes_them
        => sqlite_delete_sessions_of_ends_every_session_and_revokes_them,
           postgres_delete_sessions_of_ends_every_session_and_revokes_them;
    delete_sessions_of_spares_the_kept_session
        => sqlite_delete_sessions_of_spares_the_kept_session,
           postgres_delete_sessions_of_spares_the_kept_session;
    revocations_lists_only_those_in_force
        => sqlite_revocations_lists_only_those_in_force,
           postgres_revocations_lists_only_those_in_force;
    revocation_log_numbers_endings_in_order_and_resumes_after_a_cursor
        => sqlite_revocation_log_numbers_endings_in_order_and_resumes_after_a_cursor,
           postgres_revocation_log_numbers_endings_in_order_and_resumes_after_a_cursor;
    revocation_log_skips_what_is_no_longer_in_force_and_pages
        => sqlite_revocation_log_skips_what_is_no_longer_in_force_and_pages,
           postgres_revocation_log_skips_what_is_no_longer_in_force_and_pages;
    delete_expired_sweeps_expired_and_idle_sessions_and_old_revocations
        => sqlite_delete_expired_sweeps_expired_and_idle_sessions_and_old_revocations,
           postgres_delete_expired_sweeps_expired_and_idle_sessions_and_old_revocations;
    delete_expired_agrees_with_the_domain_at_the_boundaries
        => sqlite_delete_expired_agrees_with_the_domain_at_the_boundaries,
           postgres_delete_expired_agrees_with_the_domain_at_the_boundaries;
    ending_a_session_deletes_its_refresh_tokens
        => sqlite_ending_a_session_deletes_its_refresh_tokens,
           postgres_ending_a_session_deletes_its_refresh_tokens;

    refresh_token_reads_back_unspent
        => sqlite_refresh_token_reads_back_unspent, postgres_refresh_token_reads_back_unspent;
    rotate_refresh_spends_a_token_once
        => sqlite_rotate_refresh_spends_a_token_once, postgres_rotate_refresh_spends_a_token_once;
    rotate_refresh_of_an_unknown_token_stores_nothing
        => sqlite_rotate_refresh_of_an_unknown_token_stores_nothing,
           postgres_rotate_refresh_of_an_unknown_token_stores_nothing;
    a_refresh_token_with_its_session_is_both_or_nothing
        => sqlite_a_refresh_token_with_its_session_is_both_or_nothing,
           postgres_a_refresh_token_with_its_session_is_both_or_nothing;
    concurrent_rotations_admit_exactly_one
        => sqlite_concurrent_rotations_admit_exactly_one,
           postgres_concurrent_rotations_admit_exactly_one;

    add_key_makes_the_new_key_current_and_schedules_the_others
        => sqlite_add_key_makes_the_new_key_current_and_schedules_the_others,
           postgres_add_key_makes_the_new_key_current_and_schedules_the_others;
    add_first_key_adds_only_the_first_key_of_its_algorithm
        => sqlite_add_first_key_adds_only_the_first_key_of_its_algorithm,
           postgres_add_first_key_adds_only_the_first_key_of_its_algorithm;
    concurrent_first_keys_leave_exactly_one_current
        => sqlite_concurrent_first_keys_leave_exactly_one_current,
           postgres_concurrent_first_keys_leave_exactly_one_current;
    signing_keys_are_listed_oldest_first
        => sqlite_signing_keys_are_listed_oldest_first,
           postgres_signing_keys_are_listed_oldest_first;
    set_private_key_replaces_the_private_part
        => sqlite_set_private_key_replaces_the_private_part,
           postgres_set_private_key_replaces_the_private_part;
    key_purposes_round_trip
        => sqlite_key_purposes_round_trip, postgres_key_purposes_round_trip;
    rotating_an_id_token_key_retires_only_that_algorithms_id_token_key
        => sqlite_rotating_an_id_token_key_retires_only_that_algorithms_id_token_key,
           postgres_rotating_an_id_token_key_retires_only_that_algorithms_id_token_key;
    rotating_the_access_key_retires_no_id_token_key
        => sqlite_rotating_the_access_key_retires_no_id_token_key,
           postgres_rotating_the_access_key_retires_no_id_token_key;
    add_first_key_is_first_per_purpose_and_algorithm
        => sqlite_add_first_key_is_first_per_purpose_and_algorithm,
           postgres_add_first_key_is_first_per_purpose_and_algorithm;
    concurrent_first_keys_leave_one_current_per_purpose_and_algorithm
        => sqlite_concurrent_first_keys_leave_one_current_per_purpose_and_algorithm,
           postgres_concurrent_first_keys_leave_one_current_per_purpose_and_algorithm;

    failure_counter_counts_within_the_window
        => sqlite_failure_counter_counts_within_the_window,
           postgres_failure_counter_counts_within_the_window;
    failure_counter_restarts_when_the_window_closes
        => sqlite_failure_counter_restarts_when_the_window_closes,
           postgres_failure_counter_restarts_when_the_window_closes;
    failure_counter_reset_forgets
        => sqlite_failure_counter_reset_forgets, postgres_failure_counter_reset_forgets;
    concurrent_hits_each_see_a_distinct_count
        => sqlite_concurrent_hits_each_see_a_distinct_count,
           postgres_concurrent_hits_each_see_a_distinct_count;
    failure_counter_forgive_takes_back_one_attempt
        => sqlite_failure_counter_forgive_takes_back_one_attempt,
           postgres_failure_counter_forgive_takes_back_one_attempt;
    concurrent_forgivals_and_hits_keep_an_exact_count
        => sqlite_concurrent_forgivals_and_hits_keep_an_exact_count,
           postgres_concurrent_forgivals_and_hits_keep_an_exact_count;
    count_sessions_counts_every_users_unexpired_sessions
        => sqlite_count_sessions_counts_every_users_unexpired_sessions,
           postgres_count_sessions_counts_every_users_unexpired_sessions;
    audit_events_read_back_newest_first_with_every_field
        => sqlite_audit_events_read_back_newest_first_with_every_field,
           postgres_audit_events_read_back_newest_first_with_every_field;
    audit_events_filter_by_user_and_type_and_page_without_gaps
        => sqlite_audit_events_filter_by_user_and_type_and_page_without_gaps,
           postgres_audit_events_filter_by_user_and_type_and_page_without_gaps;
    audit_events_before_the_cutoff_are_deleted
        => sqlite_audit_events_before_the_cutoff_are_deleted,
           postgres_audit_events_before_the_cutoff_are_deleted;
}

// Not on Redis: the UserStore and KeyStore behaviours (users and keys stay in
// SQL), and `delete_user_takes_roles_sessions_and_refresh_tokens_with_it`,
// which relies on the SQL cascade from a user to their sessions; with sessions
// in Redis, deleting a user's sessions is the caller's `delete_sessions_of`.
redis_contract! {
    session_reads_back_by_secret_hash_and_id
        => redis_session_reads_back_by_secret_hash_and_id;
    touch_session_moves_last_seen
        => redis_touch_session_moves_last_seen;
    sessions_of_lists_only_the_users_sessions_oldest_first
        => redis_sessions_of_lists_only_the_users_sessions_oldest_first;
    delete_session_ends_only_the_owners_session_and_revokes_it
        => redis_delete_session_ends_only_the_owners_session_and_revokes_it;
    delete_sessions_of_ends_every_session_and_revokes_them
        => redis_delete_sessions_of_ends_every_session_and_revokes_them;
    delete_sessions_of_spares_the_kept_session
        => redis_delete_sessions_of_spares_the_kept_session;
    revocations_lists_only_those_in_force
        => redis_revocations_lists_only_those_in_force;
    revocation_log_numbers_endings_in_order_and_resumes_after_a_cursor
        => redis_revocation_log_numbers_endings_in_order_and_resumes_after_a_cursor;
    revocation_log_skips_what_is_no_longer_in_force_and_pages
        => redis_revocation_log_skips_what_is_no_longer_in_force_and_pages;
    delete_expired_sweeps_expired_and_idle_sessions_and_old_revocations
        => redis_delete_expired_sweeps_expired_and_idle_sessions_and_old_revocations;
    delete_expired_agrees_with_the_domain_at_the_boundaries
        => redis_delete_expired_agrees_with_the_domain_at_the_boundaries;
    ending_a_session_deletes_its_refresh_tokens
        => redis_ending_a_session_deletes_its_refresh_tokens;
    refresh_token_reads_back_unspent
        => redis_refresh_token_reads_back_unspent;
    rotate_refresh_spends_a_token_once
        => redis_rotate_refresh_spends_a_token_once;
    rotate_refresh_of_an_unknown_token_stores_nothing
        => redis_rotate_refresh_of_an_unknown_token_stores_nothing;
    a_refresh_token_with_its_session_is_both_or_nothing
        => redis_a_refresh_token_with_its_session_is_both_or_nothing;
    concurrent_rotations_admit_exactly_one
        => redis_concurrent_rotations_admit_exactly_one;
    failure_counter_counts_within_the_window
        => redis_failure_counter_counts_within_the_window;
    failure_counter_restarts_when_the_window_closes
        => redis_failure_counter_restarts_when_the_window_closes;
    failure_counter_reset_forgets
        => redis_failure_counter_reset_forgets;
    concurrent_hits_each_see_a_distinct_count
        => redis_concurrent_hits_each_see_a_distinct_count;
    failure_counter_forgive_takes_back_one_attempt
        => redis_failure_counter_forgive_takes_back_one_attempt;
    concurrent_forgivals_and_hits_keep_an_exact_count
        => redis_concurrent_forgivals_and_hits_keep_an_exact_count;
    count_sessions_counts_every_users_unexpired_sessions
        => redis_count_sessions_counts_every_users_unexpired_sessions;
}

// ---------------------------------------------------------------------------
// UserStore
// ---------------------------------------------------------------------------

async fn created_user_reads_back_by_normalised_email_and_id(stores: Stores) {
    put_role(&stores, "zeta", &["z:read"]).await;
    put_role(&stores, "alpha", &["a:read"]).await;
    put_role(&stores, "Beta", &["b:read"]).await;
    let new = NewUser {
        roles: vec![role("zeta"), role("alpha"), role("Beta")],
        ..new_user("  Alice@Example.COM ", &[])
    };
    let expected = UserRecord {
        id: new.id,
        email: "alice@example.com".to_owned(),
        password_hash: new.password_hash.clone(),
        created_at: T0,
        disabled: false,
        email_verified: false,
        // Sorted byte-wise, as Rust sorts strings.
        roles: strings(&["Beta", "alpha", "zeta"]),
    };

    let created = stores.users.create_user(new.clone()).await;

    assert_eq!(created.expect("create_user"), expected);
    for address in ["alice@example.com", " ALICE@example.com"] {
        let found = stores.users.user_by_email(&email(address)).await;
        assert_eq!(
            found.expect("user_by_email"),
            Some(expected.clone()),
            "{address}"
        );
    }
    assert_eq!(user(&stores, new.id).await, Some(expected));
    // "Not found" is Ok(None), never an error.
    let nobody = stores.users.user_by_email(&email("bob@example.com")).await;
    assert_eq!(nobody.expect("user_by_email"), None);
    assert_eq!(user(&stores, UserId::new()).await, None);
}

async fn a_taken_email_is_refused(stores: Stores) {
    let first = create(&stores, "alice@example.com", &[]).await;
    let second = new_user("ALICE@example.com", &[]);
    let second_id = second.id;

    let again = stores.users.create_user(second).await;

    assert!(
        matches!(again, Err(CreateUserError::EmailTaken)),
        "{again:?}"
    );
    assert_eq!(user(&stores, second_id).await, None);
    let found = stores
        .users
        .user_by_email(&email("alice@example.com"))
        .await;
    assert_eq!(found.expect("user_by_email"), Some(first));
}

async fn concurrent_creates_of_one_email_admit_exactly_one(stores: Stores) {
    const RACERS: usize = 8;
    let start = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (stores, start) = (stores.clone(), start.clone());
        racers.spawn(async move {
            let user = new_user("race@example.com", &[]);
            start.wait().await;
            stores.users.create_user(user).await
        });
    }

    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        match joined.expect("a racer finished") {
            Ok(record) => winners.push(record),
            Err(CreateUserError::EmailTaken) => {}
            // The store enforces uniqueness: a loser learns EmailTaken, not a
            // store failure (which would be a 503).
            Err(e) => panic!("a losing create must be EmailTaken, not {e:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "{winners:?}");
    let found = stores.users.user_by_email(&email("race@example.com")).await;
    assert_eq!(found.expect("user_by_email").as_ref(), winners.first());
    let all = stores
        .users
        .list_users(None, 100)
        .await
        .expect("list_users");
    assert_eq!(all, winners);
}

async fn an_unknown_role_is_named_and_no_user_is_left(stores: Stores) {
    put_role(&stores, "known", &["k:read"]).await;
    let new = new_user("alice@example.com", &["known", "ghost"]);
    let id = new.id;

    let refused = stores.users.create_user(new).await;

    assert!(
        matches!(&refused, Err(CreateUserError::UnknownRole(r)) if r == "ghost"),
        "{refused:?}"
    );
    // Atomic: neither the account nor its known role assignment remains.
    assert_eq!(user(&stores, id).await, None);
    let found = stores
        .users
        .user_by_email(&email("alice@example.com"))
        .await;
    assert_eq!(found.expect("user_by_email"), None);
    assert!(permissions(&stores, id).await.is_empty());
    let all = stores
        .users
        .list_users(None, 100)
        .await
        .expect("list_users");
    assert!(all.is_empty(), "{all:?}");
    let created = create(&stores, "alice@example.com", &["known"]).await;
    assert_eq!(created.roles, ["known"]);
    // Of several unknown roles, one is named (the contract does not say which).
    let several = new_user("bob@example.com", &["zz-ghost", "known", "aa-ghost"]);
    let several_id = several.id;
    let refused = stores.users.create_user(several).await;
    assert!(
        matches!(&refused, Err(CreateUserError::UnknownRole(r)) if r == "zz-ghost" || r == "aa-ghost"),
        "{refused:?}"
    );
    assert_eq!(user(&stores, several_id).await, None);
}

async fn a_repeated_role_is_granted_once(stores: Stores) {
    put_role(&stores, "reader", &["docs:read"]).await;
    put_role(&stores, "writer", &["docs:write"]).await;

    let created = create(&stores, "alice@example.com", &["reader", "reader"]).await;

    assert_eq!(created.roles, ["reader"]);
    assert_eq!(roles_of(&stores, created.id).await, ["reader"]);
    assert_eq!(permissions(&stores, created.id).await, ["docs:read"]);
    let set = stores
        .users
        .set_roles(
            created.id,
            &[role("writer"), role("reader"), role("writer")],
        )
        .await;
    assert!(set.expect("set_roles"));
    assert_eq!(roles_of(&stores, created.id).await, ["reader", "writer"]);
}

async fn set_password_hash_replaces_only_the_hash(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";

    let replaced = stores.users.set_password_hash(alice.id, new_hash).await;

    assert!(replaced.expect("set_password_hash"));
    let expected = UserRecord {
        password_hash: new_hash.to_owned(),
        ..alice
    };
    assert_eq!(user(&stores, expected.id).await, Some(expected));
    assert_eq!(user(&stores, bob.id).await, Some(bob));
    let unknown = stores
        .users
        .set_password_hash(UserId::new(), new_hash)
        .await;
    assert!(!unknown.expect("set_password_hash"));
}

async fn permissions_are_the_sorted_distinct_union_over_roles(stores: Stores) {
    put_role(
        &stores,
        "editor",
        &["docs:write", "docs:read", "comments:write"],
    )
    .await;
    put_role(
        &stores,
        "viewer",
        &["docs:read", "comments:read", "docs_x:read", "Docs:admin"],
    )
    .await;
    put_role(&stores, "empty", &[]).await;
    let both = create(&stores, "alice@example.com", &["viewer", "editor", "empty"]).await;
    let none = create(&stores, "bob@example.com", &[]).await;

    let union = permissions(&stores, both.id).await;

    assert_eq!(
        union,
        [
            "Docs:admin",
            "comments:read",
            "comments:write",
            "docs:read",
            "docs:write",
            "docs_x:read"
        ]
    );
    assert!(permissions(&stores, none.id).await.is_empty());
    // An unknown user has no permissions; not an error.
    assert!(permissions(&stores, UserId::new()).await.is_empty());
}

async fn a_user_with_permissions_is_its_two_reads_in_one(stores: Stores) {
    put_role(
        &stores,
        "editor",
        &["docs:write", "docs:read", "Docs:admin"],
    )
    .await;
    put_role(&stores, "viewer", &["docs:read", "comments:read"]).await;
    let both = create(&stores, "alice@example.com", &["viewer", "editor"]).await;
    let none = create(&stores, "bob@example.com", &[]).await;
    for id in [both.id, none.id] {
        let (got, held) = stores
            .users
            .user_with_permissions(id)
            .await
            .expect("user_with_permissions")
            .expect("the user exists");
        assert_eq!(Some(got), user(&stores, id).await);
        assert_eq!(held, permissions(&stores, id).await);
    }
    let (_, held) = stores
        .users
        .user_with_permissions(both.id)
        .await
        .expect("user_with_permissions")
        .expect("the user exists");
    assert_eq!(
        held,
        ["Docs:admin", "comments:read", "docs:read", "docs:write"]
    );
    let unknown = stores.users.user_with_permissions(UserId::new()).await;
    assert!(unknown.expect("user_with_permissions").is_none());
}

async fn put_role_replaces_the_permissions(stores: Stores) {
    put_role(&stores, "staff", &["a:read", "b:read"]).await;
    let alice = create(&stores, "alice@example.com", &["staff"]).await;

    put_role(&stores, "staff", &["c:read"]).await;

    let roles = stores.users.roles().await.expect("roles");
    assert_eq!(roles, [("staff".to_owned(), strings(&["c:read"]))]);
    assert_eq!(permissions(&stores, alice.id).await, ["c:read"]);
    assert_eq!(roles_of(&stores, alice.id).await, ["staff"]);
    put_role(&stores, "staff", &[]).await;
    let roles = stores.users.roles().await.expect("roles");
    assert_eq!(roles, [("staff".to_owned(), Vec::new())]);
    assert!(permissions(&stores, alice.id).await.is_empty());
}

async fn roles_are_listed_by_name_with_sorted_permissions(stores: Stores) {
    assert!(stores.users.roles().await.expect("roles").is_empty());
    put_role(&stores, "zeta", &["z:write", "a:read"]).await;
    put_role(&stores, "alpha", &["m:read"]).await;
    put_role(&stores, "mid", &[]).await;
    // "Sorted" as Rust sorts strings, byte-wise: whatever the database's
    // collation, upper case comes first and `:` before `_`.
    put_role(&stores, "B-team", &["x_y:read", "x:write", "X:read"]).await;

    let roles = stores.users.roles().await.expect("roles");

    assert_eq!(
        roles,
        [
            (
                "B-team".to_owned(),
                strings(&["X:read", "x:write", "x_y:read"])
            ),
            ("alpha".to_owned(), strings(&["m:read"])),
            ("mid".to_owned(), Vec::new()),
            ("zeta".to_owned(), strings(&["a:read", "z:write"])),
        ]
    );
}

async fn delete_role_removes_it_and_its_assignments(stores: Stores) {
    put_role(&stores, "doomed", &["x:write"]).await;
    put_role(&stores, "kept", &["y:read"]).await;
    let alice = create(&stores, "alice@example.com", &["doomed", "kept"]).await;

    let deleted = stores.users.delete_role(&role("doomed")).await;

    assert!(deleted.expect("delete_role"));
    assert_eq!(roles_of(&stores, alice.id).await, ["kept"]);
    assert_eq!(permissions(&stores, alice.id).await, ["y:read"]);
    let roles = stores.users.roles().await.expect("roles");
    assert_eq!(roles, [("kept".to_owned(), strings(&["y:read"]))]);
    let again = stores.users.delete_role(&role("doomed")).await;
    assert!(!again.expect("delete_role"));
    // The name is free again, with no stale assignment reappearing.
    put_role(&stores, "doomed", &["x:write"]).await;
    assert_eq!(roles_of(&stores, alice.id).await, ["kept"]);
}

async fn set_roles_replaces_the_roles(stores: Stores) {
    for name in ["a", "b", "c"] {
        put_role(&stores, name, &[&format!("{name}:read")]).await;
    }
    let alice = create(&stores, "alice@example.com", &["a"]).await;
    let bob = create(&stores, "bob@example.com", &["a"]).await;

    let set = stores
        .users
        .set_roles(alice.id, &[role("c"), role("b")])
        .await;

    assert!(set.expect("set_roles"));
    assert_eq!(roles_of(&stores, alice.id).await, ["b", "c"]);
    assert_eq!(permissions(&stores, alice.id).await, ["b:read", "c:read"]);
    assert_eq!(roles_of(&stores, bob.id).await, ["a"]);
    let cleared = stores.users.set_roles(alice.id, &[]).await;
    assert!(cleared.expect("set_roles"));
    assert!(roles_of(&stores, alice.id).await.is_empty());
    assert!(permissions(&stores, alice.id).await.is_empty());
}

async fn set_roles_with_an_unknown_role_keeps_the_previous_roles(stores: Stores) {
    put_role(&stores, "a", &["a:read"]).await;
    put_role(&stores, "b", &["b:read"]).await;
    let alice = create(&stores, "alice@example.com", &["a"]).await;

    let refused = stores
        .users
        .set_roles(alice.id, &[role("b"), role("zz-ghost"), role("aa-ghost")])
        .await;

    // "An error naming the first unknown role": first as given.
    assert!(
        matches!(&refused, Err(RolesError::UnknownRole(r)) if r == "zz-ghost"),
        "{refused:?}"
    );
    assert_eq!(roles_of(&stores, alice.id).await, ["a"]);
    assert_eq!(permissions(&stores, alice.id).await, ["a:read"]);
}

async fn set_roles_of_an_unknown_user_is_false(stores: Stores) {
    put_role(&stores, "a", &["a:read"]).await;
    let nobody = UserId::new();

    let set = stores.users.set_roles(nobody, &[role("a")]).await;

    assert!(!set.expect("set_roles"));
    assert_eq!(user(&stores, nobody).await, None);
    assert!(permissions(&stores, nobody).await.is_empty());
}

/// What [`store::UserStore::change_keeping_an_admin`] answered, as a
/// word: `made`, `absent` (no such user or role), `last-admin`, or the
/// unknown role.
async fn guarded(stores: &Stores, change: AdminChange<'_>) -> String {
    match stores.users.change_keeping_an_admin(change).await {
        Ok(true) => "made".into(),
        Ok(false) => "absent".into(),
        Err(AdminChangeError::LastAdmin) => "last-admin".into(),
        Err(AdminChangeError::UnknownRole(r)) => format!("unknown role {r}"),
        Err(AdminChangeError::Store(e)) => panic!("change_keeping_an_admin: {e:#}"),
    }
}

async fn changes_keeping_an_admin_refuse_to_leave_none(stores: Stores) {
    put_role(&stores, "admin", &["gatehouse:admin", "docs:read"]).await;
    put_role(&stores, "editor", &["docs:write"]).await;
    let alice = create(&stores, "alice@example.com", &["admin"]).await;
    // A disabled holder is no administrator.
    let bob = create(&stores, "bob@example.com", &["admin"]).await;
    assert!(
        stores
            .users
            .set_disabled(bob.id, true)
            .await
            .expect("disable")
    );
    let roles = stores.users.roles().await.expect("roles");

    for change in [
        AdminChange::SetRoles(alice.id, &[]),
        AdminChange::SetRoles(alice.id, &[role("editor")]),
        AdminChange::Disable(alice.id),
        AdminChange::DeleteUser(alice.id),
        AdminChange::PutRole(&role("admin"), &strings(&["docs:read"])),
        AdminChange::DeleteRole(&role("admin")),
    ] {
        assert_eq!(guarded(&stores, change).await, "last-admin", "{change:?}");
    }

    // Nothing was changed.
    assert_eq!(user(&stores, alice.id).await, Some(alice.clone()));
    assert_eq!(stores.users.roles().await.expect("roles"), roles);
    assert_eq!(
        permissions(&stores, alice.id).await,
        ["docs:read", "gatehouse:admin"]
    );
    // Unknown targets change nothing and are no refusal.
    let (nobody, ghost) = (UserId::new(), role("ghost"));
    for change in [
        AdminChange::SetRoles(nobody, &[]),
        AdminChange::Disable(nobody),
        AdminChange::DeleteUser(nobody),
        AdminChange::DeleteRole(&ghost),
    ] {
        assert_eq!(guarded(&stores, change).await, "absent", "{change:?}");
    }
    let unknown = [role("admin"), role("ghost")];
    assert_eq!(
        guarded(&stores, AdminChange::SetRoles(alice.id, &unknown)).await,
        "unknown role ghost"
    );
    assert_eq!(roles_of(&stores, alice.id).await, ["admin"]);
}

async fn changes_keeping_an_admin_are_made_while_another_admin_remains(stores: Stores) {
    put_role(&stores, "admin", &["gatehouse:admin"]).await;
    put_role(&stores, "root", &["gatehouse:admin"]).await;
    put_role(&stores, "editor", &["docs:write"]).await;
    let alice = create(&stores, "alice@example.com", &["admin"]).await;
    let bob = create(&stores, "bob@example.com", &["root"]).await;
    let carol = create(&stores, "carol@example.com", &["admin"]).await;

    // Changes that touch no administrator.
    let editor = AdminChange::PutRole(&role("editor"), &[]);
    assert_eq!(guarded(&stores, editor).await, "made");
    let new_role = AdminChange::PutRole(&role("viewer"), &[]);
    assert_eq!(guarded(&stores, new_role).await, "made");
    // Each leaves another administrator.
    let set = AdminChange::SetRoles(carol.id, &[role("editor")]);
    assert_eq!(guarded(&stores, set).await, "made");
    assert_eq!(roles_of(&stores, carol.id).await, ["editor"]);
    assert_eq!(
        guarded(&stores, AdminChange::DeleteUser(carol.id)).await,
        "made"
    );
    assert_eq!(user(&stores, carol.id).await, None);
    assert_eq!(
        guarded(&stores, AdminChange::Disable(alice.id)).await,
        "made"
    );
    assert!(user(&stores, alice.id).await.expect("alice").disabled);
    // Now bob alone is one, through `root`, and `admin` grants no one.
    let emptied = AdminChange::PutRole(&role("admin"), &[]);
    assert_eq!(guarded(&stores, emptied).await, "made");
    assert_eq!(
        guarded(&stores, AdminChange::DeleteRole(&role("admin"))).await,
        "made"
    );
    assert_eq!(
        guarded(&stores, AdminChange::DeleteRole(&role("root"))).await,
        "last-admin"
    );
    assert_eq!(permissions(&stores, bob.id).await, ["gatehouse:admin"]);
}

async fn concurrent_changes_keeping_an_admin_leave_one(stores: Stores) {
    // alice holds `admin`, bob `root`; both grant gatehouse:admin. Each
    // round, two changes that each leave one of them race: exactly one may
    // be made.
    const ROUNDS: usize = 24;
    let (admin, root) = (role("admin"), role("root"));
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    for round in 0..ROUNDS {
        put_role(&stores, "admin", &["gatehouse:admin"]).await;
        put_role(&stores, "root", &["gatehouse:admin"]).await;
        for (who, held) in [(alice.id, &admin), (bob.id, &root)] {
            let users = &stores.users;
            assert!(
                users
                    .set_roles(who, std::slice::from_ref(held))
                    .await
                    .expect("reset")
            );
            assert!(users.set_disabled(who, false).await.expect("reset"));
        }
        let start = Arc::new(Barrier::new(2));
        let mut racers = JoinSet::new();
        for side in 0..2 {
            let (stores, start) = (stores.clone(), start.clone());
            // Each side aims at the other's rights: their roles, their
            // account, their role's existence or its permissions.
            let (other, theirs) = if side == 0 {
                (bob.id, root.clone())
            } else {
                (alice.id, admin.clone())
            };
            racers.spawn(async move {
                let change = match (round % 4, side) {
                    (0, _) => AdminChange::SetRoles(other, &[]),
                    (1, _) => AdminChange::Disable(other),
                    (2, _) => AdminChange::DeleteRole(&theirs),
                    (_, 0) => AdminChange::PutRole(&theirs, &[]),
                    _ => AdminChange::SetRoles(other, &[]),
                };
                start.wait().await;
                guarded(&stores, change).await
            });
        }
        let mut answers = Vec::new();
        while let Some(joined) = racers.join_next().await {
            answers.push(joined.expect("a racer finished"));
        }
        answers.sort();
        assert_eq!(answers, ["last-admin", "made"], "round {round}");
    }
}

async fn set_disabled_sets_and_clears_the_flag(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;

    let disabled = stores.users.set_disabled(alice.id, true).await;

    assert!(disabled.expect("set_disabled"));
    let expected = UserRecord {
        disabled: true,
        ..alice.clone()
    };
    assert_eq!(user(&stores, alice.id).await, Some(expected));
    assert_eq!(user(&stores, bob.id).await, Some(bob));
    let enabled = stores.users.set_disabled(alice.id, false).await;
    assert!(enabled.expect("set_disabled"));
    assert_eq!(user(&stores, alice.id).await, Some(alice));
    let unknown = stores.users.set_disabled(UserId::new(), true).await;
    assert!(!unknown.expect("set_disabled"));
}

async fn delete_user_takes_roles_sessions_and_refresh_tokens_with_it(stores: Stores) {
    put_role(&stores, "staff", &["x:read"]).await;
    let alice = create(&stores, "alice@example.com", &["staff"]).await;
    let bob = create(&stores, "bob@example.com", &["staff"]).await;
    let alice_session = session(alice.id, 1, at(0));
    let bob_session = session(bob.id, 2, at(0));
    insert(&stores, &alice_session).await;
    insert(&stores, &bob_session).await;
    let (alice_token, bob_token) = (SecretHash([11; 32]), SecretHash([12; 32]));
    for (token, s) in [(alice_token, &alice_session), (bob_token, &bob_session)] {
        let inserted = stores.sessions.insert_refresh(&token, s.id, at(0)).await;
        inserted.expect("insert_refresh");
    }

    let deleted = stores.users.delete_user(alice.id).await;

    assert!(deleted.expect("delete_user"));
    assert_eq!(user(&stores, alice.id).await, None);
    let found = stores
        .users
        .user_by_email(&email("alice@example.com"))
        .await;
    assert_eq!(found.expect("user_by_email"), None);
    assert!(permissions(&stores, alice.id).await.is_empty());
    // These stores share one database, so the sessions go with the user.
    assert!(sessions_of(&stores, alice.id).await.is_empty());
    assert_eq!(session_by_id(&stores, alice_session.id).await, None);
    assert_eq!(refresh(&stores, alice_token).await, None);
    assert_eq!(user(&stores, bob.id).await, Some(bob));
    assert_eq!(
        sessions_of(&stores, bob_session.user_id).await,
        [bob_session]
    );
    assert!(refresh(&stores, bob_token).await.is_some());
    let roles = stores.users.roles().await.expect("roles");
    assert_eq!(roles, [("staff".to_owned(), strings(&["x:read"]))]);
    let again = stores.users.delete_user(alice.id).await;
    assert!(!again.expect("delete_user"));
    // The address is free again.
    create(&stores, "alice@example.com", &[]).await;
}

async fn list_users_pages_in_creation_order(stores: Stores) {
    // Ids are UUID v7, so their order is the order of creation.
    let mut ids: Vec<UserId> = (0..5).map(|_| UserId::new()).collect();
    ids.sort();
    let mut users = Vec::new();
    for (i, id) in (0i64..).zip(&ids) {
        let new = NewUser {
            id: *id,
            created_at: at(i),
            // Emails in the reverse order, so that order is not the order read.
            ..new_user(&format!("user{}@example.com", 9 - i), &[])
        };
        users.push(stores.users.create_user(new).await.expect("create_user"));
    }
    let page = |after: Option<UserId>, limit: u32| {
        let stores = stores.clone();
        async move {
            stores
                .users
                .list_users(after, limit)
                .await
                .expect("list_users")
        }
    };

    assert_eq!(page(None, 2).await, users[0..2]);
    assert_eq!(page(Some(ids[1]), 2).await, users[2..4]);
    assert_eq!(page(Some(ids[3]), 2).await, users[4..]);
    assert!(page(Some(ids[4]), 2).await.is_empty());
    assert_eq!(page(None, 100).await, users);
    assert!(page(None, 0).await.is_empty());
    // The cursor is an id, not a row: a deleted user's id still pages on.
    let deleted = stores.users.delete_user(ids[2]).await;
    assert!(deleted.expect("delete_user"));
    assert_eq!(page(Some(ids[2]), 10).await, users[3..]);
}

async fn ping_answers(stores: Stores) {
    stores.users.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------
// SessionStore: sessions and revocations
// ---------------------------------------------------------------------------

async fn session_reads_back_by_secret_hash_and_id(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let full = session(alice.id, 1, at(0));
    let bare = SessionRecord {
        user_agent: None,
        ip: None,
        amr: Amr::PASSWORD,
        ..session(alice.id, 2, at(10))
    };

    insert(&stores, &full).await;
    insert(&stores, &bare).await;

    for s in [&full, &bare] {
        let by_secret = stores.sessions.session_by_secret(&s.secret_hash).await;
        assert_eq!(by_secret.expect("session_by_secret").as_ref(), Some(s));
        assert_eq!(session_by_id(&stores, s.id).await.as_ref(), Some(s));
    }
    let unknown = stores
        .sessions
        .session_by_secret(&SecretHash([9; 32]))
        .await;
    assert_eq!(unknown.expect("session_by_secret"), None);
    assert_eq!(session_by_id(&stores, SessionId::new()).await, None);
}

async fn touch_session_moves_last_seen(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let touched = session(alice.id, 1, at(0));
    let other = session(alice.id, 2, at(0));
    insert(&stores, &touched).await;
    insert(&stores, &other).await;

    let done = stores.sessions.touch_session(touched.id, at(120)).await;

    done.expect("touch_session");
    let expected = SessionRecord {
        last_seen_at: at(120),
        ..touched.clone()
    };
    assert_eq!(session_by_id(&stores, touched.id).await, Some(expected));
    assert_eq!(session_by_id(&stores, other.id).await, Some(other));
    // A no-op for an unknown id.
    let unknown = stores
        .sessions
        .touch_session(SessionId::new(), at(120))
        .await;
    unknown.expect("touch_session of an unknown id");
}

async fn sessions_of_lists_only_the_users_sessions_oldest_first(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    // Inserted out of order, so the order read is the store's doing.
    let newest = session(alice.id, 1, at(300));
    let oldest = session(alice.id, 2, at(100));
    let middle = session(alice.id, 3, at(200));
    let bobs = session(bob.id, 4, at(150));
    for s in [&newest, &oldest, &bobs, &middle] {
        insert(&stores, s).await;
    }

    let listed = sessions_of(&stores, alice.id).await;

    assert_eq!(listed, [oldest, middle, newest]);
    assert_eq!(sessions_of(&stores, bob.id).await, [bobs]);
    assert!(sessions_of(&stores, UserId::new()).await.is_empty());
}

async fn delete_session_ends_only_the_owners_session_and_revokes_it(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let alices = session(alice.id, 1, at(0));
    let bobs = session(bob.id, 2, at(0));
    insert(&stores, &alices).await;
    insert(&stores, &bobs).await;
    let until = at(900);

    let by_another = stores
        .sessions
        .delete_session(alices.id, bob.id, until)
        .await;

    assert!(!by_another.expect("delete_session"));
    assert_eq!(
        session_by_id(&stores, alices.id).await.as_ref(),
        Some(&alices)
    );
    assert!(revocations(&stores, at(0)).await.is_empty());
    let unknown = stores
        .sessions
        .delete_session(SessionId::new(), alice.id, until)
        .await;
    assert!(!unknown.expect("delete_session"));
    let by_owner = stores
        .sessions
        .delete_session(alices.id, alice.id, until)
        .await;
    assert!(by_owner.expect("delete_session"));
    assert_eq!(session_by_id(&stores, alices.id).await, None);
    let by_secret = stores.sessions.session_by_secret(&alices.secret_hash).await;
    assert_eq!(by_secret.expect("session_by_secret"), None);
    assert_eq!(revocations(&stores, at(0)).await, [(alices.id, until)]);
    let again = stores
        .sessions
        .delete_session(alices.id, alice.id, until)
        .await;
    assert!(!again.expect("delete_session"));
    assert_eq!(session_by_id(&stores, bobs.id).await, Some(bobs));
}

async fn delete_sessions_of_ends_every_session_and_revokes_them(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let alices: Vec<SessionRecord> = (1..=3)
        .map(|n| session(alice.id, n, at(n.into())))
        .collect();
    let bobs = session(bob.id, 9, at(0));
    for s in alices.iter().chain([&bobs]) {
        insert(&stores, s).await;
    }
    let until = at(900);

    let ended = stores
        .sessions
        .delete_sessions_of(alice.id, None, until)
        .await;

    let ids = sorted(alices.iter().map(|s| s.id).collect());
    assert_eq!(sorted(ended.expect("delete_sessions_of")), ids);
    assert!(sessions_of(&stores, alice.id).await.is_empty());
    assert_eq!(sessions_of(&stores, bob.id).await, [bobs]);
    let revoked: Vec<_> = ids.iter().map(|id| (*id, until)).collect();
    assert_eq!(revocations(&stores, at(0)).await, revoked);
    let again = stores
        .sessions
        .delete_sessions_of(alice.id, None, until)
        .await;
    assert!(again.expect("delete_sessions_of").is_empty());
    let nobody = stores
        .sessions
        .delete_sessions_of(UserId::new(), None, until)
        .await;
    assert!(nobody.expect("delete_sessions_of").is_empty());
    assert_eq!(revocations(&stores, at(0)).await, revoked);
}

async fn delete_sessions_of_spares_the_kept_session(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let [first, kept, last] = [1, 2, 3].map(|n| session(alice.id, n, at(n.into())));
    for s in [&first, &kept, &last] {
        insert(&stores, s).await;
    }
    let until = at(900);

    let ended = stores
        .sessions
        .delete_sessions_of(alice.id, Some(kept.id), until)
        .await;

    let expected = sorted(vec![first.id, last.id]);
    assert_eq!(sorted(ended.expect("delete_sessions_of")), expected);
    assert_eq!(sessions_of(&stores, alice.id).await, [kept]);
    let revoked: Vec<_> = expected.iter().map(|id| (*id, until)).collect();
    assert_eq!(revocations(&stores, at(0)).await, revoked);
}

async fn revocations_lists_only_those_in_force(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let [early, late, live] = [1, 2, 3].map(|n| session(alice.id, n, at(0)));
    for s in [&early, &late, &live] {
        insert(&stores, s).await;
    }
    for (s, until) in [(&early, at(100)), (&late, at(200))] {
        let ended = stores.sessions.delete_session(s.id, alice.id, until).await;
        assert!(ended.expect("delete_session"));
    }

    let in_force = revocations(&stores, at(0)).await;

    assert_eq!(
        in_force,
        sorted(vec![(early.id, at(100)), (late.id, at(200))])
    );
    assert_eq!(
        revocations(&stores, at(100) - MS).await,
        sorted(vec![(early.id, at(100)), (late.id, at(200))])
    );
    // A record is in force while `now < revoke_until`, the rule by which the
    // in-memory set forgets it (RevocationSet::prune).
    assert_eq!(revocations(&stores, at(100)).await, [(late.id, at(200))]);
    assert_eq!(revocations(&stores, at(150)).await, [(late.id, at(200))]);
    assert!(revocations(&stores, at(200)).await.is_empty());
}

async fn log(
    stores: &Stores,
    after: Option<u64>,
    now: OffsetDateTime,
    limit: u32,
) -> store::RevocationLog {
    stores
        .sessions
        .revocation_log(after, now, limit)
        .await
        .expect("revocation_log")
}

fn logged(l: &store::RevocationLog) -> Vec<(SessionId, OffsetDateTime)> {
    l.entries.iter().map(|e| (e.session_id, e.until)).collect()
}

async fn revocation_log_numbers_endings_in_order_and_resumes_after_a_cursor(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let [a1, a2, b1, b2, b3] = [
        session(alice.id, 1, at(0)),
        session(alice.id, 2, at(0)),
        session(bob.id, 3, at(0)),
        session(bob.id, 4, at(0)),
        session(bob.id, 5, at(0)),
    ];
    for s in [&a1, &a2, &b1, &b2, &b3] {
        insert(&stores, s).await;
    }
    let empty = log(&stores, None, at(0), 100).await;
    assert!(empty.entries.is_empty(), "{empty:?}");
    assert_eq!(empty.upto, empty.last_seq);

    let ended = stores
        .sessions
        .delete_session(a1.id, alice.id, at(300))
        .await;
    assert!(ended.expect("delete_session"));
    let mut batch = stores
        .sessions
        .delete_sessions_of(bob.id, Some(b3.id), at(301))
        .await
        .expect("delete_sessions_of");
    batch.sort();

    let first = log(&stores, None, at(0), 100).await;
    assert_eq!(first.entries.len(), 3, "{first:?}");
    assert_eq!(first.entries[0].session_id, a1.id);
    assert_eq!(first.entries[0].until, at(300));
    let mut rest: Vec<_> = first.entries[1..].iter().map(|e| e.session_id).collect();
    rest.sort();
    assert_eq!(rest, batch);
    let seqs: Vec<u64> = first.entries.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ascending and distinct: {seqs:?}"
    );
    assert_eq!(first.upto, first.last_seq);
    assert_eq!(first.last_seq, seqs[2]);
    assert!(!first.epoch.is_empty());

    // After a cursor: only what is numbered later.
    let tail = log(&stores, Some(seqs[0]), at(0), 100).await;
    assert_eq!(tail.entries, first.entries[1..]);
    let none = log(&stores, Some(first.upto), at(0), 100).await;
    assert!(none.entries.is_empty(), "{none:?}");
    assert_eq!(none.epoch, first.epoch, "the epoch is stable");

    // A later ending comes after the cursor.
    let ended = stores
        .sessions
        .delete_session(a2.id, alice.id, at(302))
        .await;
    assert!(ended.expect("delete_session"));
    let next = log(&stores, Some(first.upto), at(0), 100).await;
    assert_eq!(logged(&next), [(a2.id, at(302))]);
    assert!(next.entries[0].seq > first.upto);
    assert_eq!(next.upto, next.entries[0].seq);
}

async fn revocation_log_skips_what_is_no_longer_in_force_and_pages(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let sessions: Vec<_> = (1..=5).map(|n| session(alice.id, n, at(0))).collect();
    for (i, s) in sessions.iter().enumerate() {
        insert(&stores, s).await;
        let until = at(100 * (i as i64 + 1));
        let ended = stores.sessions.delete_session(s.id, alice.id, until).await;
        assert!(ended.expect("delete_session"));
    }
    // At 250 the first two are no longer in force.
    let l = log(&stores, None, at(250), 100).await;
    assert_eq!(
        logged(&l),
        [
            (sessions[2].id, at(300)),
            (sessions[3].id, at(400)),
            (sessions[4].id, at(500))
        ]
    );
    assert_eq!(l.upto, l.last_seq);

    // Pages of two: each page's `upto` resumes where it stopped.
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..4 {
        let page = log(&stores, cursor, at(0), 2).await;
        assert!(page.entries.len() <= 2, "{page:?}");
        seen.extend(page.entries.iter().map(|e| e.session_id));
        cursor = Some(page.upto);
        if page.entries.is_empty() {
            break;
        }
    }
    let all: Vec<_> = sessions.iter().map(|s| s.id).collect();
    assert_eq!(seen, all, "every record once, in order");
}

async fn delete_expired_sweeps_expired_and_idle_sessions_and_old_revocations(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let now = at(10 * DAY);
    let idle = Duration::from_secs(86_400);
    let past_expiry = SessionRecord {
        last_seen_at: now - Duration::from_secs(3600),
        expires_at: now - Duration::from_secs(1),
        ..session(alice.id, 1, at(0))
    };
    let idle_too_long = SessionRecord {
        last_seen_at: now - idle - Duration::from_secs(1),
        expires_at: now + Duration::from_secs(DAY as u64),
        ..session(alice.id, 2, at(0))
    };
    let live = SessionRecord {
        last_seen_at: now - Duration::from_secs(3600),
        expires_at: now + Duration::from_secs(DAY as u64),
        ..session(alice.id, 3, at(0))
    };
    let bobs_live = SessionRecord {
        last_seen_at: now - Duration::from_secs(60),
        ..session(bob.id, 4, at(9 * DAY))
    };
    let (ended_long_ago, ended_lately) = (session(bob.id, 5, at(0)), session(bob.id, 6, at(0)));
    for s in [
        &past_expiry,
        &idle_too_long,
        &live,
        &bobs_live,
        &ended_long_ago,
        &ended_lately,
    ] {
        insert(&stores, s).await;
    }
    let tokens = [&past_expiry, &idle_too_long, &live]
        .map(|s| (SecretHash([s.secret_hash.0[0] + 100; 32]), s.id));
    for (token, sid) in tokens {
        let inserted = stores.sessions.insert_refresh(&token, sid, at(0)).await;
        inserted.expect("insert_refresh");
    }
    for (s, until) in [
        (&ended_long_ago, now - Duration::from_secs(1)),
        (&ended_lately, now + Duration::from_secs(3600)),
    ] {
        let ended = stores.sessions.delete_session(s.id, bob.id, until).await;
        assert!(ended.expect("delete_session"));
    }

    let swept = stores.sessions.delete_expired(now, idle).await;

    // The count is of sessions (app.rs logs it as "expired sessions deleted").
    assert_eq!(swept.expect("delete_expired"), 2);
    assert_eq!(session_by_id(&stores, past_expiry.id).await, None);
    assert_eq!(session_by_id(&stores, idle_too_long.id).await, None);
    assert_eq!(sessions_of(&stores, alice.id).await, [live]);
    assert_eq!(sessions_of(&stores, bob.id).await, [bobs_live]);
    assert_eq!(refresh(&stores, tokens[0].0).await, None);
    assert_eq!(refresh(&stores, tokens[1].0).await, None);
    assert!(refresh(&stores, tokens[2].0).await.is_some());
    // Asked as of an instant before both ends: only the record still in force
    // at `now` is kept.
    assert_eq!(
        revocations(&stores, at(0)).await,
        [(ended_lately.id, now + Duration::from_secs(3600))]
    );
    let again = stores.sessions.delete_expired(now, idle).await;
    assert_eq!(again.expect("delete_expired"), 0);
}

async fn delete_expired_agrees_with_the_domain_at_the_boundaries(stores: Stores) {
    // The domain calls a session live while `now < expires_at` and
    // `now < last_seen_at + idle` (Sessions::is_live); the sweep removes exactly
    // what is not live.
    let alice = create(&stores, "alice@example.com", &[]).await;
    let now = at(10 * DAY);
    let idle = Duration::from_secs(86_400);
    let far = now + Duration::from_secs(DAY as u64);
    let expires_now = SessionRecord {
        last_seen_at: now - Duration::from_secs(60),
        expires_at: now,
        ..session(alice.id, 1, at(0))
    };
    let idle_expires_now = SessionRecord {
        last_seen_at: now - idle,
        expires_at: far,
        ..session(alice.id, 2, at(0))
    };
    let one_ms_left = SessionRecord {
        last_seen_at: now - idle + MS,
        expires_at: now + MS,
        ..session(alice.id, 3, at(0))
    };
    for s in [&expires_now, &idle_expires_now, &one_ms_left] {
        insert(&stores, s).await;
    }

    let swept = stores.sessions.delete_expired(now, idle).await;

    assert_eq!(swept.expect("delete_expired"), 2);
    assert_eq!(sessions_of(&stores, alice.id).await, [one_ms_left]);
}

async fn ending_a_session_deletes_its_refresh_tokens(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let [one, two, three, kept] = [1, 2, 3, 4].map(|n| session(alice.id, n, at(n.into())));
    let token = |s: &SessionRecord| SecretHash([s.secret_hash.0[0] + 100; 32]);
    for s in [&one, &two, &three, &kept] {
        insert(&stores, s).await;
        let inserted = stores
            .sessions
            .insert_refresh(&token(s), s.id, at(10))
            .await;
        inserted.expect("insert_refresh");
    }
    // A spent token and its successor both belong to the session.
    let successor = SecretHash([200; 32]);
    let rotated = stores
        .sessions
        .rotate_refresh(&token(&three), at(20), &successor, b"sealed", three.id)
        .await;
    assert!(rotated.expect("rotate_refresh"));

    let ended = stores
        .sessions
        .delete_session(one.id, alice.id, at(900))
        .await;

    assert!(ended.expect("delete_session"));
    assert_eq!(refresh(&stores, token(&one)).await, None);
    assert!(refresh(&stores, token(&two)).await.is_some());
    let ended = stores
        .sessions
        .delete_sessions_of(alice.id, Some(kept.id), at(900))
        .await;
    assert_eq!(
        sorted(ended.expect("delete_sessions_of")),
        sorted(vec![two.id, three.id])
    );
    for gone in [token(&two), token(&three), successor] {
        assert_eq!(refresh(&stores, gone).await, None);
    }
    let kept_token = refresh(&stores, token(&kept)).await;
    assert_eq!(
        kept_token.expect("the kept session's token").session_id,
        kept.id
    );
}

// ---------------------------------------------------------------------------
// SessionStore: refresh tokens
// ---------------------------------------------------------------------------

async fn refresh_token_reads_back_unspent(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let s = session(alice.id, 1, at(0));
    insert(&stores, &s).await;
    let token = SecretHash([10; 32]);

    let inserted = stores.sessions.insert_refresh(&token, s.id, at(5)).await;

    inserted.expect("insert_refresh");
    let expected = RefreshRecord {
        session_id: s.id,
        created_at: at(5),
        spent_at: None,
        successor_sealed: None,
    };
    assert_eq!(refresh(&stores, token).await, Some(expected));
    assert_eq!(refresh(&stores, SecretHash([11; 32])).await, None);
}

async fn rotate_refresh_spends_a_token_once(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let s = session(alice.id, 1, at(0));
    insert(&stores, &s).await;
    let (old, first, second) = (
        SecretHash([10; 32]),
        SecretHash([11; 32]),
        SecretHash([12; 32]),
    );
    let inserted = stores.sessions.insert_refresh(&old, s.id, at(5)).await;
    inserted.expect("insert_refresh");

    let rotated = stores
        .sessions
        .rotate_refresh(&old, at(60), &first, b"sealed first", s.id)
        .await;

    assert!(rotated.expect("rotate_refresh"));
    let spent = RefreshRecord {
        session_id: s.id,
        created_at: at(5),
        spent_at: Some(at(60)),
        successor_sealed: Some(b"sealed first".to_vec()),
    };
    assert_eq!(refresh(&stores, old).await, Some(spent.clone()));
    let successor = refresh(&stores, first)
        .await
        .expect("the successor is stored");
    assert_eq!(successor.session_id, s.id);
    assert_eq!(successor.spent_at, None);
    assert_eq!(successor.successor_sealed, None);
    let replayed = stores
        .sessions
        .rotate_refresh(&old, at(61), &second, b"sealed second", s.id)
        .await;
    assert!(!replayed.expect("rotate_refresh"));
    assert_eq!(refresh(&stores, old).await, Some(spent));
    assert_eq!(refresh(&stores, second).await, None);
    // The successor is itself unspent, so it rotates in its turn.
    let next = stores
        .sessions
        .rotate_refresh(&first, at(120), &second, b"sealed second", s.id)
        .await;
    assert!(next.expect("rotate_refresh"));
    assert_eq!(
        refresh(&stores, first).await.expect("spent").spent_at,
        Some(at(120))
    );
}

async fn rotate_refresh_of_an_unknown_token_stores_nothing(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let s = session(alice.id, 1, at(0));
    insert(&stores, &s).await;
    let successor = SecretHash([11; 32]);

    let rotated = stores
        .sessions
        .rotate_refresh(&SecretHash([10; 32]), at(60), &successor, b"sealed", s.id)
        .await;

    assert!(!rotated.expect("rotate_refresh"));
    assert_eq!(refresh(&stores, successor).await, None);
}

async fn a_refresh_token_with_its_session_is_both_or_nothing(stores: Stores) {
    put_role(&stores, "editor", &["docs:write", "docs:read"]).await;
    let alice = create(&stores, "alice@example.com", &["editor"]).await;
    let s = session(alice.id, 1, at(0));
    insert(&stores, &s).await;
    let (token, successor) = (SecretHash([10; 32]), SecretHash([11; 32]));
    let inserted = stores.sessions.insert_refresh(&token, s.id, at(5)).await;
    inserted.expect("insert_refresh");
    let both = |hash: SecretHash| {
        let stores = stores.clone();
        async move {
            stores
                .sessions
                .refresh_with_session(&hash)
                .await
                .expect("refresh_with_session")
        }
    };

    let read = both(token).await.expect("both");
    assert_eq!(
        (read.refresh, read.session),
        (refresh(&stores, token).await.expect("stored"), s.clone())
    );
    // Where the store holds users too, the user comes with them, as its
    // own two reads give it; elsewhere the caller reads it.
    if let Some((got, held)) = read.user {
        assert_eq!(Some(got), user(&stores, alice.id).await);
        assert_eq!(held, permissions(&stores, alice.id).await);
    }
    let rotated = stores
        .sessions
        .rotate_refresh(&token, at(60), &successor, b"sealed", s.id)
        .await;
    assert!(rotated.expect("rotate_refresh"));
    let spent = both(token).await.expect("still there, spent");
    assert_eq!(
        (spent.refresh.spent_at, spent.session.id),
        (Some(at(60)), s.id)
    );
    assert_eq!(
        spent.refresh.successor_sealed.as_deref(),
        Some(&b"sealed"[..])
    );
    let next = both(successor).await.expect("the successor").refresh;
    assert_eq!((next.created_at, next.spent_at), (at(60), None));
    assert_eq!(both(SecretHash([12; 32])).await, None);
    // The session ended: its tokens went with it.
    let ended = stores.sessions.delete_session(s.id, alice.id, at(61)).await;
    assert!(ended.expect("delete_session"));
    assert_eq!(both(token).await, None);
    assert_eq!(both(successor).await, None);
}

async fn concurrent_rotations_admit_exactly_one(stores: Stores) {
    const RACERS: u8 = 10;
    let alice = create(&stores, "alice@example.com", &[]).await;
    let s = session(alice.id, 1, at(0));
    insert(&stores, &s).await;
    let old = SecretHash([10; 32]);
    let inserted = stores.sessions.insert_refresh(&old, s.id, at(5)).await;
    inserted.expect("insert_refresh");
    let successor = |i: u8| SecretHash([100 + i; 32]);
    let sealed = |i: u8| vec![i; 28];
    let start = Arc::new(Barrier::new(RACERS.into()));
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let (stores, start) = (stores.clone(), start.clone());
        racers.spawn(async move {
            start.wait().await;
            let won = stores
                .sessions
                .rotate_refresh(&old, at(60), &successor(i), &sealed(i), s.id)
                .await;
            (i, won)
        });
    }

    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let (i, won) = joined.expect("a racer finished");
        // A lost race is `false`, not a store failure.
        if won.unwrap_or_else(|e| panic!("racer {i}: {e:#}")) {
            winners.push(i);
        }
    }

    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = winners[0];
    let mut stored = Vec::new();
    for i in 0..RACERS {
        if refresh(&stores, successor(i)).await.is_some() {
            stored.push(i);
        }
    }
    assert_eq!(stored, [winner], "successor rows");
    let spent = refresh(&stores, old).await.expect("the spent token");
    assert_eq!(spent.spent_at, Some(at(60)));
    assert_eq!(spent.successor_sealed, Some(sealed(winner)));
    let next = refresh(&stores, successor(winner))
        .await
        .expect("the successor");
    assert_eq!((next.session_id, next.spent_at), (s.id, None));
}

// ---------------------------------------------------------------------------
// KeyStore
// ---------------------------------------------------------------------------

async fn add_key_makes_the_new_key_current_and_schedules_the_others(stores: Stores) {
    assert!(keys(&stores).await.is_empty());
    let first = key("k1", "EdDSA", at(0));
    stores
        .keys
        .add_key(&first, at(3600))
        .await
        .expect("add_key");
    assert_eq!(keys(&stores).await, std::slice::from_ref(&first));
    // Handed a key with a retire_at, the store still makes it current.
    let second = StoredKey {
        retire_at: Some(at(5)),
        ..key("k2", "EdDSA", at(DAY))
    };

    stores
        .keys
        .add_key(&second, at(DAY + 3600))
        .await
        .expect("add_key");

    let first_retiring = StoredKey {
        retire_at: Some(at(DAY + 3600)),
        ..first
    };
    let second_current = StoredKey {
        retire_at: None,
        ..second
    };
    assert_eq!(
        keys(&stores).await,
        [first_retiring.clone(), second_current.clone()]
    );
    // "Every other current key", whatever its algorithm; a key already
    // retiring keeps its date.
    let third = key("k3", "ES256", at(2 * DAY));
    stores
        .keys
        .add_key(&third, at(2 * DAY + 3600))
        .await
        .expect("add_key");
    let second_retiring = StoredKey {
        retire_at: Some(at(2 * DAY + 3600)),
        ..second_current
    };
    assert_eq!(
        keys(&stores).await,
        [first_retiring, second_retiring, third]
    );
}

async fn signing_keys_are_listed_oldest_first(stores: Stores) {
    // Added in neither kid nor age order.
    let newest = key("k-b", "EdDSA", at(2 * DAY));
    let oldest = key("k-c", "EdDSA", at(0));
    let middle = key("k-a", "EdDSA", at(DAY));
    for k in [&newest, &oldest, &middle] {
        stores.keys.add_key(k, at(3 * DAY)).await.expect("add_key");
    }

    let listed: Vec<(String, OffsetDateTime)> = keys(&stores)
        .await
        .into_iter()
        .map(|k| (k.kid, k.created_at))
        .collect();

    assert_eq!(
        listed,
        [
            (oldest.kid, oldest.created_at),
            (middle.kid, middle.created_at),
            (newest.kid, newest.created_at),
        ]
    );
}

async fn set_private_key_replaces_the_private_part(stores: Stores) {
    let sealed = key("k1", "EdDSA", at(0));
    let untouched = key("k2", "EdDSA", at(DAY));
    stores
        .keys
        .add_key(&sealed, at(DAY))
        .await
        .expect("add_key");
    stores
        .keys
        .add_key(&untouched, at(2 * DAY))
        .await
        .expect("add_key");
    let before = keys(&stores).await;

    let done = stores
        .keys
        .set_private_key("k1", b"nonce|ciphertext|tag", true)
        .await;

    done.expect("set_private_key");
    let expected = StoredKey {
        private_key: b"nonce|ciphertext|tag".to_vec(),
        encrypted: true,
        ..before[0].clone()
    };
    assert_eq!(keys(&stores).await, [expected, before[1].clone()]);
    let back = stores
        .keys
        .set_private_key("k1", b"plain again", false)
        .await;
    back.expect("set_private_key");
    let expected = StoredKey {
        private_key: b"plain again".to_vec(),
        encrypted: false,
        ..before[0].clone()
    };
    assert_eq!(keys(&stores).await, [expected, before[1].clone()]);
}

// ---------------------------------------------------------------------------
// FailureCounter
// ---------------------------------------------------------------------------

const WINDOW: Duration = Duration::from_secs(60);

async fn hit(stores: &Stores, key: &str, now: OffsetDateTime) -> Attempt {
    stores.failures.hit(key, WINDOW, now).await.expect("hit")
}

fn attempt(count: u32, window_left_secs: u64) -> Attempt {
    Attempt {
        count,
        window_left: Duration::from_secs(window_left_secs),
    }
}

async fn failure_counter_counts_within_the_window(stores: Stores) {
    let key = "alice@example.com|192.0.2.7";

    let first = hit(&stores, key, at(0)).await;

    assert_eq!(first, attempt(1, 60));
    assert_eq!(hit(&stores, key, at(0)).await, attempt(2, 60));
    assert_eq!(hit(&stores, key, at(10)).await, attempt(3, 50));
    // Keys are counted apart.
    assert_eq!(
        hit(&stores, "alice@example.com|192.0.2.8", at(10)).await,
        attempt(1, 60)
    );
    assert_eq!(
        hit(&stores, "bob@example.com|192.0.2.7", at(20)).await,
        attempt(1, 60)
    );
    assert_eq!(hit(&stores, key, at(59)).await, attempt(4, 1));
}

async fn failure_counter_restarts_when_the_window_closes(stores: Stores) {
    let key = "alice@example.com|192.0.2.7";
    assert_eq!(hit(&stores, key, at(0)).await, attempt(1, 60));
    assert_eq!(hit(&stores, key, at(30)).await, attempt(2, 30));

    // The window opened at 0 and lasted 60 s: at 60 s it has closed.
    let after = hit(&stores, key, at(60)).await;

    assert_eq!(after, attempt(1, 60));
    assert_eq!(hit(&stores, key, at(61)).await, attempt(2, 59));
    assert_eq!(hit(&stores, key, at(500)).await, attempt(1, 60));
}

async fn failure_counter_reset_forgets(stores: Stores) {
    let key = "alice@example.com|192.0.2.7";
    let other = "bob@example.com|192.0.2.7";
    for _ in 0..3 {
        hit(&stores, key, at(0)).await;
    }
    hit(&stores, other, at(0)).await;

    stores.failures.reset(key).await.expect("reset");

    // The next attempt is the key's first, and opens a new window.
    assert_eq!(hit(&stores, key, at(20)).await, attempt(1, 60));
    assert_eq!(hit(&stores, other, at(20)).await, attempt(2, 40));
    stores
        .failures
        .reset("never-hit|192.0.2.1")
        .await
        .expect("reset of an unknown key");
}

async fn concurrent_hits_each_see_a_distinct_count(stores: Stores) {
    const HITS: u32 = 20;
    let start = Arc::new(Barrier::new(HITS as usize));
    let mut hitters = JoinSet::new();
    for _ in 0..HITS {
        let (stores, start) = (stores.clone(), start.clone());
        hitters.spawn(async move {
            start.wait().await;
            stores
                .failures
                .hit("alice@example.com|192.0.2.7", WINDOW, at(0))
                .await
        });
    }

    let mut counts = Vec::new();
    while let Some(joined) = hitters.join_next().await {
        counts.push(joined.expect("a hitter finished").expect("hit").count);
    }

    assert_eq!(sorted(counts), (1..=HITS).collect::<Vec<_>>());
    let next = hit(&stores, "alice@example.com|192.0.2.7", at(1)).await;
    assert_eq!(next, attempt(HITS + 1, 59));
}

async fn forgive(stores: &Stores, key: &str, now: OffsetDateTime) {
    stores.failures.forgive(key, now).await.expect("forgive");
}

async fn failure_counter_forgive_takes_back_one_attempt(stores: Stores) {
    let key = "login-ip:192.0.2.7";
    let other = "login-ip:192.0.2.8";
    for _ in 0..3 {
        hit(&stores, key, at(0)).await;
    }
    hit(&stores, other, at(0)).await;

    forgive(&stores, key, at(10)).await;

    // One taken back, from this key only; the window keeps its close.
    assert_eq!(hit(&stores, key, at(20)).await, attempt(3, 40));
    assert_eq!(hit(&stores, other, at(20)).await, attempt(2, 40));
    // Taken back to none, the window is forgotten: the next attempt opens
    // a new one. Forgiving a key without a window does nothing.
    for _ in 0..4 {
        forgive(&stores, key, at(30)).await;
    }
    forgive(&stores, "login-ip:never-hit", at(30)).await;
    assert_eq!(hit(&stores, key, at(30)).await, attempt(1, 60));
    // A window that has closed is not touched.
    forgive(&stores, other, at(60)).await;
    assert_eq!(hit(&stores, other, at(60)).await, attempt(1, 60));
}

async fn concurrent_forgivals_and_hits_keep_an_exact_count(stores: Stores) {
    const EACH: u32 = 10;
    let key = "login-account:alice@example.com";
    for _ in 0..2 * EACH {
        hit(&stores, key, at(0)).await;
    }
    let start = Arc::new(Barrier::new(2 * EACH as usize));
    let mut racers = JoinSet::new();
    for i in 0..2 * EACH {
        let (stores, start) = (stores.clone(), start.clone());
        racers.spawn(async move {
            start.wait().await;
            if i % 2 == 0 {
                stores.failures.forgive(key, at(1)).await
            } else {
                stores.failures.hit(key, WINDOW, at(1)).await.map(|_| ())
            }
        });
    }
    while let Some(joined) = racers.join_next().await {
        joined.expect("a racer finished").expect("hit or forgive");
    }

    // As many taken back as added: the count is where it was.
    assert_eq!(hit(&stores, key, at(2)).await, attempt(2 * EACH + 1, 58));
}

// ---------------------------------------------------------------------------
// Redis only: expiry of every key, and the revocation channel
// ---------------------------------------------------------------------------

/// Every key under the prefix with its absolute expiry in ms (PEXPIRETIME:
/// -1 when it has none).
fn expiries(prefix: &str) -> Vec<(Vec<u8>, i64)> {
    let client = redis::Client::open(REDIS_URL).expect("a valid Redis URL");
    let mut con = client.get_connection().expect("a Redis connection");
    let keys: Vec<Vec<u8>> =
        redis::Commands::scan_match::<_, Vec<u8>>(&mut con, format!("{prefix}*"))
            .expect("SCAN")
            .collect::<Result<_, _>>()
            .expect("SCAN");
    keys.into_iter()
        .map(|key| {
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(&key)
                .query(&mut con)
                .expect("PEXPIRETIME");
            (key, at)
        })
        .collect()
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("in range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_every_key_expires_with_what_it_belongs_to() {
    let (stores, prefix, _db) = redis().await;
    let p = prefix.prefix.clone();
    let alice = create(&stores, "alice@example.com", &[]).await;
    let kept = session(alice.id, 1, at(0));
    let ended = SessionRecord {
        expires_at: at(DAY),
        ..session(alice.id, 2, at(0))
    };
    for s in [&kept, &ended] {
        insert(&stores, s).await;
    }
    let (old, successor) = (SecretHash([10; 32]), SecretHash([11; 32]));
    let inserted = stores.sessions.insert_refresh(&old, kept.id, at(5)).await;
    inserted.expect("insert_refresh");
    let rotated = stores
        .sessions
        .rotate_refresh(&old, at(60), &successor, b"sealed", kept.id)
        .await;
    assert!(rotated.expect("rotate_refresh"));
    let deleted = stores
        .sessions
        .delete_session(ended.id, alice.id, at(3600))
        .await;
    assert!(deleted.expect("delete_session"));
    hit(&stores, "alice@example.com|192.0.2.7", at(0)).await;

    let mut found = expiries(&p);

    found.sort();
    let key = |parts: &[&[u8]]| [p.as_bytes(), &parts.concat()].concat();
    let sid = kept.id.to_string();
    let mut expected = vec![
        (key(&[b"exp"]), ms(kept.expires_at)),
        (key(&[b"f:alice@example.com|192.0.2.7"]), ms(at(60))),
        (key(&[b"r:", &old.0]), ms(kept.expires_at)),
        (key(&[b"r:", &successor.0]), ms(kept.expires_at)),
        (key(&[b"revepoch"]), ms(at(3600))),
        (key(&[b"revlog"]), ms(at(3600))),
        (key(&[b"revoked"]), ms(at(3600))),
        (key(&[b"revseq"]), ms(at(3600))),
        (key(&[b"s:", sid.as_bytes()]), ms(kept.expires_at)),
        (key(&[b"seen"]), ms(kept.expires_at)),
        (key(&[b"sh:", &kept.secret_hash.0]), ms(kept.expires_at)),
        (key(&[b"sr:", sid.as_bytes()]), ms(kept.expires_at)),
        (
            key(&[b"u:", alice.id.to_string().as_bytes()]),
            ms(kept.expires_at),
        ),
    ];
    expected.sort();
    assert_eq!(found, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_ending_sessions_publishes_each_on_the_revocation_channel() {
    let (stores, prefix, _db) = redis().await;
    let store = RedisStore::open(REDIS_URL, &prefix.prefix)
        .await
        .expect("opening the Redis store");
    let channel = store.revocation_channel();
    assert_eq!(channel, format!("{}revocations", prefix.prefix));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = std::thread::spawn(move || {
        let client = redis::Client::open(REDIS_URL).expect("a valid Redis URL");
        let mut con = client.get_connection().expect("a Redis connection");
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(&channel).expect("SUBSCRIBE");
        pubsub
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        ready_tx.send(()).expect("the test waits");
        (0..3)
            .map(|_| {
                let msg = pubsub.get_message().expect("a published revocation");
                msg.get_payload::<String>().expect("a text payload")
            })
            .collect::<Vec<_>>()
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the listener subscribed");
    let alice = create(&stores, "alice@example.com", &[]).await;
    let [one, two, three, kept] = [1, 2, 3, 4].map(|n| session(alice.id, n, at(n.into())));
    for s in [&one, &two, &three, &kept] {
        insert(&stores, s).await;
    }

    let deleted = stores
        .sessions
        .delete_session(one.id, alice.id, at(900))
        .await;
    assert!(deleted.expect("delete_session"));
    let ended = stores
        .sessions
        .delete_sessions_of(alice.id, Some(kept.id), at(1800))
        .await
        .expect("delete_sessions_of");
    assert_eq!(ended.len(), 2);

    let messages = tokio::task::spawn_blocking(move || listener.join().expect("the listener"))
        .await
        .expect("joined");
    let mut expected = vec![
        format!("{} {}", one.id, ms(at(900))),
        format!("{} {}", two.id, ms(at(1800))),
        format!("{} {}", three.id, ms(at(1800))),
    ];
    expected[1..].sort();
    let mut got = messages;
    got[1..].sort();
    assert_eq!(got, expected);
}

async fn add_first_key_adds_only_the_first_key_of_its_algorithm(stores: Stores) {
    let keys = &stores.keys;
    assert!(
        keys.add_first_key(&key("k1", "EdDSA", at(0)), at(3600))
            .await
            .expect("add")
    );
    assert!(
        !keys
            .add_first_key(&key("k2", "EdDSA", at(1)), at(3600))
            .await
            .expect("add"),
        "a current EdDSA key exists"
    );
    // Another algorithm is a first key of its own, and supersedes the rest.
    assert!(
        keys.add_first_key(&key("k3", "ES256", at(2)), at(3600))
            .await
            .expect("add")
    );
    let stored = keys.signing_keys().await.expect("keys");
    let kids: Vec<&str> = stored.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k1", "k3"]);
    assert_eq!(stored[0].retire_at, Some(at(3600)));
    assert_eq!(stored[1].retire_at, None);
}

async fn concurrent_first_keys_leave_exactly_one_current(stores: Stores) {
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let keys = stores.keys.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                keys.add_first_key(&key(&format!("k{i}"), "EdDSA", at(i)), at(3600))
                    .await
                    .expect("add")
            })
        })
        .collect();
    let mut added = 0;
    for t in tasks {
        if t.await.expect("task") {
            added += 1;
        }
    }
    assert_eq!(added, 1, "one node's key wins");
    let stored = stores.keys.signing_keys().await.expect("keys");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].retire_at, None);
}

async fn key_purposes_round_trip(stores: Stores) {
    let access = key("k-access", "EdDSA", at(0));
    let rs = id_key("k-id-rs", "RS256", at(1));
    let es = StoredKey {
        encrypted: true,
        ..id_key("k-id-es", "ES256", at(2))
    };
    let ed = id_key("k-id-ed", "EdDSA", at(3));
    for k in [&access, &rs, &es, &ed] {
        stores.keys.add_key(k, at(3600)).await.expect("add_key");
    }

    let stored = keys(&stores).await;

    assert_eq!(stored, [access, rs, es, ed]);
    let purposes: Vec<KeyPurpose> = stored.iter().map(|k| k.purpose).collect();
    assert_eq!(
        purposes,
        [
            KeyPurpose::Access,
            KeyPurpose::IdToken,
            KeyPurpose::IdToken,
            KeyPurpose::IdToken
        ]
    );
}

async fn rotating_an_id_token_key_retires_only_that_algorithms_id_token_key(stores: Stores) {
    let access = key("k-access", "RS256", at(0));
    let rs1 = id_key("k-rs1", "RS256", at(1));
    let es = id_key("k-es", "ES256", at(2));
    let ed = id_key("k-ed", "EdDSA", at(3));
    for k in [&access, &rs1, &es, &ed] {
        stores.keys.add_key(k, at(3600)).await.expect("add_key");
    }
    let rs2 = id_key("k-rs2", "RS256", at(DAY));

    stores
        .keys
        .add_key(&rs2, at(DAY + 3600))
        .await
        .expect("add_key");

    // The access key shares the algorithm, not the purpose: it stays.
    let rs1_retiring = StoredKey {
        retire_at: Some(at(DAY + 3600)),
        ..rs1
    };
    assert_eq!(keys(&stores).await, [access, rs1_retiring, es, ed, rs2]);
}

async fn rotating_the_access_key_retires_no_id_token_key(stores: Stores) {
    let first = key("k-access-1", "EdDSA", at(0));
    let ids: Vec<StoredKey> = [("k-rs", "RS256"), ("k-es", "ES256"), ("k-ed", "EdDSA")]
        .into_iter()
        .enumerate()
        .map(|(i, (kid, alg))| id_key(kid, alg, at(1 + i64::try_from(i).expect("small"))))
        .collect();
    stores.keys.add_key(&first, at(60)).await.expect("add_key");
    for k in &ids {
        stores.keys.add_key(k, at(60)).await.expect("add_key");
    }
    // Another algorithm too: an access key supersedes every access key.
    let second = key("k-access-2", "ES256", at(DAY));

    stores
        .keys
        .add_key(&second, at(DAY + 3600))
        .await
        .expect("add_key");

    let first_retiring = StoredKey {
        retire_at: Some(at(DAY + 3600)),
        ..first
    };
    let mut expected = vec![first_retiring];
    expected.extend(ids);
    expected.push(second);
    assert_eq!(keys(&stores).await, expected);
}

async fn add_first_key_is_first_per_purpose_and_algorithm(stores: Stores) {
    let keys_store = &stores.keys;
    let access = key("k-access", "EdDSA", at(0));
    assert!(
        keys_store
            .add_first_key(&access, at(3600))
            .await
            .expect("add")
    );
    // A current EdDSA access key is no ID-token key of that algorithm.
    let ed = id_key("k-ed", "EdDSA", at(1));
    assert!(keys_store.add_first_key(&ed, at(3600)).await.expect("add"));
    assert!(
        !keys_store
            .add_first_key(&id_key("k-ed-2", "EdDSA", at(2)), at(3600))
            .await
            .expect("add"),
        "a current EdDSA ID-token key exists"
    );
    // Another algorithm is a first ID-token key of its own, and retires
    // nothing.
    let rs = id_key("k-rs", "RS256", at(3));
    assert!(keys_store.add_first_key(&rs, at(3600)).await.expect("add"));
    // An ID-token key of the access key's algorithm is no access key either.
    assert!(
        !keys_store
            .add_first_key(&key("k-access-2", "EdDSA", at(4)), at(3600))
            .await
            .expect("add"),
        "a current EdDSA access key exists"
    );

    assert_eq!(keys(&stores).await, [access, ed, rs]);
}

async fn concurrent_first_keys_leave_one_current_per_purpose_and_algorithm(stores: Stores) {
    // Three groups of nodes starting at once, each group racing for the
    // first key of one (purpose, algorithm).
    let groups = [
        (KeyPurpose::Access, "EdDSA"),
        (KeyPurpose::IdToken, "EdDSA"),
        (KeyPurpose::IdToken, "RS256"),
    ];
    let barrier = Arc::new(Barrier::new(groups.len() * 6));
    let mut tasks = JoinSet::new();
    for (g, (purpose, alg)) in groups.into_iter().enumerate() {
        for i in 0..6 {
            let keys = stores.keys.clone();
            let barrier = barrier.clone();
            let k = StoredKey {
                purpose,
                ..key(&format!("k{g}-{i}"), alg, at(i))
            };
            tasks.spawn(async move {
                barrier.wait().await;
                let added = keys.add_first_key(&k, at(3600)).await.expect("add");
                (g, added)
            });
        }
    }
    let mut added = [0; 3];
    while let Some(done) = tasks.join_next().await {
        let (g, won) = done.expect("task");
        if won {
            added[g] += 1;
        }
    }

    assert_eq!(added, [1, 1, 1], "one node's key wins in each group");
    let stored = keys(&stores).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(stored.iter().all(|k| k.retire_at.is_none()), "{stored:?}");
    let mut current: Vec<(KeyPurpose, &str)> =
        stored.iter().map(|k| (k.purpose, k.alg.as_str())).collect();
    current.sort_by_key(|(p, a)| (p.as_str(), *a));
    assert_eq!(current, groups);
}

// ---------------------------------------------------------------------------
// Live-session count and the audit trail
// ---------------------------------------------------------------------------

async fn count_sessions_counts_every_users_unexpired_sessions(stores: Stores) {
    let now = OffsetDateTime::now_utc();
    let count = |at| {
        let stores = stores.clone();
        async move {
            stores
                .sessions
                .count_sessions(at)
                .await
                .expect("count_sessions")
        }
    };
    assert_eq!(count(now).await, 0);
    let a = create(&stores, "count-a@example.com", &[]).await.id;
    let b = create(&stores, "count-b@example.com", &[]).await.id;
    let s1 = session(a, 1, now);
    let s2 = session(a, 2, now);
    let s3 = session(b, 3, now);
    for s in [&s1, &s2, &s3] {
        insert(&stores, s).await;
    }
    assert_eq!(count(now).await, 3);
    assert!(
        stores
            .sessions
            .delete_session(s2.id, a, now + time::Duration::days(30))
            .await
            .expect("delete")
    );
    assert_eq!(count(now).await, 2, "an ended session no longer counts");
    // Past their absolute expiry (30 days), none counts, swept or not.
    assert_eq!(count(s1.expires_at).await, 0);
    assert_eq!(count(s1.expires_at - time::Duration::seconds(1)).await, 2);
}

fn audit(kind: EventType, at_s: i64) -> AuditEvent {
    AuditEvent::new(kind, Actor::System, at(at_s))
}

async fn read(stores: &Stores, q: AuditQuery) -> Vec<AuditEvent> {
    stores.audit.audit_events(&q).await.expect("audit_events")
}

fn query(limit: u32) -> AuditQuery {
    AuditQuery {
        limit,
        ..AuditQuery::default()
    }
}

async fn audit_events_read_back_newest_first_with_every_field(stores: Stores) {
    let user = UserId::new();
    let admin = UserId::new();
    let session = SessionId::new();
    let full = audit(EventType::LoginFailed, 10)
        .user(user)
        .session(session)
        .ip(Some("2001:db8::7".parse().expect("ip")))
        .detail("reason", "wrong_password")
        .detail("roles", vec!["a'); DROP TABLE audit_events;--", "<b>"]);
    let mut by_admin = audit(EventType::UserDisabled, 20).user(user);
    by_admin.actor = Actor::User(admin);
    let mut by_cli = audit(EventType::KeyRotated, 30).detail("kid", "k1");
    by_cli.actor = Actor::Cli;
    let mut anonymous = audit(EventType::LoginThrottled, 40);
    anonymous.actor = Actor::Anonymous;
    stores
        .audit
        .append(&[full.clone(), by_admin.clone()], &[])
        .await
        .expect("append");
    stores
        .audit
        .append(&[by_cli.clone(), anonymous.clone()], &[])
        .await
        .expect("append");
    stores.audit.append(&[], &[]).await.expect("append nothing");
    let got = read(&stores, query(10)).await;
    assert_eq!(got, vec![anonymous, by_cli, by_admin, full]);
}

async fn audit_events_filter_by_user_and_type_and_page_without_gaps(stores: Stores) {
    let (a, b) = (UserId::new(), UserId::new());
    let mut written = Vec::new();
    for i in 0..9 {
        let kind = if i % 3 == 0 {
            EventType::Logout
        } else {
            EventType::LoginSucceeded
        };
        let e = audit(kind, i).user(if i % 2 == 0 { a } else { b });
        stores
            .audit
            .append(std::slice::from_ref(&e), &[])
            .await
            .expect("append");
        written.push(e);
    }
    let ids = |events: &[AuditEvent]| events.iter().map(|e| e.id).collect::<Vec<_>>();
    let newest_first: Vec<_> = written.iter().rev().cloned().collect();
    let of_a: Vec<_> = newest_first
        .iter()
        .filter(|e| e.user_id == Some(a))
        .cloned()
        .collect();
    let q = AuditQuery {
        user: Some(a),
        ..query(50)
    };
    assert_eq!(ids(&read(&stores, q).await), ids(&of_a));
    let q = AuditQuery {
        kind: Some(EventType::Logout),
        ..query(50)
    };
    assert_eq!(
        ids(&read(&stores, q).await),
        ids(&newest_first
            .iter()
            .filter(|e| e.kind == EventType::Logout)
            .cloned()
            .collect::<Vec<_>>())
    );
    let q = AuditQuery {
        user: Some(b),
        kind: Some(EventType::Logout),
        ..query(50)
    };
    let both = read(&stores, q).await;
    assert_eq!(both.len(), 1, "only event 3 is b's logout");
    assert_eq!(both[0].id, written[3].id);
    assert!(
        read(
            &stores,
            AuditQuery {
                user: Some(UserId::new()),
                ..query(50)
            }
        )
        .await
        .is_empty()
    );

    // Pages of 4, each strictly before the last id of the previous, with an
    // event appended between pages: no repeat, no gap.
    let first = read(&stores, query(4)).await;
    let late = audit(EventType::Logout, 100).user(a);
    stores
        .audit
        .append(std::slice::from_ref(&late), &[])
        .await
        .expect("append");
    let mut paged = first.clone();
    let mut before = first.last().map(|e| e.id);
    while let Some(b) = before {
        let page = read(
            &stores,
            AuditQuery {
                before: Some(b),
                ..query(4)
            },
        )
        .await;
        before = page.last().map(|e| e.id);
        paged.extend(page);
    }
    assert_eq!(ids(&paged), ids(&newest_first));
}

async fn audit_events_before_the_cutoff_are_deleted(stores: Stores) {
    let old = audit(EventType::Logout, 10);
    let edge = audit(EventType::Logout, 20);
    let new = audit(EventType::Logout, 30);
    stores
        .audit
        .append(&[old, edge.clone(), new.clone()], &[])
        .await
        .expect("append");
    let deleted = stores
        .audit
        .delete_audit_events_before(at(20))
        .await
        .expect("delete");
    assert_eq!(deleted, 1);
    assert_eq!(read(&stores, query(10)).await, vec![new, edge]);
}

// ---------------------------------------------------------------------------
// Resource servers
// ---------------------------------------------------------------------------

/// A resource server named `name` whose key hashes to `[tag; 32]`.
fn resource_server(name: &str, tag: u8) -> ResourceServerRecord {
    ResourceServerRecord {
        id: ResourceServerId::new(),
        name: name.to_owned(),
        key_hash: SecretHash([tag; 32]),
        // Whole seconds: every backend keeps at least that precision.
        created_at: datetime!(2026-06-01 12:00:00 UTC),
    }
}

async fn resource_servers_read_back_by_key_hash_and_list_by_name(stores: Stores) {
    let rs = &stores.resource_servers;
    assert!(rs.resource_servers().await.expect("list").is_empty());
    let orders = resource_server("orders", 1);
    let billing = resource_server("billing", 2);
    for r in [&orders, &billing] {
        rs.create_resource_server(r).await.expect("created");
    }
    let found = rs
        .resource_server_by_key(&orders.key_hash)
        .await
        .expect("read")
        .expect("found by its key's hash");
    assert_eq!(found.id, orders.id);
    assert_eq!(found.name, "orders");
    assert_eq!(found.key_hash, orders.key_hash);
    assert_eq!(found.created_at, orders.created_at);
    assert!(
        rs.resource_server_by_key(&SecretHash([9; 32]))
            .await
            .expect("read")
            .is_none(),
        "an unknown key is no resource server"
    );
    let names: Vec<String> = rs
        .resource_servers()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["billing", "orders"], "listed by name");
}

async fn a_taken_resource_server_name_is_refused(stores: Stores) {
    let rs = &stores.resource_servers;
    let first = resource_server("orders", 1);
    rs.create_resource_server(&first).await.expect("created");
    let again = resource_server("orders", 2);
    assert!(matches!(
        rs.create_resource_server(&again).await,
        Err(CreateResourceServerError::NameTaken)
    ));
    // Nothing of the refused one was stored: its key is no key.
    assert!(
        rs.resource_server_by_key(&again.key_hash)
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(rs.resource_servers().await.expect("list").len(), 1);
}

async fn concurrent_creates_of_one_resource_server_name_admit_exactly_one(stores: Stores) {
    const N: u8 = 8;
    let barrier = Arc::new(Barrier::new(usize::from(N)));
    let mut set = JoinSet::new();
    for tag in 0..N {
        let rs = stores.resource_servers.clone();
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            rs.create_resource_server(&resource_server("orders", tag))
                .await
        });
    }
    let mut created = 0;
    while let Some(result) = set.join_next().await {
        match result.expect("task") {
            Ok(()) => created += 1,
            Err(CreateResourceServerError::NameTaken) => {}
            Err(e) => panic!("a store failure, not NameTaken: {e:#}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        stores
            .resource_servers
            .resource_servers()
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn deleting_a_resource_server_ends_its_key(stores: Stores) {
    let rs = &stores.resource_servers;
    let orders = resource_server("orders", 1);
    let billing = resource_server("billing", 2);
    for r in [&orders, &billing] {
        rs.create_resource_server(r).await.expect("created");
    }
    assert!(rs.delete_resource_server(orders.id).await.expect("deleted"));
    assert!(
        !rs.delete_resource_server(orders.id).await.expect("read"),
        "a second delete finds none"
    );
    assert!(
        rs.resource_server_by_key(&orders.key_hash)
            .await
            .expect("read")
            .is_none(),
        "its key no longer opens the feed"
    );
    assert!(
        rs.resource_server_by_key(&billing.key_hash)
            .await
            .expect("read")
            .is_some(),
        "the other one is untouched"
    );
    // The name is free again.
    rs.create_resource_server(&resource_server("orders", 3))
        .await
        .expect("created anew");
}

// Second factors (MfaStore): always the SQL database.

contract! {
    a_totp_credential_is_pending_until_confirmed_and_its_steps_move_forward_only
        => sqlite_totp_steps_move_forward_only, postgres_totp_steps_move_forward_only;
    concurrent_uses_of_one_step_or_one_code_admit_exactly_one
        => sqlite_concurrent_uses_of_one_step_admit_one,
           postgres_concurrent_uses_of_one_step_admit_one;
    recovery_codes_are_replaced_whole_and_go_with_the_last_factor
        => sqlite_recovery_codes_go_with_the_last_factor,
           postgres_recovery_codes_go_with_the_last_factor;
    a_pending_login_counts_failures_is_spent_once_and_is_swept
        => sqlite_pending_logins_are_spent_once, postgres_pending_logins_are_spent_once;
    passkeys_are_unique_by_credential_and_their_counter_moves_by_compare_and_swap
        => sqlite_passkeys_counter_cas, postgres_passkeys_counter_cas;
    a_ceremony_is_taken_once_and_swept_when_expired
        => sqlite_ceremonies_are_taken_once, postgres_ceremonies_are_taken_once;
}

fn totp_record(secret: &[u8], encrypted: bool) -> TotpRecord {
    TotpRecord {
        secret: secret.to_vec(),
        encrypted,
        created_at: at(0),
        confirmed_at: None,
        last_step: 0,
    }
}

fn pending(user: UserId, expires_at: OffsetDateTime) -> PendingLogin {
    PendingLogin {
        user_id: user,
        amr: Amr::PASSWORD,
        created_at: at(0),
        expires_at,
        failures: 0,
    }
}

async fn a_totp_credential_is_pending_until_confirmed_and_its_steps_move_forward_only(
    stores: Stores,
) {
    let mfa = &stores.mfa;
    let alice = create(&stores, "alice@example.com", &[]).await;
    assert_eq!(mfa.totp(alice.id).await.expect("read"), None);
    assert!(
        mfa.put_pending_totp(alice.id, &totp_record(b"first", false))
            .await
            .expect("put")
    );
    // A pending one is replaced, and is no factor yet.
    assert!(
        mfa.put_pending_totp(alice.id, &totp_record(b"second", true))
            .await
            .expect("put")
    );
    let stored = mfa.totp(alice.id).await.expect("read").expect("pending");
    assert_eq!(
        (stored.secret.as_slice(), stored.encrypted),
        (&b"second"[..], true)
    );
    assert_eq!(stored.confirmed_at, None);
    assert_eq!(
        mfa.factors(alice.id).await.expect("read"),
        FactorSummary::default()
    );
    assert!(
        !mfa.spend_totp_step(alice.id, 5).await.expect("spend"),
        "not while pending"
    );
    // Confirmed only with the secret that is stored.
    assert!(
        !mfa.confirm_totp(alice.id, b"first", 10, at(1))
            .await
            .expect("confirm")
    );
    assert!(
        mfa.confirm_totp(alice.id, b"second", 10, at(1))
            .await
            .expect("confirm")
    );
    assert!(
        !mfa.confirm_totp(alice.id, b"second", 11, at(2))
            .await
            .expect("once")
    );
    let stored = mfa.totp(alice.id).await.expect("read").expect("active");
    assert_eq!((stored.confirmed_at, stored.last_step), (Some(at(1)), 10));
    assert!(mfa.factors(alice.id).await.expect("read").totp);
    // A confirmed credential is not replaced by a new enrolment.
    assert!(
        !mfa.put_pending_totp(alice.id, &totp_record(b"third", false))
            .await
            .expect("put")
    );
    // Steps: only later ones, each once.
    for (step, accepted) in [
        (10, false),
        (9, false),
        (11, true),
        (11, false),
        (13, true),
        (12, false),
    ] {
        assert_eq!(
            mfa.spend_totp_step(alice.id, step).await.expect("spend"),
            accepted,
            "step {step}"
        );
    }
    // Sealing an unsealed key only replaces what was read.
    let bob = create(&stores, "bob@example.com", &[]).await;
    assert!(
        mfa.put_pending_totp(bob.id, &totp_record(b"plain", false))
            .await
            .expect("put")
    );
    assert_eq!(
        mfa.unsealed_totp().await.expect("read"),
        vec![(bob.id, b"plain".to_vec())]
    );
    assert!(
        !mfa.seal_totp(bob.id, b"other", b"sealed")
            .await
            .expect("seal")
    );
    assert!(
        mfa.seal_totp(bob.id, b"plain", b"sealed")
            .await
            .expect("seal")
    );
    assert!(mfa.unsealed_totp().await.expect("read").is_empty());
    let sealed = mfa.totp(bob.id).await.expect("read").expect("there");
    assert_eq!(
        (sealed.secret.as_slice(), sealed.encrypted),
        (&b"sealed"[..], true)
    );
    // Deleting the user deletes the credential.
    assert!(stores.users.delete_user(bob.id).await.expect("deleted"));
    assert_eq!(mfa.totp(bob.id).await.expect("read"), None);
}

async fn concurrent_uses_of_one_step_or_one_code_admit_exactly_one(stores: Stores) {
    let mfa = stores.mfa.clone();
    let alice = create(&stores, "alice@example.com", &[]).await;
    assert!(
        mfa.put_pending_totp(alice.id, &totp_record(b"k", false))
            .await
            .expect("put")
    );
    assert!(
        mfa.confirm_totp(alice.id, b"k", 1, at(0))
            .await
            .expect("confirm")
    );
    let code = SecretHash([3; 32]);
    mfa.replace_recovery_codes(alice.id, &[code], at(0))
        .await
        .expect("codes");
    let barrier = Arc::new(Barrier::new(16));
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let (mfa, barrier) = (mfa.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            if i % 2 == 0 {
                (0, mfa.spend_totp_step(alice.id, 2).await.expect("spend"))
            } else {
                (
                    1,
                    mfa.spend_recovery_code(alice.id, &code)
                        .await
                        .expect("spend"),
                )
            }
        });
    }
    let mut won = [0, 0];
    while let Some(r) = tasks.join_next().await {
        let (kind, ok) = r.expect("task");
        won[kind] += usize::from(ok);
    }
    assert_eq!(won, [1, 1], "one step and one code, each used once");
}

async fn recovery_codes_are_replaced_whole_and_go_with_the_last_factor(stores: Stores) {
    let mfa = &stores.mfa;
    let alice = create(&stores, "alice@example.com", &[]).await;
    let old = [SecretHash([1; 32]), SecretHash([2; 32])];
    let new = [
        SecretHash([3; 32]),
        SecretHash([4; 32]),
        SecretHash([5; 32]),
    ];
    assert!(
        mfa.put_pending_totp(alice.id, &totp_record(b"k", false))
            .await
            .expect("put")
    );
    assert!(
        mfa.confirm_totp(alice.id, b"k", 1, at(0))
            .await
            .expect("confirm")
    );
    mfa.replace_recovery_codes(alice.id, &old, at(0))
        .await
        .expect("codes");
    mfa.replace_recovery_codes(alice.id, &new, at(1))
        .await
        .expect("codes");
    assert_eq!(
        mfa.factors(alice.id).await.expect("read"),
        FactorSummary {
            totp: true,
            passkeys: 0,
            recovery_codes_left: 3
        }
    );
    assert!(
        !mfa.spend_recovery_code(alice.id, &old[0])
            .await
            .expect("spend"),
        "old set void"
    );
    assert!(
        mfa.spend_recovery_code(alice.id, &new[0])
            .await
            .expect("spend")
    );
    assert!(
        !mfa.spend_recovery_code(alice.id, &new[0])
            .await
            .expect("spend"),
        "once"
    );
    // Another user's code is not this user's.
    let bob = create(&stores, "bob@example.com", &[]).await;
    assert!(
        !mfa.spend_recovery_code(bob.id, &new[1])
            .await
            .expect("spend")
    );
    // Removing the last factor removes the codes with it.
    assert!(mfa.delete_totp(alice.id).await.expect("delete"));
    assert!(
        !mfa.delete_totp(alice.id).await.expect("delete"),
        "nothing left to delete"
    );
    assert_eq!(
        mfa.factors(alice.id).await.expect("read"),
        FactorSummary::default()
    );
    // A reset removes everything, pending logins included.
    assert!(
        mfa.put_pending_totp(alice.id, &totp_record(b"k", false))
            .await
            .expect("put")
    );
    assert!(
        mfa.confirm_totp(alice.id, b"k", 1, at(0))
            .await
            .expect("confirm")
    );
    mfa.replace_recovery_codes(alice.id, &new, at(1))
        .await
        .expect("codes");
    let token = SecretHash([9; 32]);
    mfa.insert_pending_login(&token, &pending(alice.id, at(300)))
        .await
        .expect("insert");
    assert!(mfa.reset_mfa(alice.id).await.expect("reset"));
    assert!(
        !mfa.reset_mfa(alice.id).await.expect("reset"),
        "nothing the second time"
    );
    assert_eq!(
        mfa.factors(alice.id).await.expect("read"),
        FactorSummary::default()
    );
    assert_eq!(mfa.pending_login(&token).await.expect("read"), None);
}

async fn a_pending_login_counts_failures_is_spent_once_and_is_swept(stores: Stores) {
    let mfa = &stores.mfa;
    let alice = create(&stores, "alice@example.com", &[]).await;
    let (a, b, c) = (
        SecretHash([1; 32]),
        SecretHash([2; 32]),
        SecretHash([3; 32]),
    );
    let login = PendingLogin {
        amr: Amr::PASSWORD,
        ..pending(alice.id, at(300))
    };
    mfa.insert_pending_login(&a, &login).await.expect("insert");
    mfa.insert_pending_login(&b, &pending(alice.id, at(300)))
        .await
        .expect("insert");
    mfa.insert_pending_login(&c, &pending(alice.id, at(60)))
        .await
        .expect("insert");
    assert_eq!(
        mfa.pending_login(&a).await.expect("read"),
        Some(login.clone())
    );
    assert_eq!(mfa.pending_login_failed(&a).await.expect("count"), Some(1));
    assert_eq!(mfa.pending_login_failed(&a).await.expect("count"), Some(2));
    assert_eq!(
        mfa.pending_login_failed(&SecretHash([8; 32]))
            .await
            .expect("count"),
        None
    );
    assert_eq!(
        mfa.pending_login(&a)
            .await
            .expect("read")
            .expect("there")
            .failures,
        2
    );
    assert!(mfa.take_pending_login(&a).await.expect("take"));
    assert!(
        !mfa.take_pending_login(&a).await.expect("take"),
        "spent once"
    );
    // With a TOTP step, in one transaction: both or neither.
    assert!(
        mfa.put_pending_totp(alice.id, &totp_record(b"k", false))
            .await
            .expect("put")
    );
    assert!(
        mfa.confirm_totp(alice.id, b"k", 5, at(0))
            .await
            .expect("confirm")
    );
    assert_eq!(
        mfa.finish_totp_login(&b, alice.id, 5)
            .await
            .expect("finish"),
        TotpLogin::StepUsed
    );
    assert!(
        mfa.pending_login(&b).await.expect("read").is_some(),
        "the token is unspent"
    );
    assert_eq!(
        mfa.finish_totp_login(&a, alice.id, 6)
            .await
            .expect("finish"),
        TotpLogin::LoginGone
    );
    assert!(
        mfa.spend_totp_step(alice.id, 6).await.expect("spend"),
        "step 6 still unspent"
    );
    assert_eq!(
        mfa.finish_totp_login(&b, alice.id, 7)
            .await
            .expect("finish"),
        TotpLogin::Done
    );
    assert_eq!(mfa.pending_login(&b).await.expect("read"), None);
    assert!(!mfa.spend_totp_step(alice.id, 7).await.expect("spend"));
    // The sweep takes what expired by `now`, and nothing else.
    let d = SecretHash([4; 32]);
    mfa.insert_pending_login(&d, &pending(alice.id, at(600)))
        .await
        .expect("insert");
    assert_eq!(mfa.delete_expired_mfa(at(60)).await.expect("sweep"), 1);
    assert_eq!(mfa.pending_login(&c).await.expect("read"), None);
    assert!(mfa.pending_login(&d).await.expect("read").is_some());
}

fn passkey(user: UserId, credential: &[u8], count: u32) -> PasskeyRecord {
    PasskeyRecord {
        id: gatehouse::auth::types::PasskeyId::new(),
        user_id: user,
        credential_id: credential.to_vec(),
        name: "Laptop".into(),
        passkey: r#"{"cred":{"counter":0}}"#.into(),
        sign_count: count,
        backup_eligible: true,
        backup_state: false,
        created_at: at(0),
        last_used_at: None,
    }
}

async fn passkeys_are_unique_by_credential_and_their_counter_moves_by_compare_and_swap(
    stores: Stores,
) {
    let mfa = &stores.mfa;
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let key = passkey(alice.id, b"cred-1", 0);
    assert!(mfa.insert_passkey(&key).await.expect("insert"));
    // The same credential id, to anyone, is refused.
    assert!(
        !mfa.insert_passkey(&passkey(bob.id, b"cred-1", 0))
            .await
            .expect("insert")
    );
    assert!(mfa.passkeys_of(bob.id).await.expect("read").is_empty());
    assert_eq!(
        mfa.passkeys_of(alice.id).await.expect("read"),
        vec![key.clone()]
    );
    assert_eq!(
        mfa.passkey_by_credential(b"cred-1").await.expect("read"),
        Some(key.clone())
    );
    assert_eq!(
        mfa.passkey_by_credential(b"nope").await.expect("read"),
        None
    );
    assert_eq!(
        mfa.factors(alice.id).await.expect("read"),
        FactorSummary {
            totp: false,
            passkeys: 1,
            recovery_codes_left: 0
        }
    );
    // A use is written only over the counter that was read.
    let used = PasskeyRecord {
        passkey: r#"{"cred":{"counter":5}}"#.into(),
        sign_count: 5,
        backup_state: true,
        last_used_at: Some(at(10)),
        ..key.clone()
    };
    assert!(mfa.record_passkey_use(&used, 0).await.expect("use"));
    assert!(
        !mfa.record_passkey_use(&used, 0).await.expect("use"),
        "the counter moved"
    );
    assert_eq!(
        mfa.passkey_by_credential(b"cred-1").await.expect("read"),
        Some(used.clone())
    );
    // Removal: only the owner's, and the codes go with the last factor.
    mfa.replace_recovery_codes(alice.id, &[SecretHash([1; 32])], at(0))
        .await
        .expect("codes");
    assert!(
        !mfa.delete_passkey(bob.id, key.id).await.expect("delete"),
        "not bob's"
    );
    assert!(mfa.delete_passkey(alice.id, key.id).await.expect("delete"));
    assert_eq!(
        mfa.factors(alice.id).await.expect("read"),
        FactorSummary::default()
    );
    // A reset takes passkeys too.
    assert!(
        mfa.insert_passkey(&passkey(alice.id, b"cred-2", 0))
            .await
            .expect("insert")
    );
    assert!(mfa.reset_mfa(alice.id).await.expect("reset"));
    assert!(mfa.passkeys_of(alice.id).await.expect("read").is_empty());
}

async fn a_ceremony_is_taken_once_and_swept_when_expired(stores: Stores) {
    let mfa = stores.mfa.clone();
    let alice = create(&stores, "alice@example.com", &[]).await;
    let ceremony = Ceremony {
        id: uuid::Uuid::new_v4(),
        kind: CeremonyKind::SecondFactor,
        user_id: Some(alice.id),
        mfa_token_hash: Some(SecretHash([7; 32])),
        state: r#"{"state":1}"#.into(),
        expires_at: at(300),
    };
    mfa.insert_ceremony(&ceremony).await.expect("insert");
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (mfa, barrier, id) = (mfa.clone(), barrier.clone(), ceremony.id);
        tasks.spawn(async move {
            barrier.wait().await;
            mfa.take_ceremony(id).await.expect("take")
        });
    }
    let mut taken = Vec::new();
    while let Some(r) = tasks.join_next().await {
        taken.extend(r.expect("task"));
    }
    assert_eq!(taken, vec![ceremony], "taken once, as stored");
    let passwordless = Ceremony {
        id: uuid::Uuid::new_v4(),
        kind: CeremonyKind::Passwordless,
        user_id: None,
        mfa_token_hash: None,
        state: "{}".into(),
        expires_at: at(60),
    };
    mfa.insert_ceremony(&passwordless).await.expect("insert");
    mfa.delete_expired_mfa(at(60)).await.expect("sweep");
    assert_eq!(
        mfa.take_ceremony(passwordless.id).await.expect("take"),
        None
    );
}

// ---------------------------------------------------------------------------
// Mail (MailStore, and the notices AuditStore::append writes): always the SQL
// database
// ---------------------------------------------------------------------------

contract! {
    a_mail_token_and_its_mail_are_written_together
        => sqlite_a_mail_token_and_its_mail_are_written_together,
           postgres_a_mail_token_and_its_mail_are_written_together;
    last_mail_token_at_is_the_newest_of_the_users_purpose
        => sqlite_last_mail_token_at_is_the_newest_of_the_users_purpose,
           postgres_last_mail_token_at_is_the_newest_of_the_users_purpose;
    a_reset_token_sets_the_password_only_while_unspent_unexpired_and_bound
        => sqlite_a_reset_token_sets_the_password_only_while_bound,
           postgres_a_reset_token_sets_the_password_only_while_bound;
    a_verification_token_verifies_only_its_users_current_address
        => sqlite_a_verification_token_verifies_only_its_users_current_address,
           postgres_a_verification_token_verifies_only_its_users_current_address;
    concurrent_spends_of_one_mail_token_admit_exactly_one
        => sqlite_concurrent_spends_of_one_mail_token_admit_exactly_one,
           postgres_concurrent_spends_of_one_mail_token_admit_exactly_one;
    set_email_verified_sets_and_clears_the_flag
        => sqlite_set_email_verified_sets_and_clears_the_flag,
           postgres_set_email_verified_sets_and_clears_the_flag;
    claimed_mails_are_due_counted_and_held_until_their_lease_passes
        => sqlite_claimed_mails_are_held_until_their_lease_passes,
           postgres_claimed_mails_are_held_until_their_lease_passes;
    a_failed_mail_is_retried_at_its_time_or_given_up_and_a_sent_one_deleted
        => sqlite_a_failed_mail_is_retried_or_given_up_and_a_sent_one_deleted,
           postgres_a_failed_mail_is_retried_or_given_up_and_a_sent_one_deleted;
    concurrent_claimers_get_disjoint_mails_and_together_every_due_one
        => sqlite_concurrent_claimers_get_disjoint_mails,
           postgres_concurrent_claimers_get_disjoint_mails;
    outbox_stats_count_pending_and_failed_mails
        => sqlite_outbox_stats_count_pending_and_failed_mails,
           postgres_outbox_stats_count_pending_and_failed_mails;
    sweep_mail_deletes_expired_tokens_old_failed_mails_and_stale_devices_only
        => sqlite_sweep_mail_deletes_only_what_is_past_its_cutoff,
           postgres_sweep_mail_deletes_only_what_is_past_its_cutoff;
    remember_device_tells_a_first_known_and_new_device_per_user
        => sqlite_remember_device_tells_first_known_and_new_per_user,
           postgres_remember_device_tells_first_known_and_new_per_user;
    a_device_seen_again_at_the_same_instant_is_known
        => sqlite_a_device_seen_again_at_the_same_instant_is_known,
           postgres_a_device_seen_again_at_the_same_instant_is_known;
    append_writes_events_and_their_mails_together_or_neither
        => sqlite_append_writes_events_and_their_mails_together_or_neither,
           postgres_append_writes_events_and_their_mails_together_or_neither;
}

/// A mail to `to` written at `created_at` (and so due from then).
fn outbox_mail(to: &str, created_at: OffsetDateTime) -> OutboxMail {
    OutboxMail {
        id: Uuid::now_v7(),
        kind: MailKind::PasswordReset,
        to: to.to_owned(),
        subject: "Reset your password".to_owned(),
        text: format!("A link for {to}: https://id.example.com/reset-password?token=t"),
        html: format!("<p>A link for {to}</p>"),
        created_at,
    }
}

/// A token of `user` for `purpose` whose hash is `[tag; 32]`.
fn mail_token(
    user: UserId,
    purpose: TokenPurpose,
    tag: u8,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> MailTokenRecord {
    MailTokenRecord {
        hash: SecretHash([tag; 32]),
        purpose,
        user_id: user,
        binding: SecretHash([tag ^ 0xff; 32]),
        created_at,
        expires_at,
    }
}

/// Issues `token` with a mail of its own; returns the mail.
async fn issue(stores: &Stores, token: &MailTokenRecord) -> OutboxMail {
    let mail = outbox_mail("someone@example.com", token.created_at);
    stores
        .mail
        .issue_mail_token(token, &mail)
        .await
        .expect("issue_mail_token");
    mail
}

async fn stored_token(stores: &Stores, hash: SecretHash) -> Option<MailTokenRecord> {
    stores.mail.mail_token(&hash).await.expect("mail_token")
}

async fn outbox(stores: &Stores) -> OutboxStats {
    stores.mail.outbox_stats().await.expect("outbox_stats")
}

async fn enqueue(stores: &Stores, mails: &[OutboxMail]) {
    stores
        .mail
        .enqueue_mails(mails)
        .await
        .expect("enqueue_mails");
}

/// What one `claim_mails` gives, by id (the store promises no order).
async fn claim(
    stores: &Stores,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
) -> Vec<ClaimedMail> {
    let mut claimed = stores
        .mail
        .claim_mails(now, lease_until, limit)
        .await
        .expect("claim_mails");
    claimed.sort_by_key(|c| c.mail.id);
    claimed
}

/// `mails` as claimed for the `attempts`-th time, by id.
fn claimed(mails: &[&OutboxMail], attempts: u32) -> Vec<ClaimedMail> {
    let mut claimed: Vec<ClaimedMail> = mails
        .iter()
        .map(|m| ClaimedMail {
            mail: (*m).clone(),
            attempts,
        })
        .collect();
    claimed.sort_by_key(|c| c.mail.id);
    claimed
}

async fn failed(stores: &Stores, id: Uuid, retry_at: Option<OffsetDateTime>, now: OffsetDateTime) {
    stores
        .mail
        .mail_failed(id, "451 4.3.0 try again later", retry_at, now)
        .await
        .expect("mail_failed");
}

async fn device(stores: &Stores, user: UserId, tag: u8, now: OffsetDateTime) -> DeviceSeen {
    stores
        .mail
        .remember_device(user, &SecretHash([tag; 32]), now)
        .await
        .expect("remember_device")
}

async fn a_mail_token_and_its_mail_are_written_together(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    // Times at millisecond precision read back equal.
    let token = mail_token(
        alice.id,
        TokenPurpose::PasswordReset,
        1,
        at(0) + 123 * MS,
        at(1800) + 123 * MS,
    );
    let mail = outbox_mail(&alice.email, at(0) + 123 * MS);
    stores
        .mail
        .issue_mail_token(&token, &mail)
        .await
        .expect("issue_mail_token");
    assert_eq!(stored_token(&stores, token.hash).await, Some(token.clone()));
    assert_eq!(stored_token(&stores, SecretHash([9; 32])).await, None);
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 1,
            failed: 0,
            oldest_pending: Some(mail.created_at),
        }
    );
    // Due from its creation, with every field as written.
    assert_eq!(
        claim(&stores, at(0) + 123 * MS, at(120), 10).await,
        claimed(&[&mail], 1)
    );

    // A finer instant is kept to the millisecond, on every backend.
    let fine = mail_token(
        alice.id,
        TokenPurpose::EmailVerification,
        2,
        at(10) + 5 * MS + time::Duration::microseconds(300),
        at(20) + 7 * MS + time::Duration::microseconds(999),
    );
    issue(&stores, &fine).await;
    let read = stored_token(&stores, fine.hash).await.expect("stored");
    assert_eq!(
        (read.created_at, read.expires_at),
        (at(10) + 5 * MS, at(20) + 7 * MS)
    );

    // Neither without the other: a mail whose id is taken stores no token,
    // and a token whose hash is taken writes no mail.
    let orphan = mail_token(alice.id, TokenPurpose::PasswordReset, 3, at(30), at(90));
    let taken_id = OutboxMail {
        created_at: at(30),
        ..mail.clone()
    };
    let refused = stores.mail.issue_mail_token(&orphan, &taken_id).await;
    assert!(refused.is_err(), "a duplicate mail id is refused");
    assert_eq!(stored_token(&stores, orphan.hash).await, None);
    let before = outbox(&stores).await;
    let again = mail_token(alice.id, TokenPurpose::PasswordReset, 1, at(40), at(90));
    let lost = outbox_mail(&alice.email, at(40));
    let refused = stores.mail.issue_mail_token(&again, &lost).await;
    assert!(refused.is_err(), "a duplicate token hash is refused");
    assert_eq!(outbox(&stores).await, before, "and its mail is not written");
    assert_eq!(stored_token(&stores, token.hash).await, Some(token));
}

async fn last_mail_token_at_is_the_newest_of_the_users_purpose(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let last = |user: UserId, purpose| {
        let stores = stores.clone();
        async move {
            stores
                .mail
                .last_mail_token_at(user, purpose)
                .await
                .expect("last_mail_token_at")
        }
    };
    assert_eq!(last(alice.id, TokenPurpose::PasswordReset).await, None);
    let reset = TokenPurpose::PasswordReset;
    let verify = TokenPurpose::EmailVerification;
    issue(
        &stores,
        &mail_token(alice.id, reset, 1, at(50) + 7 * MS, at(900)),
    )
    .await;
    issue(&stores, &mail_token(alice.id, reset, 2, at(10), at(900))).await;
    issue(&stores, &mail_token(alice.id, verify, 3, at(70), at(900))).await;
    issue(&stores, &mail_token(bob.id, reset, 4, at(90), at(900))).await;
    assert_eq!(last(alice.id, reset).await, Some(at(50) + 7 * MS));
    assert_eq!(last(alice.id, verify).await, Some(at(70)));
    assert_eq!(last(bob.id, reset).await, Some(at(90)));
    assert_eq!(last(bob.id, verify).await, None);
    assert_eq!(last(UserId::new(), reset).await, None);
}

async fn a_reset_token_sets_the_password_only_while_unspent_unexpired_and_bound(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let old = alice.password_hash.clone();
    let new = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
    let reset = TokenPurpose::PasswordReset;
    let token = mail_token(alice.id, reset, 1, at(0), at(1800));
    let other_reset = mail_token(alice.id, reset, 2, at(5), at(1800));
    let verification = mail_token(
        alice.id,
        TokenPurpose::EmailVerification,
        3,
        at(0),
        at(1800),
    );
    let bobs = mail_token(bob.id, reset, 4, at(0), at(1800));
    for t in [&token, &other_reset, &verification, &bobs] {
        issue(&stores, t).await;
    }
    let try_reset = |hash: SecretHash, user: UserId, old_hash: &str, now: OffsetDateTime| {
        let (stores, old_hash) = (stores.clone(), old_hash.to_owned());
        async move {
            stores
                .mail
                .reset_password(&hash, user, &old_hash, new, now)
                .await
                .expect("reset_password")
        }
    };
    let unchanged = |stores: Stores| async move {
        let a = user(&stores, alice.id).await.expect("alice");
        (a.password_hash, a.email_verified)
    };

    // Expired at `now` (expires_at is not after it), or later.
    assert!(!try_reset(token.hash, alice.id, &old, at(1800)).await);
    assert!(!try_reset(token.hash, alice.id, &old, at(4000)).await);
    // Of another purpose, another user, or unknown.
    assert!(!try_reset(verification.hash, alice.id, &old, at(10)).await);
    assert!(!try_reset(token.hash, bob.id, &old, at(10)).await);
    assert!(!try_reset(bobs.hash, alice.id, &old, at(10)).await);
    assert!(!try_reset(SecretHash([9; 32]), alice.id, &old, at(10)).await);
    // The password changed since the token was checked: nothing is done,
    // and the rollback leaves the token unspent.
    assert!(!try_reset(token.hash, alice.id, "$argon2id$other", at(10)).await);
    assert_eq!(unchanged(stores.clone()).await, (old.clone(), false));
    for t in [&token, &other_reset, &verification, &bobs] {
        assert_eq!(stored_token(&stores, t.hash).await.as_ref(), Some(t));
    }

    // Done just before expiry: the new hash, the address verified, every
    // reset token of the user gone with it, nothing else touched.
    assert!(try_reset(token.hash, alice.id, &old, at(1800) - MS).await);
    let after = user(&stores, alice.id).await.expect("alice");
    assert_eq!(
        (after.password_hash.as_str(), after.email_verified),
        (new, true)
    );
    assert_eq!(stored_token(&stores, token.hash).await, None);
    assert_eq!(stored_token(&stores, other_reset.hash).await, None);
    assert_eq!(
        stored_token(&stores, verification.hash).await,
        Some(verification)
    );
    assert_eq!(stored_token(&stores, bobs.hash).await, Some(bobs));
    let bob_after = user(&stores, bob.id).await.expect("bob");
    assert_eq!(
        (bob_after.password_hash, bob_after.email_verified),
        (bob.password_hash, false)
    );
    // Spent: once only.
    assert!(!try_reset(token.hash, alice.id, new, at(20)).await);
    assert!(!try_reset(other_reset.hash, alice.id, new, at(20)).await);
}

async fn a_verification_token_verifies_only_its_users_current_address(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let verify = TokenPurpose::EmailVerification;
    let token = mail_token(alice.id, verify, 1, at(0), at(3600));
    let other = mail_token(alice.id, verify, 2, at(0), at(3600));
    let reset = mail_token(alice.id, TokenPurpose::PasswordReset, 3, at(0), at(3600));
    for t in [&token, &other, &reset] {
        issue(&stores, t).await;
    }
    let try_verify = |hash: SecretHash, user: UserId, email: &str, now: OffsetDateTime| {
        let (stores, email) = (stores.clone(), email.to_owned());
        async move {
            stores
                .mail
                .verify_email(&hash, user, &email, now)
                .await
                .expect("verify_email")
        }
    };
    let verified = |id: UserId| {
        let stores = stores.clone();
        async move { user(&stores, id).await.expect("the user").email_verified }
    };
    assert!(
        !try_verify(token.hash, alice.id, &alice.email, at(3600)).await,
        "expired"
    );
    assert!(
        !try_verify(reset.hash, alice.id, &alice.email, at(10)).await,
        "a reset token"
    );
    assert!(
        !try_verify(token.hash, bob.id, &bob.email, at(10)).await,
        "another user"
    );
    assert!(!try_verify(SecretHash([9; 32]), alice.id, &alice.email, at(10)).await);
    // The address changed since: nothing is done, the token stays.
    assert!(!try_verify(token.hash, alice.id, "alice@example.org", at(10)).await);
    assert!(!verified(alice.id).await);
    assert_eq!(stored_token(&stores, token.hash).await, Some(token.clone()));

    assert!(try_verify(token.hash, alice.id, &alice.email, at(3600) - MS).await);
    assert!(verified(alice.id).await);
    assert!(!verified(bob.id).await);
    assert_eq!(stored_token(&stores, token.hash).await, None, "spent");
    // Only that token: the reset token and another verification link stay.
    assert_eq!(stored_token(&stores, reset.hash).await, Some(reset));
    assert_eq!(stored_token(&stores, other.hash).await, Some(other));
    assert!(
        !try_verify(token.hash, alice.id, &alice.email, at(20)).await,
        "once"
    );
}

async fn concurrent_spends_of_one_mail_token_admit_exactly_one(stores: Stores) {
    const RACERS: usize = 8;
    let alice = create(&stores, "alice@example.com", &[]).await;
    let old = alice.password_hash.clone();
    let reset = mail_token(alice.id, TokenPurpose::PasswordReset, 1, at(0), at(1800));
    let verify = mail_token(
        alice.id,
        TokenPurpose::EmailVerification,
        2,
        at(0),
        at(1800),
    );
    issue(&stores, &reset).await;
    issue(&stores, &verify).await;
    let new_hash = |i: usize| format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$racer{i}");

    let start = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let (stores, start, old, new) = (stores.clone(), start.clone(), old.clone(), new_hash(i));
        racers.spawn(async move {
            start.wait().await;
            let won = stores
                .mail
                .reset_password(&reset.hash, alice.id, &old, &new, at(10))
                .await;
            (i, won.unwrap_or_else(|e| panic!("racer {i}: {e:#}")))
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let (i, won) = joined.expect("a racer finished");
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "reset winners: {winners:?}");
    let after = user(&stores, alice.id).await.expect("alice");
    assert_eq!(after.password_hash, new_hash(winners[0]));

    // The verification link likewise, its user now verified by the reset:
    // un-verify to see the link do it.
    assert!(
        stores
            .mail
            .set_email_verified(alice.id, false)
            .await
            .expect("set_email_verified")
    );
    let start = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let (stores, start, email) = (stores.clone(), start.clone(), alice.email.clone());
        racers.spawn(async move {
            start.wait().await;
            let won = stores
                .mail
                .verify_email(&verify.hash, alice.id, &email, at(10))
                .await;
            won.unwrap_or_else(|e| panic!("racer {i}: {e:#}"))
        });
    }
    let mut won = 0;
    while let Some(joined) = racers.join_next().await {
        won += usize::from(joined.expect("a racer finished"));
    }
    assert_eq!(won, 1, "verification winners");
    assert!(user(&stores, alice.id).await.expect("alice").email_verified);
}

async fn set_email_verified_sets_and_clears_the_flag(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    assert!(
        !alice.email_verified,
        "a new account has not proved its address"
    );
    let set = |id: UserId, verified: bool| {
        let stores = stores.clone();
        async move {
            stores
                .mail
                .set_email_verified(id, verified)
                .await
                .expect("set_email_verified")
        }
    };
    let flag = |id: UserId| {
        let stores = stores.clone();
        async move { user(&stores, id).await.expect("the user").email_verified }
    };
    assert!(set(alice.id, true).await);
    assert!(flag(alice.id).await);
    assert!(
        set(alice.id, true).await,
        "setting it again still finds the user"
    );
    assert!(!flag(bob.id).await, "only that user");
    assert!(set(alice.id, false).await);
    assert!(!flag(alice.id).await);
    assert!(!set(UserId::new(), true).await, "an unknown user");
    // Read with the user everywhere.
    assert!(set(bob.id, true).await);
    let by_email = stores
        .users
        .user_by_email(&email("bob@example.com"))
        .await
        .expect("user_by_email")
        .expect("bob");
    assert!(by_email.email_verified);
}

async fn claimed_mails_are_due_counted_and_held_until_their_lease_passes(stores: Stores) {
    let a = outbox_mail("a@example.com", at(10));
    let b = outbox_mail("b@example.com", at(20));
    let c = outbox_mail("c@example.com", at(30));
    let later = outbox_mail("later@example.com", at(100));
    enqueue(&stores, &[a.clone(), b.clone()]).await;
    enqueue(&stores, std::slice::from_ref(&c)).await;
    enqueue(&stores, std::slice::from_ref(&later)).await;
    enqueue(&stores, &[]).await;

    assert!(
        claim(&stores, at(10) - MS, at(60), 10).await.is_empty(),
        "none due yet"
    );
    // Due: next_attempt_at (its creation) <= now; each as written, its
    // attempt counted.
    assert_eq!(
        claim(&stores, at(20), at(80), 10).await,
        claimed(&[&a, &b], 1)
    );
    // At most `limit`; `a` and `b` are held by their lease.
    assert_eq!(claim(&stores, at(30), at(90), 1).await, claimed(&[&c], 1));
    assert!(
        claim(&stores, at(79), at(200), 10).await.is_empty(),
        "all held or not due"
    );
    // Once the lease passes (claimed_until <= now), claimed again.
    let first = claim(&stores, at(80), at(200), 1).await;
    assert_eq!(first.len(), 1, "at most `limit`: {first:?}");
    let rest = claim(&stores, at(80), at(200), 10).await;
    let mut both = [first, rest].concat();
    both.sort_by_key(|m| m.mail.id);
    assert_eq!(both, claimed(&[&a, &b], 2));
    assert_eq!(
        attempts(&claim(&stores, at(100), at(300), 10).await),
        sorted(vec![(c.id, 2), (later.id, 1)])
    );
    assert!(claim(&stores, at(199), at(300), 10).await.is_empty());
    assert_eq!(
        attempts(&claim(&stores, at(300), at(400), 10).await),
        sorted(vec![(a.id, 3), (b.id, 3), (c.id, 3), (later.id, 2)])
    );
}

/// Each claimed mail's id and attempts, by id.
fn attempts(claimed: &[ClaimedMail]) -> Vec<(Uuid, u32)> {
    sorted(claimed.iter().map(|m| (m.mail.id, m.attempts)).collect())
}

async fn a_failed_mail_is_retried_at_its_time_or_given_up_and_a_sent_one_deleted(stores: Stores) {
    let retried = outbox_mail("retried@example.com", at(0));
    let given_up = outbox_mail("given-up@example.com", at(0));
    let sent = outbox_mail("sent@example.com", at(0));
    enqueue(&stores, &[retried.clone(), given_up.clone(), sent.clone()]).await;
    assert_eq!(
        claim(&stores, at(1), at(121), 10).await,
        claimed(&[&retried, &given_up, &sent], 1)
    );
    // A failure gives the mail back before its lease ends: due again at
    // `retry_at`, not before.
    failed(&stores, retried.id, Some(at(60)), at(2)).await;
    failed(&stores, given_up.id, None, at(2)).await;
    stores.mail.mail_sent(sent.id).await.expect("mail_sent");
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 1,
            failed: 1,
            oldest_pending: Some(retried.created_at),
        }
    );
    assert!(claim(&stores, at(60) - MS, at(200), 10).await.is_empty());
    assert_eq!(
        claim(&stores, at(60), at(200), 10).await,
        claimed(&[&retried], 2)
    );
    // Failing again, from its new lease.
    failed(&stores, retried.id, Some(at(100)), at(61)).await;
    assert_eq!(
        attempts(&claim(&stores, at(100), at(200), 10).await),
        vec![(retried.id, 3)]
    );
    // Given up on, sent: never claimed again, however late.
    stores.mail.mail_sent(retried.id).await.expect("mail_sent");
    assert!(
        claim(&stores, at(10 * DAY), at(11 * DAY), 10)
            .await
            .is_empty()
    );
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 0,
            failed: 1,
            oldest_pending: None,
        }
    );
    // Deleting what is gone is not an error.
    stores
        .mail
        .mail_sent(sent.id)
        .await
        .expect("mail_sent twice");
}

async fn concurrent_claimers_get_disjoint_mails_and_together_every_due_one(stores: Stores) {
    const CLAIMERS: usize = 8;
    const DUE: usize = 60;
    let mut due = Vec::new();
    for i in 0..DUE {
        due.push(outbox_mail(
            &format!("due{i}@example.com"),
            at(i as i64 % 7),
        ));
    }
    enqueue(&stores, &due).await;
    let not_due: Vec<_> = (0..5)
        .map(|i| outbox_mail(&format!("later{i}@example.com"), at(500 + i)))
        .collect();
    enqueue(&stores, &not_due).await;

    // Each claimer claims batches of at most 4 until it gets none.
    let start = Arc::new(Barrier::new(CLAIMERS));
    let mut claimers = JoinSet::new();
    for i in 0..CLAIMERS {
        let (stores, start) = (stores.clone(), start.clone());
        claimers.spawn(async move {
            start.wait().await;
            let (mut got, mut batches) = (Vec::new(), Vec::new());
            loop {
                let batch = stores.mail.claim_mails(at(50), at(170), 4).await;
                let batch = batch.unwrap_or_else(|e| panic!("claimer {i}: {e:#}"));
                if batch.is_empty() {
                    return (i, got, batches);
                }
                batches.push(batch.len());
                got.extend(batch);
            }
        });
    }
    let mut all = Vec::new();
    let mut per_claimer = Vec::new();
    while let Some(joined) = claimers.join_next().await {
        let (i, got, batches) = joined.expect("a claimer finished");
        per_claimer.push((i, batches));
        all.extend(got);
    }
    let ids: Vec<Uuid> = sorted(all.iter().map(|m| m.mail.id).collect());
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(
        ids, distinct,
        "a mail went to two claimers ({per_claimer:?})"
    );
    assert_eq!(
        ids,
        sorted(due.iter().map(|m| m.id).collect::<Vec<_>>()),
        "every due mail, and only those ({per_claimer:?})"
    );
    assert!(all.iter().all(|m| m.attempts == 1));
    assert!(
        per_claimer.iter().flat_map(|(_, b)| b).all(|n| *n <= 4),
        "a batch of more than `limit` (4): {per_claimer:?}"
    );
    assert!(claim(&stores, at(169), at(300), 100).await.is_empty());
}

async fn outbox_stats_count_pending_and_failed_mails(stores: Stores) {
    assert_eq!(outbox(&stores).await, OutboxStats::default());
    let oldest = outbox_mail("oldest@example.com", at(5) + 3 * MS);
    let newer = outbox_mail("newer@example.com", at(40));
    let newest = outbox_mail("newest@example.com", at(90));
    enqueue(&stores, &[newer.clone(), oldest.clone(), newest.clone()]).await;
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 3,
            failed: 0,
            oldest_pending: Some(at(5) + 3 * MS),
        }
    );
    // Being sent is still pending; given up is not.
    assert_eq!(
        claim(&stores, at(10), at(130), 1).await,
        claimed(&[&oldest], 1)
    );
    assert_eq!(outbox(&stores).await.pending, 3);
    failed(&stores, oldest.id, None, at(11)).await;
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 2,
            failed: 1,
            oldest_pending: Some(at(40)),
        }
    );
    stores.mail.mail_sent(newer.id).await.expect("mail_sent");
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 1,
            failed: 1,
            oldest_pending: Some(at(90)),
        }
    );
}

async fn sweep_mail_deletes_expired_tokens_old_failed_mails_and_stale_devices_only(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    let reset = TokenPurpose::PasswordReset;
    // Tokens: expired before `now`, at `now`, and after it.
    let past = mail_token(alice.id, reset, 1, at(0), at(99));
    let edge = mail_token(alice.id, reset, 2, at(0), at(100));
    let live = mail_token(alice.id, reset, 3, at(0), at(100) + MS);
    let mut token_mails = Vec::new();
    for t in [&past, &edge, &live] {
        token_mails.push(issue(&stores, t).await.id);
    }
    // Mails given up on before the cut-off, at it and after it; one waiting
    // for a retry; the three tokens' mails, pending.
    let old_failure = outbox_mail("a@example.com", at(0));
    let edge_failure = outbox_mail("b@example.com", at(0));
    let new_failure = outbox_mail("c@example.com", at(0));
    let retrying = outbox_mail("d@example.com", at(0));
    enqueue(
        &stores,
        &[
            old_failure.clone(),
            edge_failure.clone(),
            new_failure.clone(),
            retrying.clone(),
        ],
    )
    .await;
    assert_eq!(claim(&stores, at(0), at(120), 100).await.len(), 7);
    failed(&stores, old_failure.id, None, at(149)).await;
    failed(&stores, edge_failure.id, None, at(150)).await;
    failed(&stores, new_failure.id, None, at(151)).await;
    failed(&stores, retrying.id, Some(at(5000)), at(1)).await;
    // Devices last seen before the cut-off, at it and after it.
    assert_eq!(
        device(&stores, alice.id, 1, at(10)).await,
        DeviceSeen::First
    );
    assert_eq!(device(&stores, alice.id, 2, at(300)).await, DeviceSeen::New);
    assert_eq!(device(&stores, bob.id, 1, at(20)).await, DeviceSeen::First);
    assert_eq!(device(&stores, bob.id, 3, at(200)).await, DeviceSeen::New);
    // Seen again later: judged by its last sighting.
    assert_eq!(device(&stores, bob.id, 3, at(301)).await, DeviceSeen::Known);
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 4,
            failed: 3,
            oldest_pending: Some(at(0)),
        }
    );

    let swept = stores
        .mail
        .sweep_mail(at(100), at(150), at(300))
        .await
        .expect("sweep_mail");
    assert_eq!(swept, 2 + 1 + 2, "two tokens, one mail, two devices");
    assert_eq!(stored_token(&stores, past.hash).await, None);
    assert_eq!(stored_token(&stores, edge.hash).await, None);
    assert_eq!(stored_token(&stores, live.hash).await, Some(live));
    assert_eq!(
        outbox(&stores).await,
        OutboxStats {
            pending: 4,
            failed: 2,
            oldest_pending: Some(at(0)),
        },
        "only the failure before the cut-off"
    );
    let again = stores.mail.sweep_mail(at(100), at(150), at(300)).await;
    assert_eq!(again.expect("sweep_mail"), 0);
    // The pending mails stay: the retried one and the tokens' (their lease
    // passed), the expired tokens' too (only the token goes).
    let due: Vec<_> = token_mails.iter().map(|id| (*id, 2)).collect();
    assert_eq!(
        attempts(&claim(&stores, at(5000), at(5100), 100).await),
        sorted([due, vec![(retrying.id, 2)]].concat())
    );
    // Devices: alice's first one is forgotten (her second is known), bob's
    // first one too, bob's third is known.
    assert_eq!(device(&stores, alice.id, 1, at(400)).await, DeviceSeen::New);
    assert_eq!(
        device(&stores, alice.id, 2, at(401)).await,
        DeviceSeen::Known
    );
    assert_eq!(device(&stores, bob.id, 3, at(402)).await, DeviceSeen::Known);
    assert_eq!(device(&stores, bob.id, 1, at(403)).await, DeviceSeen::New);
}

async fn remember_device_tells_a_first_known_and_new_device_per_user(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    let bob = create(&stores, "bob@example.com", &[]).await;
    assert_eq!(device(&stores, alice.id, 1, at(0)).await, DeviceSeen::First);
    assert_eq!(
        device(&stores, alice.id, 1, at(10)).await,
        DeviceSeen::Known
    );
    assert_eq!(device(&stores, alice.id, 2, at(20)).await, DeviceSeen::New);
    assert_eq!(
        device(&stores, alice.id, 2, at(30)).await,
        DeviceSeen::Known
    );
    assert_eq!(
        device(&stores, alice.id, 1, at(40)).await,
        DeviceSeen::Known
    );
    // Per user: alice's device is bob's first.
    assert_eq!(device(&stores, bob.id, 1, at(50)).await, DeviceSeen::First);
    assert_eq!(device(&stores, bob.id, 3, at(60)).await, DeviceSeen::New);
    assert_eq!(device(&stores, bob.id, 1, at(70)).await, DeviceSeen::Known);
    assert_eq!(device(&stores, alice.id, 3, at(80)).await, DeviceSeen::New);
    // A sighting earlier than the last one (clocks of two nodes) is still
    // the known device.
    assert_eq!(
        device(&stores, alice.id, 3, at(79)).await,
        DeviceSeen::Known
    );
}

/// Two sign-ins from one device within the same millisecond (two tabs,
/// a form sent twice, a frozen test clock): the second is a known device.
async fn a_device_seen_again_at_the_same_instant_is_known(stores: Stores) {
    let alice = create(&stores, "alice@example.com", &[]).await;
    assert_eq!(device(&stores, alice.id, 1, at(0)).await, DeviceSeen::First);
    assert_eq!(device(&stores, alice.id, 2, at(10)).await, DeviceSeen::New);
    assert_eq!(
        device(&stores, alice.id, 2, at(10)).await,
        DeviceSeen::Known,
        "the device recorded a moment ago"
    );
    assert_eq!(
        device(&stores, alice.id, 1, at(20)).await,
        DeviceSeen::Known
    );
}

async fn append_writes_events_and_their_mails_together_or_neither(stores: Stores) {
    let alice = UserId::new();
    let e1 = audit(EventType::PasswordChanged, 10).user(alice);
    let e2 = audit(EventType::Logout, 11).user(alice);
    let notice = outbox_mail("alice@example.com", at(10));
    stores
        .audit
        .append(&[e1.clone(), e2.clone()], std::slice::from_ref(&notice))
        .await
        .expect("append");
    assert_eq!(read(&stores, query(10)).await, vec![e2.clone(), e1.clone()]);
    assert_eq!(
        claim(&stores, at(10), at(130), 10).await,
        claimed(&[&notice], 1)
    );

    // One event with one notice (not the one-statement path) is written whole.
    let e3 = audit(EventType::PasswordChanged, 20).user(alice);
    let second = outbox_mail("alice@example.com", at(20));
    stores
        .audit
        .append(std::slice::from_ref(&e3), std::slice::from_ref(&second))
        .await
        .expect("append");
    assert_eq!(
        claim(&stores, at(20), at(140), 10).await,
        claimed(&[&second], 1)
    );

    // A mail whose id is taken: the whole append fails, no event stored and
    // no other mail written.
    let before = outbox(&stores).await;
    let e4 = audit(EventType::PasswordChanged, 30).user(alice);
    let fresh = outbox_mail("alice@example.com", at(30));
    let duplicate = OutboxMail {
        created_at: at(30),
        ..notice.clone()
    };
    let refused = stores
        .audit
        .append(std::slice::from_ref(&e4), &[fresh.clone(), duplicate])
        .await;
    assert!(refused.is_err(), "a duplicate mail id fails the append");
    // An event whose id is taken, likewise, with its mails.
    let refused = stores
        .audit
        .append(std::slice::from_ref(&e1), std::slice::from_ref(&fresh))
        .await;
    assert!(refused.is_err(), "a duplicate event id fails the append");
    assert_eq!(
        read(&stores, query(10)).await,
        vec![e3, e2, e1],
        "no event of a failed append"
    );
    assert_eq!(outbox(&stores).await, before, "no mail of a failed append");
    assert!(
        claim(&stores, at(1000), at(1100), 10)
            .await
            .iter()
            .all(|m| m.mail.id != fresh.id)
    );
}

/// Gives a mail up; returns its id (its row is then read raw).
async fn give_up_a_mail(stores: &Stores) -> Uuid {
    let mail = outbox_mail("gone@example.com", at(0));
    enqueue(stores, std::slice::from_ref(&mail)).await;
    assert_eq!(
        claim(stores, at(0), at(120), 10).await,
        claimed(&[&mail], 1)
    );
    failed(stores, mail.id, None, at(5)).await;
    assert!(claim(stores, at(DAY), at(2 * DAY), 10).await.is_empty());
    mail.id
}

// A mail given up on keeps its row (for the metrics, until swept) but not
// its bodies, which may hold a live link: read from the tables themselves,
// since no store method returns them.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_mail_given_up_on_keeps_no_bodies() {
    let (stores, dir) = sqlite().await;
    let id = give_up_a_mail(&stores).await;
    let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("the file");
    let row: (Option<String>, Option<String>, Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT text_body, html_body, failed_at, last_error FROM outbox WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .expect("the row");
    pool.close().await;
    assert_eq!(
        row,
        (
            None,
            None,
            Some(at(5).unix_timestamp() * 1000),
            Some("451 4.3.0 try again later".to_owned())
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_mail_given_up_on_keeps_no_bodies() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let (stores, db) = postgres().await;
    let id = give_up_a_mail(&stores).await;
    let pool = sqlx::PgPool::connect(&db.url())
        .await
        .expect("the database");
    let row: (
        Option<String>,
        Option<String>,
        Option<OffsetDateTime>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT text_body, html_body, failed_at, last_error FROM outbox WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("the row");
    pool.close().await;
    assert_eq!(
        row,
        (
            None,
            None,
            Some(at(5)),
            Some("451 4.3.0 try again later".to_owned())
        )
    );
}

// ---------------------------------------------------------------------------
// OpenID clients
// ---------------------------------------------------------------------------

fn client_record(name: &str, roles: &[&str]) -> gatehouse::store::ClientRecord {
    use gatehouse::model::oidc::{ClientType, GrantType, IdTokenAlg};
    let id = gatehouse::auth::types::ClientId::new();
    // Secret hashes are unique: each client's own.
    let mut hash = [7; 32];
    hash[..16].copy_from_slice(id.0.as_bytes());
    gatehouse::store::ClientRecord {
        id,
        name: name.to_owned(),
        kind: ClientType::Confidential,
        secret_hash: Some(SecretHash(hash)),
        redirect_uris: strings(&["https://b.example/cb", "https://a.example/cb"]),
        post_logout_redirect_uris: strings(&["https://a.example/bye"]),
        first_party: true,
        grant_types: vec![GrantType::ClientCredentials, GrantType::AuthorizationCode],
        scopes: strings(&["openid", "email"]),
        roles: strings(roles),
        id_token_alg: IdTokenAlg::EdDsa,
        created_at: at(1) + 123 * MS,
        revision: 0,
    }
}

async fn stored_client(
    stores: &Stores,
    id: gatehouse::auth::types::ClientId,
) -> Option<gatehouse::store::ClientRecord> {
    stores.clients.client(id).await.expect("client")
}

async fn clients_read_back_whole_and_list_oldest_first(stores: Stores) {
    use gatehouse::model::oidc::ClientType;
    put_role(&stores, "b-role", &["x:read"]).await;
    put_role(&stores, "a-role", &["x:write"]).await;
    let first = client_record("First", &["a-role", "b-role"]);
    stores.clients.create_client(&first).await.expect("create");
    let mut public = client_record("Second", &[]);
    public.kind = ClientType::Public;
    public.secret_hash = None;
    public.post_logout_redirect_uris.clear();
    stores.clients.create_client(&public).await.expect("create");
    assert_eq!(
        stored_client(&stores, first.id).await.as_ref(),
        Some(&first)
    );
    assert_eq!(
        stored_client(&stores, public.id).await.as_ref(),
        Some(&public)
    );
    let all = stores.clients.clients().await.expect("clients");
    assert_eq!(all, [first.clone(), public]);
    assert_eq!(
        stored_client(&stores, gatehouse::auth::types::ClientId::new()).await,
        None
    );
    assert_eq!(
        stores
            .clients
            .delete_client(first.id)
            .await
            .expect("delete"),
        Some(gatehouse::store::DeletedClient {
            name: "First".to_owned(),
            secret_hash: first.secret_hash,
        })
    );
    assert_eq!(
        stores
            .clients
            .delete_client(first.id)
            .await
            .expect("delete"),
        None
    );
    assert_eq!(stored_client(&stores, first.id).await, None);
}

async fn an_unknown_client_role_writes_nothing(stores: Stores) {
    use gatehouse::store::ClientWriteError;
    put_role(&stores, "known", &[]).await;
    let client = client_record("Roles", &["known", "unknown"]);
    let err = stores.clients.create_client(&client).await;
    assert!(
        matches!(&err, Err(ClientWriteError::UnknownRole(r)) if r == "unknown"),
        "{err:?}"
    );
    assert_eq!(stored_client(&stores, client.id).await, None);
    assert!(stores.clients.clients().await.expect("clients").is_empty());
}

async fn client_updates_are_compare_and_swap(stores: Stores) {
    use gatehouse::model::oidc::IdTokenAlg;
    use gatehouse::store::{ClientUpdate, ClientWriteError};
    put_role(&stores, "one", &[]).await;
    put_role(&stores, "two", &[]).await;
    let original = client_record("Before", &["one"]);
    stores
        .clients
        .create_client(&original)
        .await
        .expect("create");

    let mut changed = original.clone();
    changed.name = "After".into();
    changed.redirect_uris = strings(&["com.example.app:/cb"]);
    changed.post_logout_redirect_uris.clear();
    changed.first_party = false;
    changed.scopes = strings(&["openid"]);
    changed.roles = strings(&["two"]);
    changed.id_token_alg = IdTokenAlg::Es256;
    // What the update may not touch is kept whatever the record says; the
    // secret hash is written (a rotation).
    changed.secret_hash = Some(SecretHash([9; 32]));
    changed.created_at = at(99);
    assert_eq!(
        stores
            .clients
            .update_client(&changed)
            .await
            .expect("update"),
        ClientUpdate::Updated
    );
    let read = stored_client(&stores, original.id)
        .await
        .expect("the client");
    assert_eq!(read.revision, 1);
    assert_eq!(
        read,
        gatehouse::store::ClientRecord {
            created_at: original.created_at,
            revision: 1,
            ..changed.clone()
        }
    );

    // Written over revision 0 again: stale, nothing written.
    let mut late = original.clone();
    late.name = "Lost".into();
    assert_eq!(
        stores.clients.update_client(&late).await.expect("update"),
        ClientUpdate::Stale
    );
    assert_eq!(
        stored_client(&stores, original.id).await.as_ref(),
        Some(&read)
    );

    // An unknown role: an error, and nothing written.
    let mut bad = read.clone();
    bad.name = "Bad".into();
    bad.roles = strings(&["one", "ghost"]);
    let err = stores.clients.update_client(&bad).await;
    assert!(
        matches!(&err, Err(ClientWriteError::UnknownRole(r)) if r == "ghost"),
        "{err:?}"
    );
    assert_eq!(
        stored_client(&stores, original.id).await.as_ref(),
        Some(&read)
    );

    let mut gone = client_record("Gone", &[]);
    gone.id = gatehouse::auth::types::ClientId::new();
    assert_eq!(
        stores.clients.update_client(&gone).await.expect("update"),
        ClientUpdate::Missing
    );
}

async fn a_deleted_role_leaves_every_client(stores: Stores) {
    put_role(&stores, "kept", &[]).await;
    put_role(&stores, "doomed", &[]).await;
    let a = client_record("A", &["doomed", "kept"]);
    let b = client_record("B", &["doomed"]);
    stores.clients.create_client(&a).await.expect("create");
    stores.clients.create_client(&b).await.expect("create");
    assert!(
        stores
            .users
            .delete_role(&role("doomed"))
            .await
            .expect("delete")
    );
    let roles = |c: Option<gatehouse::store::ClientRecord>| c.expect("the client").roles;
    assert_eq!(roles(stored_client(&stores, a.id).await), ["kept"]);
    assert!(roles(stored_client(&stores, b.id).await).is_empty());
    // Created again, it is no one's.
    put_role(&stores, "doomed", &[]).await;
    assert!(roles(stored_client(&stores, b.id).await).is_empty());
}

/// A rotation writes the new secret hash over the revision read; the
/// permissions of a client's roles read back deduplicated and sorted, and
/// follow a role's change.
async fn client_secrets_rotate_and_permissions_follow_roles(stores: Stores) {
    put_role(&stores, "reports", &["reports:write", "reports:read"]).await;
    put_role(&stores, "audit", &["reports:read", "audit:read"]).await;
    let c = client_record("Service", &["reports", "audit"]);
    stores.clients.create_client(&c).await.expect("create");
    assert_eq!(
        stores.clients.client_permissions(c.id).await.expect("read"),
        strings(&["audit:read", "reports:read", "reports:write"])
    );
    assert!(
        stores
            .clients
            .client_permissions(gatehouse::auth::types::ClientId::new())
            .await
            .expect("read")
            .is_empty()
    );
    put_role(&stores, "audit", &["audit:export"]).await;
    assert_eq!(
        stores.clients.client_permissions(c.id).await.expect("read"),
        strings(&["audit:export", "reports:read", "reports:write"])
    );
    let rotated = gatehouse::store::ClientRecord {
        secret_hash: Some(SecretHash([9; 32])),
        ..c.clone()
    };
    assert_eq!(
        stores
            .clients
            .update_client(&rotated)
            .await
            .expect("update"),
        store::ClientUpdate::Updated
    );
    let read = stored_client(&stores, c.id).await.expect("stored");
    assert_eq!(read.secret_hash, Some(SecretHash([9; 32])));
    assert_eq!(read.revision, 1);
    // A second rotation over the revision the first one read loses.
    let stale = gatehouse::store::ClientRecord {
        secret_hash: Some(SecretHash([8; 32])),
        ..c.clone()
    };
    assert_eq!(
        stores.clients.update_client(&stale).await.expect("update"),
        store::ClientUpdate::Stale
    );
    assert_eq!(
        stored_client(&stores, c.id)
            .await
            .expect("stored")
            .secret_hash,
        Some(SecretHash([9; 32]))
    );
    // The deletion says which secret went with it.
    let gone = stores
        .clients
        .delete_client(c.id)
        .await
        .expect("delete")
        .expect("there was one");
    assert_eq!(gone.secret_hash, Some(SecretHash([9; 32])));
}

contract! {
    client_secrets_rotate_and_permissions_follow_roles
        => sqlite_client_secrets_rotate_and_permissions_follow_roles,
           postgres_client_secrets_rotate_and_permissions_follow_roles;
}

/// A retired client credential is recorded like an ended session: in the
/// revocations in force, numbered in the log, a later record kept, swept
/// when its time has passed.
async fn a_credential_is_revoked_like_a_session(stores: Stores) {
    let credential = gatehouse::model::types::CredentialId::of(&SecretHash([5; 32]));
    let key = credential.revocation_key();
    let now = at(100);
    stores
        .sessions
        .revoke_credential(credential, at(200))
        .await
        .expect("revoke");
    stores
        .sessions
        .revoke_credential(credential, at(150))
        .await
        .expect("revoke again, earlier");
    let in_force = stores.sessions.revocations(now).await.expect("read");
    assert!(in_force.contains(&(key, at(200))), "{in_force:?}");
    let log = stores
        .sessions
        .revocation_log(None, now, 100)
        .await
        .expect("log");
    assert!(
        log.entries.iter().any(|e| e.session_id == key),
        "{:?}",
        log.entries
    );
    stores
        .sessions
        .delete_expired(at(201), Duration::from_secs(3600))
        .await
        .expect("sweep");
    let later = stores.sessions.revocations(at(201)).await.expect("read");
    assert!(!later.iter().any(|(id, _)| *id == key), "{later:?}");
}

contract! {
    a_credential_is_revoked_like_a_session
        => sqlite_a_credential_is_revoked_like_a_session,
           postgres_a_credential_is_revoked_like_a_session;
}

redis_contract! {
    a_credential_is_revoked_like_a_session => redis_a_credential_is_revoked_like_a_session;
}

contract! {
    clients_read_back_whole_and_list_oldest_first
        => sqlite_clients_read_back_whole_and_list_oldest_first,
           postgres_clients_read_back_whole_and_list_oldest_first;
    an_unknown_client_role_writes_nothing
        => sqlite_clients_an_unknown_role_writes_nothing,
           postgres_clients_an_unknown_role_writes_nothing;
    client_updates_are_compare_and_swap
        => sqlite_clients_updates_are_compare_and_swap,
           postgres_clients_updates_are_compare_and_swap;
    a_deleted_role_leaves_every_client
        => sqlite_clients_a_deleted_role_leaves_every_client,
           postgres_clients_a_deleted_role_leaves_every_client;
}

// ------------------------------------------- client sessions, codes, consents

/// A client session of `user`, inside `parent`.
fn client_session(
    user: UserId,
    parent: SessionId,
    client: gatehouse::auth::types::ClientId,
    created_at: OffsetDateTime,
) -> SessionRecord {
    SessionRecord {
        link: Some(store::SessionLink {
            client_id: client,
            parent_id: parent,
            scopes: "openid email offline_access".to_owned(),
        }),
        ..session(user, 9, created_at)
    }
}

async fn a_client_session_keeps_its_link(stores: Stores) {
    let user = create(&stores, "linked@example.com", &[]).await;
    let browser = session(user.id, 1, at(10));
    insert(&stores, &browser).await;
    let client = gatehouse::auth::types::ClientId::new();
    let child = client_session(user.id, browser.id, client, at(11));
    insert(&stores, &child).await;
    assert_eq!(session_by_id(&stores, child.id).await, Some(child.clone()));
    assert_eq!(
        session_by_id(&stores, browser.id).await,
        Some(browser.clone())
    );
    assert_eq!(sessions_of(&stores, user.id).await, vec![browser, child]);
}

/// A user and a registered client, for the codes' and consents' keys.
async fn user_and_client(
    stores: &Stores,
    address: &str,
) -> (UserRecord, gatehouse::store::ClientRecord) {
    let user = create(stores, address, &[]).await;
    let client = client_record("Flow", &[]);
    stores.clients.create_client(&client).await.expect("create");
    (user, client)
}

fn code_record(
    user: &UserRecord,
    client: &gatehouse::store::ClientRecord,
    created_at: OffsetDateTime,
) -> store::AuthorizationCode {
    store::AuthorizationCode {
        client_id: client.id,
        user_id: user.id,
        parent_id: SessionId::new(),
        redirect_uri: "https://a.example/cb".to_owned(),
        scopes: "openid email".to_owned(),
        nonce: Some("n-1".to_owned()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
        auth_time: created_at - Duration::from_secs(30),
        amr: Amr::PASSWORD_OTP,
        created_at,
        expires_at: created_at + Duration::from_secs(60),
    }
}

async fn codes_are_spent_once_and_name_their_session(stores: Stores) {
    let (user, client) = user_and_client(&stores, "codes@example.com").await;
    let code = code_record(&user, &client, at(100));
    let hash = SecretHash([7; 32]);
    stores
        .grants
        .insert_code(&hash, &code)
        .await
        .expect("insert");
    // Eight exchanges at once: one spends it, the others see its session.
    let barrier = Arc::new(Barrier::new(8));
    let mut tries = JoinSet::new();
    for _ in 0..8 {
        let (stores, barrier) = (stores.clone(), barrier.clone());
        tries.spawn(async move {
            let sid = SessionId::new();
            barrier.wait().await;
            (
                sid,
                stores
                    .grants
                    .spend_code(&SecretHash([7; 32]), at(110), sid)
                    .await
                    .expect("spend"),
            )
        });
    }
    let results = tries.join_all().await;
    let winners: Vec<SessionId> = results
        .iter()
        .filter_map(|(sid, r)| matches!(r, store::CodeSpend::Spent(_)).then_some(*sid))
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, r) in &results {
        match r {
            store::CodeSpend::Spent(c) => assert_eq!(c, &code, "read back whole"),
            store::CodeSpend::Replayed {
                code: c,
                session_id,
            } => {
                assert_eq!(c, &code);
                assert_eq!(*session_id, Some(winners[0]));
            }
            store::CodeSpend::Unknown => panic!("a stored code is never unknown here"),
        }
    }
    // The losers marked it replayed; a code spent once is not.
    assert!(stores.grants.code_replayed(&hash).await.expect("read"));
    stores
        .grants
        .insert_code(&SecretHash([6; 32]), &code)
        .await
        .expect("insert");
    let once = stores
        .grants
        .spend_code(&SecretHash([6; 32]), at(110), SessionId::new())
        .await
        .expect("spend");
    assert!(matches!(once, store::CodeSpend::Spent(_)));
    assert!(
        !stores
            .grants
            .code_replayed(&SecretHash([6; 32]))
            .await
            .expect("read")
    );
    assert!(
        !stores
            .grants
            .code_replayed(&SecretHash([5; 32]))
            .await
            .expect("read")
    );
    // After its expiry a spent code is still a replay; an unspent one is
    // unknown; an unknown hash too.
    let late = code_record(&user, &client, at(100));
    stores
        .grants
        .insert_code(&SecretHash([8; 32]), &late)
        .await
        .expect("insert");
    let spend = |hash: SecretHash, when| {
        let stores = stores.clone();
        async move {
            stores
                .grants
                .spend_code(&hash, when, SessionId::new())
                .await
                .expect("spend")
        }
    };
    assert_eq!(
        spend(SecretHash([8; 32]), at(160)).await,
        store::CodeSpend::Unknown,
        "expires_at is exclusive"
    );
    assert!(matches!(
        spend(SecretHash([7; 32]), at(600)).await,
        store::CodeSpend::Replayed { .. }
    ));
    assert_eq!(
        spend(SecretHash([9; 32]), at(110)).await,
        store::CodeSpend::Unknown
    );
    // The sweep deletes what expired before its bound only.
    assert_eq!(
        stores
            .grants
            .delete_codes_expired_before(at(160))
            .await
            .expect("sweep"),
        0
    );
    assert_eq!(
        stores
            .grants
            .delete_codes_expired_before(at(161))
            .await
            .expect("sweep"),
        3
    );
    assert_eq!(
        spend(SecretHash([7; 32]), at(600)).await,
        store::CodeSpend::Unknown
    );
}

async fn client_grants_are_taken_once_and_swept(stores: Stores) {
    let (user, client) = user_and_client(&stores, "grants@example.com").await;
    let other = gatehouse::auth::types::ClientId::new();
    let (a, b, c) = (SessionId::new(), SessionId::new(), SessionId::new());
    let g = &stores.grants;
    g.record_grant(a, client.id, user.id, at(100))
        .await
        .expect("record");
    g.record_grant(b, client.id, user.id, at(300))
        .await
        .expect("record");
    g.record_grant(c, other, user.id, at(300))
        .await
        .expect("record");
    // The sweep takes what expired before its bound.
    assert_eq!(
        g.delete_codes_expired_before(at(101)).await.expect("sweep"),
        1
    );
    assert_eq!(
        g.take_grants_of(client.id).await.expect("take"),
        vec![(user.id, b)]
    );
    assert!(
        g.take_grants_of(client.id).await.expect("take").is_empty(),
        "taken once"
    );
    assert_eq!(
        g.take_grants_of(other).await.expect("take"),
        vec![(user.id, c)]
    );
}

async fn consents_are_replaced_listed_and_deleted(stores: Stores) {
    let (user, client) = user_and_client(&stores, "consents@example.com").await;
    let other = client_record("Other", &[]);
    stores.clients.create_client(&other).await.expect("create");
    let g = &stores.grants;
    assert_eq!(g.consent(user.id, client.id).await.expect("read"), None);
    g.put_consent(user.id, client.id, "openid", at(5))
        .await
        .expect("put");
    g.put_consent(user.id, client.id, "openid email", at(6))
        .await
        .expect("put");
    g.put_consent(user.id, other.id, "openid", at(7))
        .await
        .expect("put");
    let first = g
        .consent(user.id, client.id)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(
        (first.scopes.as_str(), first.granted_at),
        ("openid email", at(6))
    );
    let all = g.consents_of(user.id).await.expect("list");
    assert_eq!(
        all.iter().map(|c| c.client_id).collect::<Vec<_>>(),
        vec![client.id, other.id]
    );
    assert!(g.delete_consent(user.id, client.id).await.expect("delete"));
    assert!(!g.delete_consent(user.id, client.id).await.expect("delete"));
    // A deleted client takes its consents with it.
    stores
        .clients
        .delete_client(other.id)
        .await
        .expect("delete client");
    assert!(g.consents_of(user.id).await.expect("list").is_empty());
}

contract! {
    a_client_session_keeps_its_link
        => sqlite_a_client_session_keeps_its_link, postgres_a_client_session_keeps_its_link;
    codes_are_spent_once_and_name_their_session
        => sqlite_codes_are_spent_once_and_name_their_session,
           postgres_codes_are_spent_once_and_name_their_session;
    consents_are_replaced_listed_and_deleted
        => sqlite_consents_are_replaced_listed_and_deleted,
           postgres_consents_are_replaced_listed_and_deleted;
    client_grants_are_taken_once_and_swept
        => sqlite_client_grants_are_taken_once_and_swept,
           postgres_client_grants_are_taken_once_and_swept;
}

redis_contract! {
    a_client_session_keeps_its_link => redis_a_client_session_keeps_its_link;
}
