//! The archive on MongoDB: collection `events`, unique indexes on `eventId` and on
//! `(aggregateId, version)`, and a counter document for the global position (`_id`).
//!
//! Verified against the MongoDB wire server of the test setup (nx-27017), which runs
//! standalone; see docs/backends.md for what that does and does not prove.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use sagaflow_domain::Envelope;
use sagaflow_runtime::config::redact;
use sagaflow_runtime::event_log::StoreError;

use super::{Archive, Archived};

#[derive(Debug, Clone)]
pub struct MongoArchive {
    db: Database,
    events: Collection<Document>,
    counters: Collection<Document>,
}

fn unavailable(e: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(redact(&e.to_string()))
}

/// An integer field, whichever BSON width the server stored it with.
/// The document an archived event is, at its global position.
fn document(event: &Envelope, position: i64) -> Document {
    doc! {
        "_id": position,
        "eventId": &event.event_id,
        "aggregateId": &event.aggregate_id,
        "aggregateType": &event.aggregate_type,
        "eventType": &event.event_type,
        "version": i64::try_from(event.metadata.version).unwrap_or(i64::MAX),
        "envelope": event.to_json(),
        "archivedAt": mongodb::bson::DateTime::now(),
    }
}

fn int(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        mongodb::bson::Bson::Int64(n) => Some(*n),
        mongodb::bson::Bson::Int32(n) => Some(i64::from(*n)),
        mongodb::bson::Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn decode(d: &Document) -> Result<(u64, Envelope), StoreError> {
    let position = int(d, "_id")
        .ok_or_else(|| StoreError::Corrupt("an archived event without a position".into()))?;
    let text = d
        .get_str("envelope")
        .map_err(|e| StoreError::Corrupt(format!("an archived event without its envelope: {e}")))?;
    let env =
        Envelope::from_slice(text.as_bytes()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((u64::try_from(position).unwrap_or(0), env))
}

/// The database a `mongodb://host/DATABASE?…` URL names, else `event_store`.
pub fn database_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| path.split('?').next().unwrap_or(""))
        .filter(|db| !db.is_empty())
        .unwrap_or("event_store")
        .to_owned()
}

impl MongoArchive {
    /// Connects to `url` and uses `database`, creating the indexes when needed.
    pub async fn open(url: &str, database: &str) -> Result<Self, StoreError> {
        let client = Client::with_uri_str(url).await.map_err(|e| {
            StoreError::Unavailable(format!("MONGODB_URL: {}", redact(&e.to_string())))
        })?;
        let db = client.database(database);
        let events = db.collection::<Document>("events");
        let counters = db.collection::<Document>("counters");
        db.run_command(doc! {"ping": 1})
            .await
            .map_err(unavailable)?;
        events
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"eventId": 1})
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await
            .map_err(unavailable)?;
        events
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"aggregateId": 1, "version": 1})
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await
            .map_err(unavailable)?;
        Ok(Self {
            db,
            events,
            counters,
        })
    }
}

