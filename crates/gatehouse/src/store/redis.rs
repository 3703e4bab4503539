//! Sessions, refresh tokens, revocations and login-attempt counters on Redis,
//! for the "many nodes" deployment (users, roles and keys stay in
//! PostgreSQL).
//!
//! # Key layout
//!
//! Every key and the pub/sub channel start with the configured prefix `P`
//! (`redis_key_prefix`, default `gatehouse:`), so tests and tenants can share
//! one Redis. Instants are integer milliseconds since the Unix epoch; secret
//! hashes and sealed successors are raw bytes (also inside key names, which
//! Redis treats as binary strings).
//!
//! | key | type | contents | expires (PEXPIREAT) |
//! |---|---|---|---|
//! | `P s:{sid}` | hash | `u` user id, `h` secret hash, `c` created, `l` last seen, `e` expires, `a` user agent, `i` IP (these two only when known), `m` the RFC 8176 `amr` values, space-separated (absent on sessions stored before it was recorded: `pwd`); on a client session `k` client id, `p` parent session id, `o` granted scopes | the session's `expires_at` |
//! | `P sh:{secret hash}` | string | the session id | the session's `expires_at` |
//! | `P sr:{sid}` | set | hashes of the session's refresh tokens | the session's `expires_at` |
//! | `P r:{token hash}` | hash | `s` session id, `c` created, `t` spent, `x` sealed successor (the last two once spent) | the session's `expires_at` |
//! | `P u:{user id}` | sorted set | the user's session ids, scored by creation | the latest `expires_at` of its sessions |
//! | `P exp` | sorted set | every session id, scored by `expires_at` (for `delete_expired`) | the latest `expires_at` |
//! | `P seen` | sorted set | every session id, scored by `last_seen_at` (for `delete_expired`) | the latest `expires_at` |
//! | `P revoked` | sorted set | ended session ids, scored by `revoke_until` | the latest `revoke_until` |
//! | `P revlog` | sorted set | the same ids, scored by their number in the revocation log | the latest `revoke_until` |
//! | `P revseq` | string | the last number the log gave | the latest `revoke_until` |
//! | `P revepoch` | string | the name of the log's numbering (it starts anew when the three log keys expired, or Redis lost them) | the latest `revoke_until` |
//! | `P f:{key}` | string | the attempt count of the key's window | the window's close |
//!
//! (Written here with a space after `P`; the keys have none.) Index entries of
//! sessions that Redis expired by TTL are pruned lazily: `sessions_of` prunes
//! the user's index, `delete_expired` the two global ones.
//!
//! Channel `P revocations`: every script that ends sessions publishes one
//! message per ended session, `"{sid} {revoke_until_ms}"` (the `until` in
//! force, the later one when the session was already revoked), for nodes to
//! feed their in-memory revocation sets (`fanout.rs`).
//!
//! # Atomicity
//!
//! Every write that touches more than one key is a Lua script, so Redis runs
//! it as one step. The scripts build key names from the prefix, so this store
//! needs a standalone Redis (or a primary with replicas), not Redis Cluster.
//! Redis 7.0 or later is required (`PEXPIRETIME`, `PEXPIREAT … GT`).
//!
//! # Clocks
//!
//! The instants the domain passes in are judged against each other (a window
//! closes when the caller's `now` reaches it, a revocation is in force while
//! `now < revoke_until`); Redis's own clock only applies the TTLs, so the
//! nodes' clocks and Redis's should agree to within seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::health::Health;
use super::{
    Attempt, FailureCounter, LoggedRevocation, RefreshRecord, RevocationLog, SessionLink,
    SessionRecord, SessionStore,
};
use crate::clock::{from_millis, to_millis};
use crate::model::amr::Amr;
use crate::model::types::{ClientId, CredentialId, SecretHash, SessionId, UserId};

/// How many expired or idle sessions one `delete_expired` call deletes at
/// most (from each of the two indexes), so that a backlog never blocks Redis
/// for long; the next sweep takes the rest.
const SWEEP_LIMIT: u32 = 1000;

/// Lua helpers shared by the scripts. `P` is the key prefix (ARGV[1] of every
/// script).
const LUA_PRELUDE: &str = r"
local P = ARGV[1]

-- Sets the key's expiry to `at` unless it already expires later.
local function extend(key, at)
  if redis.call('PEXPIRETIME', key) == -1 then
    redis.call('PEXPIREAT', key, at)
  else
    redis.call('PEXPIREAT', key, at, 'GT')
  end
end

