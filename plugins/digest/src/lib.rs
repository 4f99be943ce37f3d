//! The queue example: every new item is pushed to `digest.outbox` from
//! `tap_item_insert` (through the host's `queue_push`), the queue is
//! declared by `tap_queue_info` (worked by cron for up to 5 s a pass, two
//! jobs at a time, and by `trovato queue work`), and `tap_queue_worker`
//! delivers each entry.
//!
//! It also offers a batch operation, `digest.requeue` (`tap_batch_info`):
//! each chunk of item ids (`tap_batch_chunk`) pushes their entries again.
//!
//! Delivery here is a log line. A job can also ask for the other verdicts,
//! to show them: `"retry": true` in its payload fails it for a retry a
//! second later, `"poison": true` fails it on every attempt (so it ends in
//! the dead letter list), and `"reject": true` fails it for good at once.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trovato_plugin_sdk::{Json, info, queue, taps, warn};

/// The queue this plugin owns.
pub const OUTBOX: &str = "digest.outbox";

/// The part of a new item the digest keeps.
#[derive(Debug, Deserialize)]
pub struct Item {
    pub id: String,
    #[serde(default)]
    pub title: String,
}

/// One digest entry: the job's payload.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub item: String,
    pub title: String,
}

/// `tap_item_insert`: queue the new item's entry.
pub fn item_insert(item: Item) -> Result<(), queue::PushError> {
    let entry = Entry {
        item: item.id,
        title: item.title,
    };
    queue::push(OUTBOX, &entry)
}

/// `tap_queue_info`: the queues this plugin works.
pub fn queue_info(_: Value) -> Value {
    json!([{ "name": OUTBOX, "cron_secs": 5, "concurrency": 2 }])
}

/// What `tap_queue_worker` receives.
#[derive(Debug, Deserialize)]
pub struct Job {
    pub queue: String,
    pub id: String,
    pub attempt: u32,
    pub payload: Value,
}

/// What `tap_queue_worker` answers: ack, retry or fail.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Verdict {
    Ack,
    Retry { delay_secs: u64, error: String },
    Fail { error: String },
}

/// `tap_queue_worker`: deliver one entry.
pub fn queue_worker(job: Job) -> Json<Verdict> {
    let flag = |name: &str| job.payload.get(name).and_then(Value::as_bool) == Some(true);
    let verdict = if flag("reject") {
        Verdict::Fail {
            error: "rejected".into(),
        }
    } else if flag("poison") {
        Verdict::Retry {
            delay_secs: 0,
            error: format!("poison entry (attempt {})", job.attempt),
        }
    } else if flag("retry") && job.attempt == 1 {
        Verdict::Retry {
            delay_secs: 1,
            error: "asked for one retry".into(),
        }
    } else {
        let title = job
            .payload
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("");
        if job.attempt > 1 {
            warn!(
                "digest: delivering job {} on attempt {}",
                job.id, job.attempt
            );
        }
        info!("digest: delivered {} ({title})", job.id);
        Verdict::Ack
    };
    Json(verdict)
}

/// `tap_batch_info`: the batch operations this plugin offers.
pub fn batch_info(_: Value) -> Value {
    json!([{
        "name": "digest.requeue",
        "description": "Queue the digest entries of the listed items again",
        "chunk_size": 50,
    }])
}

/// What `tap_batch_chunk` receives.
#[derive(Debug, Deserialize)]
pub struct Chunk {
    pub operation: String,
    #[serde(default)]
    pub params: Value,
    pub targets: Vec<String>,
}

/// One target that failed.
#[derive(Debug, Serialize, PartialEq)]
pub struct Failed {
    pub target: String,
    pub error: String,
}

/// `tap_batch_chunk`: push each listed item's entry again; an empty id
/// fails (to show per-target failures).
pub fn batch_chunk(chunk: Chunk) -> Json<Value> {
    let mut failed = Vec::new();
    for target in chunk.targets {
        if target.is_empty() {
            failed.push(Failed {
                target,
                error: "an empty item id".into(),
            });
            continue;
        }
        let entry = Entry {
            item: target.clone(),
            title: String::new(),
        };
        if let Err(e) = queue::push(OUTBOX, &entry) {
            failed.push(Failed {
                target,
                error: e.to_string(),
            });
        }
    }
    Json(json!({ "failed": failed }))
}

taps! {
    tap_item_insert => item_insert,
    tap_queue_info => queue_info,
    tap_queue_worker => queue_worker,
    tap_batch_info => batch_info,
    tap_batch_chunk => batch_chunk,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(payload: Value, attempt: u32) -> Job {
        Job {
            queue: OUTBOX.into(),
            id: "j1".into(),
            attempt,
            payload,
        }
    }

    #[test]
    fn verdicts_follow_the_payload() {
        assert_eq!(queue_worker(job(json!({"title": "t"}), 1)).0, Verdict::Ack);
        assert!(matches!(
            queue_worker(job(json!({"poison": true}), 7)).0,
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            queue_worker(job(json!({"retry": true}), 1)).0,
            Verdict::Retry { delay_secs: 1, .. }
        ));
        assert_eq!(queue_worker(job(json!({"retry": true}), 2)).0, Verdict::Ack);
        assert!(matches!(
            queue_worker(job(json!({"reject": true}), 1)).0,
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn the_queue_is_declared_in_the_plugins_namespace() {
        let info = queue_info(Value::Null);
        assert_eq!(info[0]["name"], OUTBOX);
        assert!(OUTBOX.starts_with("digest."));
    }
}
