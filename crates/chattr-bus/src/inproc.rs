//! The in-process bus: every topic is an in-memory log split into [`PARTITIONS`]
//! partitions, with consumer groups that own partitions and commit offsets, like Kafka.
//!
//! Within a group each partition is owned by at most one live consumer at a time, so the
//! records of one key are processed in order even when a group has several consumers.
//! Ownership is recomputed whenever a consumer joins or leaves; a partition that changes
//! owner is rewound to the group's committed offset, so records that were handed out but
//! not committed are delivered again (at-least-once).
//!
//! Retention: records stay in memory for the life of the process, except the prefix of a
//! partition that every known group has committed past, which is trimmed. A group created
//! later with [`StartFrom::Earliest`] therefore starts at the oldest *retained* record.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{Bus, BusConsumer, BusError, BusRecord, BusResult, OutgoingRecord, StartFrom};

/// Number of partitions of every topic.
pub const PARTITIONS: u32 = 8;

/// The partition a key maps to: FNV-1a, stable across processes and Rust versions
/// (unlike std's randomly seeded hasher), modulo [`PARTITIONS`].
pub fn partition_for(key: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(PARTITIONS)) as u32
}

/// The in-process, in-memory [`Bus`].
#[derive(Default)]
pub struct InProcBus {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Source of consumer ids; ids only grow, so the member list stays sorted by join order.
    next_member: AtomicU64,
}

impl InProcBus {
    /// The topic named `name`, created on first use.
    fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock();
        topics.entry(name.to_owned()).or_insert_with(|| Arc::new(Topic::new(name))).clone()
    }
}

/// One topic: its log and groups behind one lock, plus a wake-up for waiting consumers.
struct Topic {
    name: String,
    state: Mutex<TopicState>,
    /// Woken on every publish and every change of partition ownership.
    changed: Notify,
}

impl Topic {
    fn new(name: &str) -> Self {
        let partitions = (0..PARTITIONS).map(|_| Partition::default()).collect();
        Topic {
            name: name.to_owned(),
            state: Mutex::new(TopicState { partitions, groups: HashMap::new() }),
            changed: Notify::new(),
        }
    }
}

struct TopicState {
    partitions: Vec<Partition>,
    groups: HashMap<String, Group>,
}

/// The retained suffix of one partition's log.
#[derive(Default)]
struct Partition {
    /// Offset of `records[0]` (everything before it was trimmed).
    base: u64,
    records: VecDeque<BusRecord>,
}

impl Partition {
    /// Offset the next appended record gets.
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&BusRecord> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        self.records.get(index)
    }
}

/// A consumer group on one topic.
struct Group {
    /// Live consumers, oldest first.
    members: Vec<u64>,
    parts: Vec<GroupPartition>,
}

/// A group's position in one partition.
#[derive(Clone, Copy, Default)]
struct GroupPartition {
    /// Offset after the last committed record, if the group ever committed here.
    committed: Option<u64>,
    /// Where to start when nothing is committed (set from [`StartFrom`] when the group
    /// (re)starts with no live consumer).
    reset: u64,
    /// Next offset to hand out to the owner.
    next: u64,
    owner: Option<u64>,
}

impl GroupPartition {
    /// Where a new owner starts: after the commit, or at the reset point.
    fn resume_at(&self) -> u64 {
        self.committed.unwrap_or(self.reset)
    }
}

impl Group {
    /// Spreads partitions over the live members; a partition that changes owner rewinds to
    /// its committed offset so uncommitted records are redelivered.
    fn rebalance(&mut self, partitions: &[Partition]) {
        let n = self.members.len();
        for (index, (part, log)) in self.parts.iter_mut().zip(partitions).enumerate() {
            let owner = (n > 0).then(|| self.members[index % n]);
            if owner != part.owner {
                part.owner = owner;
                part.next = part.resume_at().max(log.base);
            }
        }
    }
}

impl TopicState {
    /// Drops the records of partition `index` that every group has committed past.
    fn trim(&mut self, index: usize) {
        let Some(keep_from) = self.groups.values().map(|g| g.parts[index].resume_at()).min() else {
            return; // No group yet: a future Earliest group must see everything.
        };
        let log = &mut self.partitions[index];
        while log.base < keep_from && log.records.pop_front().is_some() {
            log.base += 1;
        }
    }
}