-- Deletes the session `sid` of user `uid` with its secret index, its refresh
-- tokens and its index entries.
local function drop_session(sid, uid)
  local skey = P .. 's:' .. sid
  local hash = redis.call('HGET', skey, 'h')
  if hash then
    redis.call('DEL', P .. 'sh:' .. hash)
  end
  local rkey = P .. 'sr:' .. sid
  for _, token in ipairs(redis.call('SMEMBERS', rkey)) do
    redis.call('DEL', P .. 'r:' .. token)
  end
  redis.call('DEL', skey, rkey)
  if uid then
    redis.call('ZREM', P .. 'u:' .. uid, sid)
  end
  redis.call('ZREM', P .. 'exp', sid)
  redis.call('ZREM', P .. 'seen', sid)
end

-- Records `sid` as revoked until `until_ms` (keeping a later record),
-- numbers it in the revocation log (a log that expired starts a new epoch,
-- named `epoch`), and publishes it with the `until` in force on the
-- revocation channel. The log's keys expire with its last record.
local function revoke(sid, until_ms, epoch)
  local key = P .. 'revoked'
  redis.call('ZADD', key, 'GT', until_ms, sid)
  extend(key, until_ms)
  local in_force = redis.call('ZSCORE', key, sid) or until_ms
  if redis.call('SET', P .. 'revepoch', epoch, 'NX') then
    redis.call('DEL', P .. 'revseq', P .. 'revlog')
  end
  local seq = redis.call('INCR', P .. 'revseq')
  redis.call('ZADD', P .. 'revlog', seq, sid)
  extend(P .. 'revepoch', in_force)
  extend(P .. 'revseq', in_force)
  extend(P .. 'revlog', in_force)
  redis.call('PUBLISH', P .. 'revocations', sid .. ' ' .. in_force)
end
";

/// ARGV: P, sid, user id, secret hash, created, last seen, expires,
/// user agent or "", has user agent ("1"/"0"), ip or "", has ip, amr,
/// and for a client session: client id, parent session id, scopes (all
/// three, or none).
const INSERT_SESSION: &str = r"
local sid, uid, e = ARGV[2], ARGV[3], ARGV[7]
local skey = P .. 's:' .. sid
if redis.call('EXISTS', skey) == 1 then
  return redis.error_reply('a session with this id exists')
end
redis.call('HSET', skey, 'u', uid, 'h', ARGV[4], 'c', ARGV[5], 'l', ARGV[6], 'e', e)
if ARGV[9] == '1' then redis.call('HSET', skey, 'a', ARGV[8]) end
if ARGV[11] == '1' then redis.call('HSET', skey, 'i', ARGV[10]) end
redis.call('HSET', skey, 'm', ARGV[12])
if ARGV[13] then redis.call('HSET', skey, 'k', ARGV[13], 'p', ARGV[14], 'o', ARGV[15]) end
redis.call('PEXPIREAT', skey, e)
local hkey = P .. 'sh:' .. ARGV[4]
redis.call('SET', hkey, sid)
redis.call('PEXPIREAT', hkey, e)
local ukey = P .. 'u:' .. uid
redis.call('ZADD', ukey, ARGV[5], sid)
extend(ukey, e)
redis.call('ZADD', P .. 'exp', e, sid)
extend(P .. 'exp', e)
redis.call('ZADD', P .. 'seen', ARGV[6], sid)
extend(P .. 'seen', e)
return 1
";

/// ARGV: P, sid, last seen.
const TOUCH_SESSION: &str = r"
local skey = P .. 's:' .. ARGV[2]
local current = redis.call('HGET', skey, 'l')
if current and tonumber(ARGV[3]) > tonumber(current) then
  redis.call('HSET', skey, 'l', ARGV[3])
  redis.call('ZADD', P .. 'seen', 'GT', ARGV[3], ARGV[2])
end
return 0
";

/// ARGV: P, sid, user id, revoke until, epoch if the log starts anew.
/// Returns 1 when the session was ended.
const DELETE_SESSION: &str = r"
local sid, uid = ARGV[2], ARGV[3]
if redis.call('HGET', P .. 's:' .. sid, 'u') ~= uid then
  return 0
end
drop_session(sid, uid)
revoke(sid, ARGV[4], ARGV[5])
return 1
";

/// ARGV: P, credential id, revoke until, epoch if the log starts anew.
const REVOKE_CREDENTIAL: &str = r"
revoke(ARGV[2], ARGV[3], ARGV[4])
return 1
";

