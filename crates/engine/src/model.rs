//! The rows of the store: runs, items, attempts, and what callers pass in to create them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

/// Status of an item. See docs/design.md for the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Not yet run (or waiting for inputs while `waiting_on > 0`).
    Pending,
    /// Held by a worker under a lease.
    Running,
    /// Done; never handed to a handler again.
    Completed,
    /// Failed an attempt; due again at `next_attempt_at`.
    Failed,
    /// Permanent error or attempts exhausted; only a person's retry revives it.
    Dead,
    /// An attempt died after starting an outside call and the stage parks such items.
    Unknown,
    /// Cancelled with its run.
    Cancelled,
}

impl ItemStatus {
    /// All statuses, in display order.
    pub const ALL: [ItemStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Dead,
        Self::Unknown,
        Self::Cancelled,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether no further work happens without a person (completed, dead, cancelled).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Dead | Self::Cancelled)
    }
}

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Items are still being worked on.
    Running,
    /// Every item completed.
    Completed,
    /// Every item is final and at least one is dead.
    Failed,
    /// Cancelled by a person.
    Cancelled,
}

impl RunStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// What is happening to a run that is still `running`, computed from leases and worker
/// heartbeats (the status alone cannot tell a busy run from one nobody serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunActivity {
    /// An item holds a live lease, or a live worker serves the run (or every run).
    Running,
    /// Work was done, but no live worker serves the run: it was stopped, killed or
    /// crashed. Rerun its `process` command, or start `idempipe worker`.
    Interrupted,
    /// Nothing was claimed yet and no live worker serves the run (submitted, waiting for
    /// a worker).
    Queued,
}

impl RunActivity {
    /// The name shown to people and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Queued => "queued",
        }
    }

    /// The activity of a running run from what the store found: a live lease on one of
    /// its items, a live worker serving it, and whether any item was ever claimed.
    pub fn from_facts(leased: bool, served: bool, started: bool) -> Self {
        match (leased || served, started) {
            (true, _) => Self::Running,
            (false, true) => Self::Interrupted,
            (false, false) => Self::Queued,
        }
    }
}

/// One pipeline applied to one input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Run id.
    pub id: i64,
    /// Pipeline name (which handlers apply).
    pub pipeline: String,
    /// Identity of input and settings; a rerun with the same fingerprint resumes this run.
    pub fingerprint: String,
    /// Human description of the input (a path).
    pub input: String,
    /// Pipeline parameters and metadata (JSON).
    pub params: Value,
    /// Current status.
    pub status: RunStatus,
    /// Whether the whole run is paused.
    pub paused: bool,
    /// Summary written by the pipeline (JSON), if any.
    pub summary: Option<Value>,
    /// Creation time.
    pub created_at: Millis,
    /// When the run became completed, failed or cancelled.
    pub finished_at: Option<Millis>,
}

/// One unit of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Item id.
    pub id: i64,
    /// Run it belongs to.
    pub run_id: i64,
    /// Stage name (selects the handler).
    pub stage: String,
    /// Key unique within run and stage.
    pub key: String,
    /// Group it belongs to, if any.
    pub group: Option<String>,
    /// Input of the handler.
    pub payload: Value,
    /// Current status.
    pub status: ItemStatus,
    /// Attempts started so far.
    pub attempts: i64,
    /// Inputs still missing before it can run.
    pub waiting_on: i64,
    /// When it is due (for pending and failed items).
    pub next_attempt_at: Millis,
    /// Worker holding or last holding it.
    pub worker: Option<String>,
    /// Lease expiry while running.
    pub lease_expires_at: Option<Millis>,
    /// Result of the completed attempt.
    pub result: Option<Value>,
    /// Error of the last failed attempt.
    pub last_error: Option<Value>,
    /// Creation time.
    pub created_at: Millis,
    /// Completion time.
    pub completed_at: Option<Millis>,
}

/// One try of one item, kept as history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// Item it belongs to.
    pub item_id: i64,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Worker that ran it.
    pub worker: Option<String>,
    /// Start (claim) time.
    pub started_at: Millis,
    /// End time (outcome recorded or lease found expired).
    pub ended_at: Millis,
    /// When the handler marked the start of an outside call, if it did.
    pub external_call_at: Option<Millis>,
    /// completed, failed, dead, unknown, rescued, released.
    pub outcome: String,
    /// Error detail (JSON) of a failed attempt.
    pub error: Option<Value>,
}

/// Something a new item waits for before it can run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dep {
    /// An item of the same run, by stage and key.
    Item {
        /// Stage of the input.
        stage: String,
        /// Key of the input.
        key: String,
    },
    /// Every item of a group of the same run.
    Group(String),
}

/// An item to create (at run creation, by enqueueing, or spawned by a handler).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewItem {
    /// Stage name.
    pub stage: String,
    /// Key unique within run and stage; inserting an existing key is a no-op.
    pub key: String,
    /// Handler input.
    pub payload: Value,
    /// Group to join.
    pub group: Option<String>,
    /// Inputs it waits for.
    pub deps: Vec<Dep>,
}

impl NewItem {
    /// An item of `stage` with `key` and `payload`, no group, no dependencies.
    pub fn new(stage: impl Into<String>, key: impl Into<String>, payload: Value) -> Self {
        Self {
            stage: stage.into(),
            key: key.into(),
            payload,
            group: None,
            deps: Vec::new(),
        }
    }

    /// Puts the item into `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Makes the item wait for the item `stage`/`key` of the same run.
    pub fn after_item(mut self, stage: impl Into<String>, key: impl Into<String>) -> Self {
        self.deps.push(Dep::Item {
            stage: stage.into(),
            key: key.into(),
        });
        self
    }

    /// Makes the item wait for every item of `group`.
    pub fn after_group(mut self, group: impl Into<String>) -> Self {
        self.deps.push(Dep::Group(group.into()));
        self
    }
}

/// Number of items of one stage in one status (`waiting` = pending with inputs missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCount {
    /// Stage name.
    pub stage: String,
    /// Status name, or `waiting`.
    pub status: String,
    /// Number of items.
    pub count: i64,
}

/// The stable idempotency key of an item, handed to handlers and sent to outside APIs.
pub fn idempotency_key(run_id: i64, stage: &str, key: &str) -> String {
    format!("idempipe:{run_id}:{stage}:{key}")
}