#[async_trait]
impl Bus for InProcBus {
    async fn publish(&self, records: Vec<OutgoingRecord>) -> BusResult<()> {
        // Appending in the given order under the topic lock keeps order per key.
        for record in records {
            let topic = self.topic(&record.topic);
            let partition = partition_for(&record.key);
            {
                let mut state = topic.state.lock();
                let log = &mut state.partitions[partition as usize];
                let offset = log.end();
                log.records.push_back(BusRecord {
                    topic: record.topic,
                    partition,
                    offset,
                    key: record.key,
                    headers: record.headers,
                    payload: record.payload,
                    published_ms: Some(crate::now_ms()),
                });
            }
            topic.changed.notify_waiters();
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str, start: StartFrom) -> BusResult<Box<dyn BusConsumer>> {
        let topic = self.topic(topic);
        let member = self.next_member.fetch_add(1, Ordering::Relaxed);
        {
            let mut guard = topic.state.lock();
            let state = &mut *guard;
            let entry = state.groups.entry(group.to_owned()).or_insert_with(|| Group {
                members: Vec::new(),
                parts: vec![GroupPartition::default(); PARTITIONS as usize],
            });
            if entry.members.is_empty() {
                // The group (re)starts: where nothing is committed, `start` decides.
                for (part, log) in entry.parts.iter_mut().zip(&state.partitions) {
                    part.reset = match start {
                        StartFrom::Earliest => log.base,
                        StartFrom::Latest => log.end(),
                    };
                }
            }
            entry.members.push(member);
            entry.rebalance(&state.partitions);
        }
        topic.changed.notify_waiters();
        let lag = crate::metrics::consumer_lag(&topic.name, group);
        Ok(Box::new(InProcConsumer { topic, group: group.to_owned(), member, cursor: 0, lag }))
    }

    async fn ping(&self) -> BusResult<()> {
        Ok(())
    }
}

/// A member of a consumer group of [`InProcBus`]; leaves the group when dropped.
pub struct InProcConsumer {
    topic: Arc<Topic>,
    group: String,
    member: u64,
    /// Partition to look at first, rotated so one busy partition cannot starve the others.
    cursor: usize,
    /// Records behind the end of this member's partitions.
    lag: metrics::Gauge,
}

impl InProcConsumer {
    /// Takes the next record of a partition this consumer owns, if one is ready. Taking is
    /// synchronous, so a cancelled `next()` never loses a record.
    fn try_take(&mut self) -> Option<BusRecord> {
        let mut guard = self.topic.state.lock();
        let state = &mut *guard;
        let group = state.groups.get_mut(&self.group)?;
        let count = group.parts.len();
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let part = &mut group.parts[index];
            if part.owner != Some(self.member) {
                continue;
            }
            if let Some(record) = state.partitions[index].get(part.next) {
                part.next += 1;
                self.cursor = (index + 1) % count;
                let record = record.clone();
                let behind: u64 = group
                    .parts
                    .iter()
                    .zip(&state.partitions)
                    .filter(|(part, _)| part.owner == Some(self.member))
                    .map(|(part, log)| log.end().saturating_sub(part.next))
                    .sum();
                self.lag.set(behind as f64);
                return Some(record);
            }
        }
        self.lag.set(0.0);
        None
    }
}

#[async_trait]
impl BusConsumer for InProcConsumer {
    async fn next(&mut self) -> BusResult<BusRecord> {
        let topic = Arc::clone(&self.topic);
        loop {
            // Register for wake-ups before looking, so a publish in between is not missed.
            let changed = topic.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(record) = self.try_take() {
                return Ok(record);
            }
            changed.await;
        }
    }

    async fn commit(&mut self, record: &BusRecord) -> BusResult<()> {
        if record.topic != self.topic.name {
            return Err(BusError::Backend(format!(
                "commit of a record of topic {:?} on a consumer of {:?}",
                record.topic, self.topic.name
            )));
        }
        let mut state = self.topic.state.lock();
        let index = record.partition as usize;
        let end = state.partitions.get(index).map(Partition::end);
        if end.is_none_or(|end| record.offset >= end) {
            return Err(BusError::Backend(format!(
                "commit of unknown record {}/{}",
                record.partition, record.offset
            )));
        }
        let group = state
            .groups
            .get_mut(&self.group)
            .ok_or_else(|| BusError::Backend(format!("group {:?} vanished", self.group)))?;
        let part = &mut group.parts[index];
        // Commits never move backwards: a late commit from a consumer whose partition was
        // rebalanced away must not undo a newer one.
        let committed = part.committed.unwrap_or(0).max(record.offset + 1);
        part.committed = Some(committed);
        part.next = part.next.max(committed);
        state.trim(index);
        Ok(())
    }
}