/// ARGV: P, user id, kept sid or "", revoke until, epoch if the log starts
/// anew. Returns the ended ids.
const DELETE_SESSIONS_OF: &str = r"
local uid, keep = ARGV[2], ARGV[3]
local ukey = P .. 'u:' .. uid
local ended = {}
for _, sid in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  if sid ~= keep then
    if redis.call('HGET', P .. 's:' .. sid, 'u') == uid then
      drop_session(sid, uid)
      revoke(sid, ARGV[4], ARGV[5])
      ended[#ended + 1] = sid
    else
      redis.call('ZREM', ukey, sid)
    end
  end
end
return ended
";

/// ARGV: P, now, idle cutoff (now - idle), limit. Returns how many sessions
/// it deleted.
const DELETE_EXPIRED: &str = r"
local limit = tonumber(ARGV[4])
local candidates = {}
for _, sid in ipairs(redis.call('ZRANGE', P .. 'exp', '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, limit)) do
  candidates[sid] = true
end
for _, sid in ipairs(redis.call('ZRANGE', P .. 'seen', '-inf', ARGV[3], 'BYSCORE', 'LIMIT', 0, limit)) do
  candidates[sid] = true
end
local deleted = 0
for sid, _ in pairs(candidates) do
  local uid = redis.call('HGET', P .. 's:' .. sid, 'u')
  if uid then
    deleted = deleted + 1
  end
  drop_session(sid, uid)
end
local gone = redis.call('ZRANGE', P .. 'revoked', '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, limit)
for _, sid in ipairs(gone) do
  redis.call('ZREM', P .. 'revoked', sid)
  redis.call('ZREM', P .. 'revlog', sid)
end
return deleted
";

/// ARGV: P, after (-1: from the start), now, limit. Returns {epoch,
/// last seq, upto, sid1, until1, seq1, sid2, ...}: the records in force
/// numbered after `after`, in order, at most `limit`.
const REVOCATION_LOG: &str = r"
local after, now, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = redis.call('GET', P .. 'revepoch') or ''
local last = tonumber(redis.call('GET', P .. 'revseq') or '0')
local out = {epoch, tostring(last), ''}
local found, upto, from = 0, last, '(' .. after
while true do
  local chunk = redis.call('ZRANGE', P .. 'revlog', from, last, 'BYSCORE', 'LIMIT', 0, 500, 'WITHSCORES')
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    local sid, seq = chunk[i], chunk[i + 1]
    local until_ms = redis.call('ZSCORE', P .. 'revoked', sid)
    if until_ms and tonumber(until_ms) > now then
      out[#out + 1] = sid
      out[#out + 1] = until_ms
      out[#out + 1] = seq
      found = found + 1
      if found >= limit then
        upto = tonumber(seq)
        out[3] = tostring(upto)
        return out
      end
    end
    from = '(' .. seq
  end
end
out[3] = tostring(upto)
return out
";

/// ARGV: P, token hash, sid, created.
const INSERT_REFRESH: &str = r"
local hash, sid = ARGV[2], ARGV[3]
local e = redis.call('HGET', P .. 's:' .. sid, 'e')
if not e then
  return redis.error_reply('no such session')
end
local rkey = P .. 'r:' .. hash
if redis.call('EXISTS', rkey) == 1 then
  return redis.error_reply('a refresh token with this hash exists')
end
redis.call('HSET', rkey, 's', sid, 'c', ARGV[4])
redis.call('PEXPIREAT', rkey, e)
local skey = P .. 'sr:' .. sid
redis.call('SADD', skey, hash)
redis.call('PEXPIREAT', skey, e)
return 1
";

/// ARGV: P, old hash, spent at, successor hash, sealed successor, sid.
/// Returns 1 when this call spent the token.
const ROTATE_REFRESH: &str = r"
local old, spent, successor, sealed, sid = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local okey = P .. 'r:' .. old
if redis.call('HGET', okey, 's') ~= sid or redis.call('HEXISTS', okey, 't') == 1 then
  return 0
end
local e = redis.call('HGET', P .. 's:' .. sid, 'e')
if not e then
  return 0
end
local nkey = P .. 'r:' .. successor
if redis.call('EXISTS', nkey) == 1 then
  return redis.error_reply('a refresh token with the successor hash exists')
end
redis.call('HSET', okey, 't', spent, 'x', sealed)
redis.call('HSET', nkey, 's', sid, 'c', spent)
redis.call('PEXPIREAT', nkey, e)
local skey = P .. 'sr:' .. sid
redis.call('SADD', skey, successor)
redis.call('PEXPIREAT', skey, e)
return 1
";

/// KEYS: the counter. ARGV: P, now, the window's close if it opens now,
/// window length. Returns {count, ms left}.
const HIT: &str = r"
local key = KEYS[1]
local now = tonumber(ARGV[2])
local closes = redis.call('PEXPIRETIME', key)
if closes < 0 or closes <= now then
  redis.call('DEL', key)
  redis.call('INCR', key)
  redis.call('PEXPIREAT', key, ARGV[3])
  return {1, tonumber(ARGV[4])}
end
return {redis.call('INCR', key), closes - now}
";

/// KEYS: the counter. ARGV: P, now. Takes one attempt back from a window
/// open at `now`; the last one goes with the key.
const FORGIVE: &str = r"
local key = KEYS[1]
local closes = redis.call('PEXPIRETIME', key)
if closes < 0 or closes <= tonumber(ARGV[2]) then
  return 0
end
if tonumber(redis.call('GET', key) or '0') > 1 then
  redis.call('DECR', key)
else
  redis.call('DEL', key)
end
return 1
";

/// Longest a Redis command (or a connection attempt) may take: Redis
/// answers in well under a millisecond, the sweep script in a few, so a
/// command this late means Redis is hung or unreachable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// The store's link to Redis: the connection every operation uses, and what
/// a probe needs to replace it.
///
/// A connection whose commands time out is replaced, never trusted again: on
/// a black-holed path (packets dropped, no reset) the socket stays open, and
/// the connection manager, which reconnects only when a socket fails, would
/// send every later command into the same void. Once the path heals, the old
/// socket may take minutes of TCP retransmission backoff to carry anything.
struct Link {
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    current: std::sync::RwLock<ConnectionManager>,
}

impl Link {
    /// The connection in use.
    fn current(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A new connection that answered a PING.
    async fn connect(&self) -> Result<ConnectionManager, RedisError> {
        let mut con =
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await?;
        redis::cmd("PING").query_async::<String>(&mut con).await?;
        Ok(con)
    }

    /// Connects anew and, once Redis answers there, puts the new connection
    /// in place of the old.
    async fn replace(&self) -> Result<(), RedisError> {
        let fresh = self.connect().await?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// The store's connection for one operation: while [`Health`] says Redis is
/// down every command fails at once (no reconnection attempt, no timeout to
/// wait out); a command that fails as a lost connection would marks it down
/// and starts the probe, which connects anew and marks it up again once the
/// new connection answers.
struct Guarded {
    con: ConnectionManager,
    link: Arc<Link>,
    health: Arc<Health>,
}

/// The error of a command refused because Redis is known down: an I/O error,
/// as the failure that found it down was.
fn known_down() -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "Redis is unreachable (a background probe is reconnecting)",
    ))
}

/// Whether the error says the connection, not the command, failed.
fn is_connection_failure(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl Guarded {
    fn observe<T>(&self, result: &Result<T, RedisError>) {
        if let Err(e) = result
            && is_connection_failure(e)
        {
            let link = Arc::clone(&self.link);
            self.health.mark_down(e, move || {
                let link = Arc::clone(&link);
                async move { link.replace().await }
            });
        }
    }
}

impl ConnectionLike for Guarded {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            if self.health.down_since().is_some() {
                return Err(known_down());
            }
            let result = self.con.req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if self.health.down_since().is_some() {
                return Err(known_down());
            }
            let result = self.con.req_packed_commands(pipeline, offset, count).await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }
}

/// The pub/sub channel of the deployment whose keys start with `prefix`
/// (what every node's feed follows).
pub fn revocation_channel(prefix: &str) -> String {
    format!("{prefix}revocations")
}

/// The revocation channel's other message: users or roles changed on some
/// node (published by [`SessionStore::announce_principals_changed`]), so
/// every node retires the principals it cached.
pub const PRINCIPALS_CHANGED: &str = "principals";

/// One message of the revocation channel, as the scripts publish it:
/// `"{session id} {revoke_until, ms since the epoch}"`; `None` for anything
/// else.
pub fn parse_revocation(payload: &str) -> Option<(SessionId, OffsetDateTime)> {
    let (sid, until) = payload.split_once(' ')?;
    Some((SessionId::parse(sid)?, from_millis(until.parse().ok()?)))
}

/// The Redis backend of [`SessionStore`] and [`FailureCounter`].
///
/// Contract: as the traits', with these specifics. Every key expires by
/// itself (PEXPIREAT): a session, its secret index and its refresh tokens at
/// the session's `expires_at`, a revocation record at its `revoke_until`, an
/// attempt window at its close. Every method that ends sessions also
/// publishes each ended session on [`RedisStore::revocation_channel`]. The
/// connection reconnects by itself; while Redis is unreachable every call
/// returns `Err`: without waiting once an operation has found it
/// unreachable, within [`COMMAND_TIMEOUT`] for that first operation.
#[derive(Clone)]
pub struct RedisStore {
    link: Arc<Link>,
    health: Arc<Health>,
    prefix: String,
    scripts: Arc<Scripts>,
}

struct Scripts {
    insert_session: Script,
    touch_session: Script,
    delete_session: Script,
    revoke_credential: Script,
    delete_sessions_of: Script,
    delete_expired: Script,
    insert_refresh: Script,
    rotate_refresh: Script,
    hit: Script,
    forgive: Script,
    revocation_log: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Self {
            insert_session: with_prelude(INSERT_SESSION),
            touch_session: with_prelude(TOUCH_SESSION),
            delete_session: with_prelude(DELETE_SESSION),
            revoke_credential: with_prelude(REVOKE_CREDENTIAL),
            delete_sessions_of: with_prelude(DELETE_SESSIONS_OF),
            delete_expired: with_prelude(DELETE_EXPIRED),
            insert_refresh: with_prelude(INSERT_REFRESH),
            rotate_refresh: with_prelude(ROTATE_REFRESH),
            hit: with_prelude(HIT),
            forgive: with_prelude(FORGIVE),
            revocation_log: with_prelude(REVOCATION_LOG),
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`) with an auto-reconnecting
    /// connection; every key and channel this store uses starts with
    /// `prefix`.
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached now.
    pub async fn open(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("parsing the Redis URL")?;
        // Each command is bounded by the response timeout, so a hung Redis
        // (SIGSTOP, a black-holed link) costs the one request that finds it
        // hung at most that long; from then on `Health` fails commands at
        // once and only its probe waits on Redis.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50));
        let con = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .context("connecting to Redis")?;
        let link = Link {
            client,
            config,
            current: std::sync::RwLock::new(con),
        };
        let mut con = link.current();
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .context("pinging Redis")?;
        Ok(Self {
            link: Arc::new(link),
            health: Health::new("redis"),
            prefix: prefix.to_owned(),
            scripts: Arc::new(Scripts::new()),
        })
    }

    /// The pub/sub channel on which every ended session is published, as
    /// `"{session id} {revoke_until in ms}"`.
    pub fn revocation_channel(&self) -> String {
        revocation_channel(&self.prefix)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// When this node found Redis unreachable, while it is.
    pub fn down_since(&self) -> Option<OffsetDateTime> {
        self.health.down_since()
    }

    /// A connection for one operation, which fails at once while Redis is
    /// known down.
    fn con(&self) -> Guarded {
        Guarded {
            con: self.link.current(),
            link: Arc::clone(&self.link),
            health: Arc::clone(&self.health),
        }
    }

    fn key(&self, kind: &str, id: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + kind.len() + id.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(kind.as_bytes());
        key.extend_from_slice(id);
        key
    }

    async fn session_by_key(&self, sid: &str) -> anyhow::Result<Option<SessionRecord>> {
        let mut con = self.con();
        let fields: HashMap<String, Vec<u8>> = con
            .hgetall(self.key("s:", sid.as_bytes()))
            .await
            .context("reading a session from Redis")?;
        if fields.is_empty() {
            return Ok(None);
        }
        session_from_fields(sid, &fields).map(Some)
    }
}

/// A fresh name for the revocation log's numbering, used only if the log
/// has to start anew.
fn new_epoch() -> String {
    Uuid::now_v7().simple().to_string()
}

fn field<'a>(fields: &'a HashMap<String, Vec<u8>>, name: &str) -> anyhow::Result<&'a [u8]> {
    fields
        .get(name)
        .map(Vec::as_slice)
        .with_context(|| format!("a stored record lacks its {name:?} field"))
}

fn text(bytes: &[u8]) -> anyhow::Result<&str> {
    std::str::from_utf8(bytes).context("a stored field is not UTF-8")
}

fn millis(bytes: &[u8]) -> anyhow::Result<OffsetDateTime> {
    let s = text(bytes)?;
    let ms: i64 = s
        .parse()
        .with_context(|| format!("a stored instant is not an integer: {s:?}"))?;
    Ok(from_millis(ms))
}

fn uuid(bytes: &[u8]) -> anyhow::Result<Uuid> {
    let s = text(bytes)?;
    Uuid::try_parse(s).with_context(|| format!("a stored id is not a UUID: {s:?}"))
}

fn hash32(bytes: &[u8]) -> anyhow::Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored hash is not 32 bytes"))
}

fn session_from_fields(
    sid: &str,
    fields: &HashMap<String, Vec<u8>>,
) -> anyhow::Result<SessionRecord> {
    let optional = |name: &str| -> anyhow::Result<Option<String>> {
        fields
            .get(name)
            .map(|v| text(v).map(str::to_owned))
            .transpose()
    };
    Ok(SessionRecord {
        id: SessionId(uuid(sid.as_bytes())?),
        user_id: UserId(uuid(field(fields, "u")?)?),
        secret_hash: SecretHash(hash32(field(fields, "h")?)?),
        created_at: millis(field(fields, "c")?)?,
        last_seen_at: millis(field(fields, "l")?)?,
        expires_at: millis(field(fields, "e")?)?,
        user_agent: optional("a")?,
        ip: optional("i")?,
        // Sessions stored before `amr` was recorded were password logins.
        amr: match fields.get("m") {
            None => Amr::PASSWORD,
            Some(m) => Amr::parse_text(text(m)?)
                .map_err(|e| anyhow::anyhow!("a stored session's amr: {e}"))?,
        },
        link: match (optional("k")?, optional("p")?, optional("o")?) {
            (None, None, None) => None,
            (Some(client), Some(parent), Some(scopes)) => Some(SessionLink {
                client_id: ClientId(uuid(client.as_bytes())?),
                parent_id: SessionId(uuid(parent.as_bytes())?),
                scopes,
            }),
            _ => anyhow::bail!("a stored session has part of a client link"),
        },
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    /// Stores the session with its secret index and index entries, all
    /// expiring at `expires_at`.
    async fn reachable(&self) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .context("pinging Redis")?;
        Ok(())
    }

    async fn insert_session(&self, s: &SessionRecord) -> anyhow::Result<()> {
        let mut con = self.con();
        let mut invocation = self.scripts.insert_session.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(s.id.to_string())
            .arg(s.user_id.to_string())
            .arg(&s.secret_hash.0[..])
            .arg(to_millis(s.created_at))
            .arg(to_millis(s.last_seen_at))
            .arg(to_millis(s.expires_at))
            .arg(s.user_agent.as_deref().unwrap_or(""))
            .arg(if s.user_agent.is_some() { "1" } else { "0" })
            .arg(s.ip.as_deref().unwrap_or(""))
            .arg(if s.ip.is_some() { "1" } else { "0" })
            .arg(s.amr.to_text());
        if let Some(link) = &s.link {
            invocation
                .arg(link.client_id.to_string())
                .arg(link.parent_id.to_string())
                .arg(&link.scopes);
        }
        let _: i64 = invocation
            .invoke_async(&mut con)
            .await
            .context("inserting a session into Redis")?;
        Ok(())
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> anyhow::Result<Option<SessionRecord>> {
        let mut con = self.con();
        let sid: Option<String> = con
            .get(self.key("sh:", &hash.0))
            .await
            .context("looking a session secret up in Redis")?;
        let Some(sid) = sid else { return Ok(None) };
        let found = self.session_by_key(&sid).await?;
        // Deleted between the two reads: as if never found.
        Ok(found.filter(|s| s.secret_hash == *hash))
    }

    async fn session_by_id(&self, id: SessionId) -> anyhow::Result<Option<SessionRecord>> {
        self.session_by_key(&id.to_string()).await
    }

    /// Moves `last_seen_at` forward only (atomically); a no-op for an
    /// unknown id.
    async fn touch_session(
        &self,
        id: SessionId,
        last_seen_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: i64 = self
            .scripts
            .touch_session
            .arg(&self.prefix)
            .arg(id.to_string())
            .arg(to_millis(last_seen_at))
            .invoke_async(&mut con)
            .await
            .context("touching a session in Redis")?;
        Ok(())
    }

    /// From the index of absolute expiries (`{prefix}exp`), which every
    /// session enters at creation and leaves when it ends.
    async fn announce_principals_changed(&self) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: i64 = con
            .publish(self.revocation_channel(), PRINCIPALS_CHANGED)
            .await
            .context("announcing a change to users or roles on Redis")?;
        Ok(())
    }

    async fn count_sessions(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        let mut con = self.con();
        // The score is the absolute expiry in milliseconds; "(" excludes it.
        let n: u64 = con
            .zcount(self.key("exp", b""), format!("({}", to_millis(now)), "+inf")
            .await
            .context("counting sessions in Redis")?;
        Ok(n)
    }

    /// The user's sessions, oldest first (by `created_at`, then id); ids in
    /// the user's index whose session Redis has expired are pruned.
    async fn sessions_of(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        let mut con = self.con();
        let index = self.key("u:", user_id.to_string().as_bytes());
        let ids: Vec<String> = con
            .zrange(&index, 0, -1)
            .await
            .context("reading a user's session index from Redis")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &ids {
            pipe.hgetall(self.key("s:", sid.as_bytes()));
        }
        let rows: Vec<HashMap<String, Vec<u8>>> = pipe
            .query_async(&mut con)
            .await
            .context("reading a user's sessions from Redis")?;
        let mut sessions = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (sid, fields) in ids.iter().zip(&rows) {
            if fields.is_empty() {
                gone.push(sid.as_str());
                continue;
            }
            let s = session_from_fields(sid, fields)?;
            // An id left by a deleted session re-used by nobody else; only
            // the user's own sessions are listed.
            if s.user_id == user_id {
                sessions.push(s);
            }
        }
        if !gone.is_empty() {
            let _: i64 = con
                .zrem(&index, gone)
                .await
                .context("pruning a user's session index in Redis")?;
        }
        Ok(sessions)
    }

    /// Atomically (one script): ends the session only if it belongs to
    /// `user_id`, deleting it, its secret index, its refresh tokens and its
    /// index entries, records it as revoked until `revoke_until` (a later
    /// existing record is kept) and publishes it.
    async fn delete_session(
        &self,
        id: SessionId,
        user_id: UserId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut con = self.con();
        let ended: i64 = self
            .scripts
            .delete_session
            .arg(&self.prefix)
            .arg(id.to_string())
            .arg(user_id.to_string())
            .arg(to_millis(revoke_until))
            .arg(new_epoch())
            .invoke_async(&mut con)
            .await
            .context("deleting a session in Redis")?;
        Ok(ended == 1)
    }

    async fn revoke_credential(
        &self,
        id: CredentialId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: i64 = self
            .scripts
            .revoke_credential
            .arg(&self.prefix)
            .arg(id.to_string())
            .arg(to_millis(revoke_until))
            .arg(new_epoch())
            .invoke_async(&mut con)
            .await
            .context("revoking a client credential in Redis")?;
        Ok(())
    }

    /// As `delete_session` for every session in the user's index except
    /// `keep`, in one script (no SCAN); returns the ended ids.
    async fn delete_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionId>> {
        let mut con = self.con();
        let ended: Vec<String> = self
            .scripts
            .delete_sessions_of
            .arg(&self.prefix)
            .arg(user_id.to_string())
            .arg(keep.map(|k| k.to_string()).unwrap_or_default())
            .arg(to_millis(revoke_until))
            .arg(new_epoch())
            .invoke_async(&mut con)
            .await
            .context("deleting a user's sessions in Redis")?;
        ended
            .iter()
            .map(|sid| Ok(SessionId(uuid(sid.as_bytes())?)))
            .collect()
    }

    /// Deletes (up to [`SWEEP_LIMIT`] per index per call) the sessions past
    /// their absolute expiry or idle for `idle` as of `now`, and the
    /// revocation records no longer in force; returns the number of sessions
    /// it deleted. Sessions that Redis already expired by TTL are not
    /// counted (their index entries are removed), so in a deployment whose
    /// clock agrees with Redis's the count is mostly the idle ones.
    async fn delete_expired(&self, now: OffsetDateTime, idle: Duration) -> anyhow::Result<u64> {
        let mut con = self.con();
        let now_ms = to_millis(now);
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let deleted: u64 = self
            .scripts
            .delete_expired
            .arg(&self.prefix)
            .arg(now_ms)
            .arg(now_ms.saturating_sub(idle_ms))
            .arg(SWEEP_LIMIT)
            .invoke_async(&mut con)
            .await
            .context("sweeping expired sessions in Redis")?;
        Ok(deleted)
    }

    /// The revocation records with `revoke_until > now`.
    async fn revocations(
        &self,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<(SessionId, OffsetDateTime)>> {
        let mut con = self.con();
        let rows: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(self.key("revoked", b""))
            .arg(format!("({}", to_millis(now)))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await
            .context("reading revocations from Redis")?;
        rows.into_iter()
            .map(|(sid, until)| Ok((SessionId(uuid(sid.as_bytes())?), from_millis(until))))
            .collect()
    }

    /// One script, so the head and the records are read together. Records
    /// whose `until` has passed but are not swept yet are skipped.
    async fn revocation_log(
        &self,
        after: Option<u64>,
        now: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<RevocationLog> {
        let mut con = self.con();
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let reply: Vec<String> = self
            .scripts
            .revocation_log
            .arg(&self.prefix)
            .arg(after)
            .arg(to_millis(now))
            .arg(limit.max(1))
            .invoke_async(&mut con)
            .await
            .context("reading the revocation log from Redis")?;
        let number = |s: &str| -> anyhow::Result<u64> {
            s.parse::<u64>()
                .with_context(|| format!("a revocation log number is not an integer: {s:?}"))
        };
        let [epoch, last_seq, upto, rest @ ..] = reply.as_slice() else {
            anyhow::bail!("the revocation log script answered {} values", reply.len());
        };
        let entries = rest
            .chunks(3)
            .map(|c| match c {
                [sid, until, seq] => Ok(LoggedRevocation {
                    session_id: SessionId(uuid(sid.as_bytes())?),
                    until: from_millis(
                        until
                            .parse()
                            .with_context(|| format!("a revocation's until: {until:?}"))?,
                    ),
                    seq: number(seq)?,
                }),
                _ => anyhow::bail!("the revocation log script answered a partial record"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RevocationLog {
            epoch: epoch.clone(),
            last_seq: number(last_seq)?,
            upto: number(upto)?,
            entries,
        })
    }

    /// Stores an unspent token expiring with its session; `Err` when the
    /// session does not exist or the hash is taken.
    async fn insert_refresh(
        &self,
        hash: &SecretHash,
        session_id: SessionId,
        created_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: i64 = self
            .scripts
            .insert_refresh
            .arg(&self.prefix)
            .arg(&hash.0[..])
            .arg(session_id.to_string())
            .arg(to_millis(created_at))
            .invoke_async(&mut con)
            .await
            .context("inserting a refresh token into Redis")?;
        Ok(())
    }

    async fn refresh_by_hash(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRecord>> {
        let mut con = self.con();
        let fields: HashMap<String, Vec<u8>> = con
            .hgetall(self.key("r:", &hash.0))
            .await
            .context("reading a refresh token from Redis")?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(RefreshRecord {
            session_id: SessionId(uuid(field(&fields, "s")?)?),
            created_at: millis(field(&fields, "c")?)?,
            spent_at: fields.get("t").map(|t| millis(t)).transpose()?,
            successor_sealed: fields.get("x").cloned(),
        }))
    }

    /// Compare-and-swap in one script: spends `old` only if it is unspent
    /// and belongs to `session_id` (whose session still exists), and stores
    /// the successor created at `spent_at`, expiring with the session.
    async fn rotate_refresh(
        &self,
        old: &SecretHash,
        spent_at: OffsetDateTime,
        successor: &SecretHash,
        successor_sealed: &[u8],
        session_id: SessionId,
    ) -> anyhow::Result<bool> {
        let mut con = self.con();
        let won: i64 = self
            .scripts
            .rotate_refresh
            .arg(&self.prefix)
            .arg(&old.0[..])
            .arg(to_millis(spent_at))
            .arg(&successor.0[..])
            .arg(successor_sealed)
            .arg(session_id.to_string())
            .invoke_async(&mut con)
            .await
            .context("rotating a refresh token in Redis")?;
        Ok(won == 1)
    }
}

#[async_trait]
impl FailureCounter for RedisStore {
    /// One script: when the key's window has closed as of `now` (or never
    /// opened) it restarts at 1 and expires at `now + window`; otherwise
    /// INCR. Returns the count and the time left until the window closes.
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: OffsetDateTime,
    ) -> anyhow::Result<Attempt> {
        let mut con = self.con();
        let now_ms = to_millis(now);
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let (count, left_ms): (u32, u64) = self
            .scripts
            .hit
            .key(self.key("f:", key.as_bytes()))
            .arg(&self.prefix)
            .arg(now_ms)
            .arg(now_ms.saturating_add(window_ms))
            .arg(window_ms)
            .invoke_async(&mut con)
            .await
            .context("counting a login attempt in Redis")?;
        Ok(Attempt {
            count,
            window_left: Duration::from_millis(left_ms),
        })
    }

    /// Deletes the key's counter.
    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: i64 = con
            .del(self.key("f:", key.as_bytes()))
            .await
            .context("resetting a login-attempt counter in Redis")?;
        Ok(())
    }

    /// One script: DECR while the window is open and holds more than one
    /// attempt, DEL when it holds one.
    async fn forgive(&self, key: &str, now: OffsetDateTime) -> anyhow::Result<()> {
        let mut con = self.con();
        let _: i64 = self
            .scripts
            .forgive
            .key(self.key("f:", key.as_bytes()))
            .arg(&self.prefix)
            .arg(to_millis(now))
            .invoke_async(&mut con)
            .await
            .context("forgiving an attempt in Redis")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_messages_parse_and_garbage_is_refused() {
        let sid = SessionId::new();
        let (got, until) = parse_revocation(&format!("{sid} 1795445768000")).expect("parses");
        assert_eq!(got, sid);
        assert_eq!(until.unix_timestamp(), 1_795_445_768);
        for bad in [
            "",
            "x",
            "not-a-uuid 1",
            &format!("{sid}"),
            &format!("{sid} soon"),
        ] {
            assert!(parse_revocation(bad).is_none(), "{bad:?}");
        }
    }
}
