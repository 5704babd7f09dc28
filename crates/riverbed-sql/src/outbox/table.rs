//! The outbox tables (messages, per-entity version counters, dead letters) and
//! [`Outbox::enqueue`], which the application calls inside its own transaction.

use riverbed_core::Headers;
use sqlx::{PgConnection, PgPool, Row};

use crate::ddl::create_serialized;
use crate::error::{Error, Result};
use crate::spec::Ident;

/// The longest outbox table name: `_dead_letters` must still fit PostgreSQL's 63 bytes.
const MAX_NAME: usize = 63 - "_dead_letters".len();

/// The names of one outbox: `<table>` (the messages), `<table>_versions` (one counter row per
/// entity), `<table>_dead_letters`; notifications go to the channel `<table>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTable {
    name: Ident,
}

impl OutboxTable {
    /// Checks `name` (letters, digits and `_`, at most 50 characters).
    pub fn new(name: &str) -> Result<Self> {
        let ident = Ident::new(name).map_err(|e| Error::Config(format!("`table`: {e}")))?;
        if name.len() > MAX_NAME {
            return Err(Error::Config(format!(
                "`table`: `{name}` is longer than {MAX_NAME} characters (the outbox adds \
                 `_versions` and `_dead_letters` tables)"
            )));
        }
        Ok(OutboxTable { name: ident })
    }

    /// The table name as written.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The messages table, quoted.
    pub fn messages(&self) -> String {
        self.name.quoted()
    }

    /// The per-entity version counters, quoted.
    pub fn versions(&self) -> String {
        format!("\"{}_versions\"", self.name)
    }

    /// The dead-letter table, quoted.
    pub fn dead_letters(&self) -> String {
        format!("\"{}_dead_letters\"", self.name)
    }

    /// The `LISTEN`/`NOTIFY` channel.
    pub fn channel(&self) -> &str {
        self.name.as_str()
    }

    /// The `CREATE ... IF NOT EXISTS` statements of the three tables and their indexes.
    pub fn ddl(&self) -> Vec<String> {
        let (t, n) = (self.messages(), self.name.as_str());
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                   id bigserial PRIMARY KEY,
                   entity text NOT NULL,
                   version bigint NOT NULL,
                   message_id text NOT NULL UNIQUE,
                   payload bytea NOT NULL,
                   headers jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                   created_at timestamptz NOT NULL DEFAULT now(),
                   sent_at timestamptz,
                   UNIQUE (entity, version))"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{n}_unsent\" ON {t} (entity, version) \
                 WHERE sent_at IS NULL"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{n}_sent\" ON {t} (sent_at) \
                 WHERE sent_at IS NOT NULL"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (entity text PRIMARY KEY, version bigint NOT NULL)",
                self.versions()
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                   id bigserial PRIMARY KEY,
                   outbox_id bigint NOT NULL,
                   entity text NOT NULL,
                   version bigint NOT NULL,
                   message_id text NOT NULL,
                   payload bytea NOT NULL,
                   headers jsonb NOT NULL,
                   reason text NOT NULL,
                   error text NOT NULL,
                   stage text NOT NULL,
                   attempts integer NOT NULL,
                   first_failure timestamptz NOT NULL,
                   last_failure timestamptz NOT NULL,
                   stored_at timestamptz NOT NULL DEFAULT now())",
                self.dead_letters()
            ),
        ]
    }

    /// Creates the tables if they do not exist (serialised between instances starting together).
    pub async fn create(&self, pool: &PgPool) -> Result<()> {
        for ddl in self.ddl() {
            create_serialized(pool, &ddl).await?;
        }
        Ok(())
    }
}

/// What [`Outbox::enqueue`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The row id (commit order is not id order: the relay never relies on it).
    pub id: i64,
    /// The entity's version: 1 for its first message, then one more per message, in the order
    /// the producing transactions commit.
    pub version: i64,
    /// The message id (the broker's message id, `Nats-Msg-Id`), unique in the outbox.
    pub message_id: String,
}

/// The application side of the outbox: writes messages in the caller's transaction, so they
/// are published if and only if the transaction commits.
#[derive(Debug, Clone)]
pub struct Outbox {
    table: OutboxTable,
    version_field: Option<String>,
    notify: bool,
    bump_sql: String,
    insert_sql: String,
}