#[async_trait]
impl Archive for MongoArchive {
    async fn append(&self, event: &Envelope) -> Result<bool, StoreError> {
        self.append_all(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("no answer from the archive".into())))
    }

    /// A batch (or one event) in two round trips whatever its size: one counter increment for
    /// the positions, one unordered insert. An event archived already is refused by the unique
    /// index on its id; each refused insert is then told apart by one lookup of its id (there:
    /// archived already; not there: its version is taken by another event), and its position
    /// stays unused: the global order may skip a position, never repeat one. (Looking the ids
    /// up first cost a third round trip per batch, and on the test setup's MongoDB wire server
    /// a `$in` reads the whole collection.)
    async fn append_all(&self, events: &[Envelope]) -> Vec<Result<bool, StoreError>> {
        // Each event once: a second copy in the batch is a duplicate of the first.
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<usize> = (0..events.len())
            .filter(|&i| seen.insert(events[i].event_id.as_str()))
            .collect();
        let mut results: Vec<Result<bool, StoreError>> =
            (0..events.len()).map(|_| Ok(false)).collect();
        if fresh.is_empty() {
            return results;
        }
        let n = i64::try_from(fresh.len()).unwrap_or(i64::MAX);
        let last = match self
            .counters
            .find_one_and_update(doc! {"_id": "events"}, doc! {"$inc": {"seq": n}})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
        {
            Ok(Some(counter)) => match int(&counter, "seq") {
                Some(last) => last,
                None => {
                    let e = StoreError::Corrupt("the position counter is not a number".into());
                    return sagaflow_runtime::event_log::failed_all(events.len(), &e);
                }
            },
            Ok(None) => {
                let e = StoreError::Unavailable("the position counter did not answer".into());
                return sagaflow_runtime::event_log::failed_all(events.len(), &e);
            }
            Err(e) => {
                return sagaflow_runtime::event_log::failed_all(events.len(), &unavailable(e));
            }
        };
        let documents: Vec<Document> = fresh
            .iter()
            .enumerate()
            .map(|(k, &i)| document(&events[i], last - n + 1 + i64::try_from(k).unwrap_or(0)))
            .collect();
        let refused: Vec<(usize, Option<String>)> = match self
            .events
            .insert_many(documents)
            .ordered(false)
            .await
        {
            Ok(_) => Vec::new(),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(many) if many.write_concern_error.is_none() => many
                    .write_errors
                    .iter()
                    .flatten()
                    .map(|w| (w.index, (w.code != 11000).then(|| w.message.clone())))
                    .collect(),
                // Nothing is known of what went in: the batch fails and comes again, and
                // what went in is then refused as a duplicate.
                _ => return sagaflow_runtime::event_log::failed_all(events.len(), &unavailable(e)),
            },
        };
        for &i in &fresh {
            results[i] = Ok(true);
        }
        for (k, other) in refused {
            let Some(&i) = fresh.get(k) else { continue };
            results[i] = match other {
                Some(message) => Err(StoreError::Unavailable(format!(
                    "archiving event {}: {message}",
                    events[i].event_id
                ))),
                None => match self
                    .events
                    .find_one(doc! {"eventId": &events[i].event_id})
                    .projection(doc! {"_id": 1})
                    .await
                {
                    Ok(Some(_)) => Ok(false),
                    Ok(None) => Err(super::version_taken(&events[i])),
                    Err(e) => Err(unavailable(e)),
                },
            };
        }
        results
    }

    /// One lookup on the `(aggregateId, version)` index.
    async fn has_version(&self, aggregate_id: &str, version: u64) -> Result<bool, StoreError> {
        Ok(self
            .events
            .find_one(doc! {
                "aggregateId": aggregate_id,
                "version": i64::try_from(version).unwrap_or(i64::MAX),
            })
            .projection(doc! {"_id": 1})
            .await
            .map_err(unavailable)?
            .is_some())
    }

    async fn stream(
        &self,
        aggregate_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let docs: Vec<Document> = self
            .events
            .find(doc! {"aggregateId": aggregate_id, "version": {"$gte": i64::try_from(from_version).unwrap_or(i64::MAX)}})
            .sort(doc! {"version": 1})
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        docs.iter().map(|d| decode(d).map(|(_, e)| e)).collect()
    }

    async fn all(&self, after: u64, limit: usize) -> Result<Vec<Archived>, StoreError> {
        let docs: Vec<Document> = self
            .events
            .find(doc! {"_id": {"$gt": i64::try_from(after).unwrap_or(i64::MAX)}})
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        docs.iter()
            .map(|d| {
                let (position, envelope) = decode(d)?;
                let archived_at = d
                    .get_datetime("archivedAt")
                    .map_err(|e| {
                        StoreError::Corrupt(format!("an archived event's archivedAt: {e}"))
                    })?
                    .timestamp_millis();
                let archived_at = chrono::DateTime::from_timestamp_millis(archived_at)
                    .ok_or_else(|| StoreError::Corrupt("archivedAt out of range".into()))?;
                Ok(Archived {
                    position,
                    archived_at,
                    envelope,
                })
            })
            .collect()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.events
            .count_documents(doc! {})
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
