//! The conformance suite every [`Store`](crate::Store) impl must pass, written once.
//!
//! Each check is a `pub async fn` taking a fresh, empty store; the
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro turns them into
//! `#[tokio::test]`s for one impl:
//!
//! ```text
//! chattr_store::store_conformance_tests!(make_store());
//! ```
//!
//! where `make_store()` is a future yielding a fresh [`DynStore`]. The calling crate needs
//! `tokio` (with the `macros` and `rt-multi-thread` features) as a dev-dependency.
//!
//! These are test bodies: they panic (assert) on the first deviation from the contract.
//! Times are fixed, whole milliseconds, so every backend can round-trip them exactly.

use chattr_api::v1::{ConversationKind, Message};
use chattr_core::events::Event;
use chattr_core::{ConversationId, Timestamp, UserId};
use uuid::Uuid;

use crate::{DynStore, NewConversation, NewMessage, SessionRecord, UserRecord};

mod conversations;
mod messages;
mod outbox;
mod users;

pub use conversations::*;
pub use messages::*;
pub use outbox::*;
pub use users::*;

/// Generates one `#[tokio::test]` per conformance check for the store built by `$make`
/// (an expression evaluating to a future of a fresh, empty [`DynStore`](crate::DynStore)).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__store_conformance_tests!($make; current_thread:
            ping, create_user_and_lookup, username_conflict, users_by_ids_returns_known_users,
            search_users_by_prefix, sessions_create_and_get, rotate_refresh_rotates,
            rotate_refresh_reuse_revokes, rotate_refresh_wrong_hash_is_invalid, rotate_refresh_invalid, touch_sessions_updates_live_only,
            list_sessions_live_newest_first, revoke_session_rules, revoke_other_sessions_keeps_one,
            create_group_conversation, direct_conversation_dedupe, unknown_references_fail,
            membership_add_remove, set_title_updates, contacts_and_latest_seqs,
            insert_message_assigns_gapless_seqs, insert_message_requires_membership,
            insert_message_dedupes_client_msg_id, messages_paging, message_lookup,
            change_message_edit, change_message_delete, change_message_tombstone_is_final,
            mark_read_rules, unread_counts, conversations_for_user_order, conversation_summary_matches_list,
            read_positions_of_members,
            outbox_pending_and_publish,
            outbox_records_every_mutation_in_order,
            outbox_rows_carry_the_trace_context,
        );
        $crate::__store_conformance_tests!($make; multi_thread:
            concurrent_inserts_get_unique_gapless_seqs, concurrent_direct_creation_yields_one,
            concurrent_mixed_sends_each_get_their_own_answer,
        );
    };
}

/// Implementation detail of [`store_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($make:expr; current_thread: $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let store: $crate::DynStore = $make.await;
            $crate::conformance::$name(store).await;
        }
    )*};
    ($make:expr; multi_thread: $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let store: $crate::DynStore = $make.await;
            $crate::conformance::$name(store).await;
        }
    )*};
}

// ---- helpers ----

/// A fixed instant plus `offset` milliseconds.
pub fn at(offset: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + offset).expect("valid test time")
}

/// Creates a user named `name` (created at `at(0)`) and returns its id.
pub async fn user(store: &DynStore, name: &str) -> UserId {
    let record = UserRecord {
        id: Uuid::now_v7(),
        username: name.into(),
        password_hash: "hash".into(),
        created_at: at(0),
    };
    store.create_user(&record).await.expect("create_user");
    record.id
}

/// Takes every pending outbox event (oldest first) and marks them published, so a test
/// can assert exactly what one step wrote.
pub async fn drain(store: &DynStore) -> Vec<Event> {
    let rows = store.outbox_pending(u32::MAX).await.expect("outbox_pending");
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.outbox_mark_published(&ids).await.expect("outbox_mark_published");
    rows.into_iter().map(|r| r.event).collect()
}

/// A session of `user_id` created at `at(created)` with refresh hash `hash`.
pub fn session_record(user_id: UserId, hash: &str, created: i64) -> SessionRecord {
    SessionRecord {
        id: Uuid::now_v7(),
        user_id,
        refresh_hash: hash.into(),
        refresh_expires_at: at(1_000_000),
        user_agent: Some(format!("agent {created}")),
        created_at: at(created),
        last_seen_at: at(created),
        revoked: false,
    }
}

/// Creates a group owned by `members[0]` at `at(created)`.
pub async fn group(store: &DynStore, members: &[UserId], created: i64) -> ConversationId {
    let new = NewConversation {
        id: Uuid::now_v7(),
        kind: ConversationKind::Group,
        title: Some("group".into()),
        owner_id: members.first().copied(),
        members: members.to_vec(),
        created_at: at(created),
    };
    let (record, created) = store.create_conversation(&new).await.expect("create_conversation");
    assert!(created);
    record.id
}

/// The direct conversation between `a` and `b` (created at `at(0)` if new).
pub async fn direct(store: &DynStore, a: UserId, b: UserId) -> (ConversationId, bool) {
    let new = NewConversation {
        id: Uuid::now_v7(),
        kind: ConversationKind::Direct,
        title: None,
        owner_id: None,
        members: vec![a, b],
        created_at: at(0),
    };
    let (record, created) = store.create_conversation(&new).await.expect("create direct");
    (record.id, created)
}

/// A new message from `sender` with idempotency key `client` sent at `at(time)`.
pub fn new_message(
    conversation_id: ConversationId,
    sender_id: UserId,
    client: &str,
    time: i64,
) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        conversation_id,
        sender_id,
        client_msg_id: client.into(),
        body: format!("body {client}"),
        created_at: at(time),
    }
}

/// Sends a message that must be new; returns it.
pub async fn send(
    store: &DynStore,
    conversation: ConversationId,
    sender: UserId,
    client: &str,
    time: i64,
) -> Message {
    let (message, created) =
        store.insert_message(&new_message(conversation, sender, client, time)).await.expect("insert_message");
    assert!(created, "message {client} should be new");
    message
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