impl Outbox {
    /// The outbox stored in `table` (see [`OutboxTable`]; create it with [`OutboxTable::create`]
    /// or the relay's `create_table`).
    pub fn new(table: &str) -> Result<Self> {
        let table = OutboxTable::new(table)?;
        let bump_sql = format!(
            "INSERT INTO {v} (entity, version) VALUES ($1, 1) \
             ON CONFLICT (entity) DO UPDATE SET version = {v}.version + 1 RETURNING version",
            v = table.versions()
        );
        let insert_sql = format!(
            "INSERT INTO {} (entity, version, message_id, payload, headers) \
             VALUES ($1, $2, COALESCE($3, gen_random_uuid()::text), $4, $5::jsonb) \
             RETURNING id, message_id",
            table.messages()
        );
        Ok(Outbox {
            table,
            version_field: None,
            notify: true,
            bump_sql,
            insert_sql,
        })
    }

    /// The tables of this outbox.
    pub fn table(&self) -> &OutboxTable {
        &self.table
    }

    /// Writes the assigned version into this top-level field of every JSON object payload
    /// given to [`Outbox::enqueue`], so consumers that read the version from the body (a
    /// versioned upsert) get the one the outbox assigned. Off by default: the version always
    /// travels in the `riverbed-version` header.
    pub fn with_version_field(mut self, field: &str) -> Self {
        self.version_field = Some(field.to_owned());
        self
    }

    /// Whether enqueueing sends a `NOTIFY` at commit (default true: relays wake at once).
    /// Without, relays find new rows at their next poll; many concurrent producers commit
    /// faster without, since PostgreSQL serialises the commits of notifying transactions.
    pub fn with_notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// Adds a JSON message about `entity` (its key: per-entity order and version) to the outbox
    /// in the caller's transaction (`&mut *tx`). The entity's counter row stays locked until
    /// the transaction ends, so concurrent producers of one entity get consecutive versions in
    /// commit order. A JSON object gets the version in its `with_version_field` field.
    pub async fn enqueue(
        &self,
        tx: &mut PgConnection,
        entity: &str,
        payload: &serde_json::Value,
    ) -> Result<Enqueued> {
        self.enqueue_with(tx, entity, payload, &Headers::new(), None)
            .await
    }

    /// [`Outbox::enqueue`] with headers and, if given, the message id (else a random UUID).
    pub async fn enqueue_with(
        &self,
        tx: &mut PgConnection,
        entity: &str,
        payload: &serde_json::Value,
        headers: &Headers,
        message_id: Option<&str>,
    ) -> Result<Enqueued> {
        let version = self.next_version(tx, entity).await?;
        let mut payload = payload.clone();
        if let (Some(field), Some(obj)) = (&self.version_field, payload.as_object_mut()) {
            obj.insert(field.clone(), version.into());
        }
        let bytes = serde_json::to_vec(&payload).map_err(|e| Error::Config(e.to_string()))?;
        self.insert(tx, entity, version, &bytes, headers, message_id)
            .await
    }

    /// Adds a message with raw bytes as its payload (no version field is written into it).
    pub async fn enqueue_bytes(
        &self,
        tx: &mut PgConnection,
        entity: &str,
        payload: &[u8],
        headers: &Headers,
        message_id: Option<&str>,
    ) -> Result<Enqueued> {
        let version = self.next_version(tx, entity).await?;
        self.insert(tx, entity, version, payload, headers, message_id)
            .await
    }

    async fn next_version(&self, tx: &mut PgConnection, entity: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar(sqlx::AssertSqlSafe(self.bump_sql.as_str()))
                .bind(entity)
                .fetch_one(&mut *tx)
                .await?,
        )
    }

    async fn insert(
        &self,
        tx: &mut PgConnection,
        entity: &str,
        version: i64,
        payload: &[u8],
        headers: &Headers,
        message_id: Option<&str>,
    ) -> Result<Enqueued> {
        let headers = serde_json::to_string(headers).map_err(|e| Error::Config(e.to_string()))?;
        let row = sqlx::query(sqlx::AssertSqlSafe(self.insert_sql.as_str()))
            .bind(entity)
            .bind(version)
            .bind(message_id)
            .bind(payload)
            .bind(headers)
            .fetch_one(&mut *tx)
            .await?;
        if self.notify {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(self.table.channel())
                .execute(&mut *tx)
                .await?;
        }
        Ok(Enqueued {
            id: row.try_get(0)?,
            version,
            message_id: row.try_get(1)?,
        })
    }
}