impl Drop for InProcConsumer {
    fn drop(&mut self) {
        {
            let mut guard = self.topic.state.lock();
            let state = &mut *guard;
            let Some(group) = state.groups.get_mut(&self.group) else { return };
            group.members.retain(|&m| m != self.member);
            group.rebalance(&state.partitions);
            if group.members.is_empty() && group.parts.iter().all(|p| p.committed.is_none()) {
                // Nothing to remember: a rejoin starts from `StartFrom` again. Forgetting it
                // keeps short-lived broadcast groups from pinning retention forever.
                state.groups.remove(&self.group);
                for index in 0..state.partitions.len() {
                    state.trim(index);
                }
            }
        }
        // The remaining members may have inherited partitions with records to read.
        self.topic.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::conformance::{record, within};

    fn bus() -> InProcBus {
        InProcBus::default()
    }

    #[test]
    fn partition_is_fnv1a() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(partition_for("a"), (0xaf63_dc4c_8601_ec8c_u64 % 8) as u32);
        assert_eq!(partition_for("conversation-1"), partition_for("conversation-1"));
    }

    /// Keys landing in `count` distinct partitions, one key per partition.
    fn keys_in_distinct_partitions(count: usize) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        (0..).map(|i| format!("k{i}")).filter(|k| seen.insert(partition_for(k))).take(count).collect()
    }

    #[tokio::test]
    async fn partitions_are_owned_by_one_consumer_and_move_on_drop() {
        let bus = bus();
        let mut a = bus.subscribe("t", "g", StartFrom::Earliest).await.expect("sub");
        let mut b = bus.subscribe("t", "g", StartFrom::Earliest).await.expect("sub");
        let keys = keys_in_distinct_partitions(PARTITIONS as usize);
        let records = keys.iter().flat_map(|k| [record("t", k, "1"), record("t", k, "2")]).collect();
        bus.publish(records).await.expect("publish");
        let half = PARTITIONS as usize; // 2 records in each of 4 partitions
        let mut from_a = Vec::new();
        for _ in 0..half {
            from_a.push(within("a", a.next()).await.expect("next"));
        }
        let a_parts: std::collections::HashSet<u32> = from_a.iter().map(|r| r.partition).collect();
        assert_eq!(a_parts.len(), half / 2, "a owns exactly half the partitions");
        within("commit", a.commit(&from_a[0])).await.expect("commit");
        drop(a);
        // b inherits a's partitions, rewound to a's commits: everything but one record.
        let mut from_b = Vec::new();
        for _ in 0..(2 * PARTITIONS as usize - 1) {
            from_b.push(within("b", b.next()).await.expect("next"));
        }
        assert!(!from_b.iter().any(|r| r.partition == from_a[0].partition && r.offset == 0));
        assert!(tokio::time::timeout(Duration::from_millis(50), b.next()).await.is_err());
    }

    #[tokio::test]
    async fn committed_prefix_is_trimmed() {
        let bus = bus();
        let mut c = bus.subscribe("t", "g", StartFrom::Earliest).await.expect("sub");
        bus.publish((0..3).map(|i| record("t", "k", &i.to_string())).collect()).await.expect("publish");
        let mut last = None;
        for _ in 0..3 {
            last = Some(within("next", c.next()).await.expect("next"));
        }
        let last = last.expect("record");
        c.commit(&last).await.expect("commit");
        let topic = bus.topic("t");
        let state = topic.state.lock();
        let log = &state.partitions[last.partition as usize];
        assert_eq!((log.base, log.records.len()), (3, 0));
    }

    #[tokio::test]
    async fn uncommitted_group_is_forgotten_and_latest_applies_again() {
        let bus = bus();
        let c = bus.subscribe("t", "g", StartFrom::Latest).await.expect("sub");
        drop(c);
        bus.publish(vec![record("t", "k", "missed")]).await.expect("publish");
        let mut c = bus.subscribe("t", "g", StartFrom::Latest).await.expect("sub");
        bus.publish(vec![record("t", "k", "seen")]).await.expect("publish");
        let got = within("next", c.next()).await.expect("next");
        assert_eq!(got.payload, "seen");
    }

    #[tokio::test]
    async fn commit_of_foreign_record_fails() {
        let bus = bus();
        let mut c = bus.subscribe("t", "g", StartFrom::Earliest).await.expect("sub");
        bus.publish(vec![record("other", "k", "x")]).await.expect("publish");
        let mut o = bus.subscribe("other", "g", StartFrom::Earliest).await.expect("sub");
        let foreign = within("next", o.next()).await.expect("next");
        assert!(c.commit(&foreign).await.is_err());
        let unknown = BusRecord { topic: "t".into(), offset: 99, ..foreign };
        assert!(c.commit(&unknown).await.is_err());
    }
}
