//! Conformance checks for the outbox.

use chattr_core::events::Event;

use super::*;
use crate::{DynStore, MessageChange};

/// `outbox_pending` is oldest first and limited; published rows leave it.
pub async fn outbox_pending_and_publish(store: DynStore) {
    assert!(store.outbox_pending(10).await.expect("pending").is_empty());
    assert_eq!(store.outbox_backlog().await.expect("backlog"), crate::OutboxBacklog::default());
    let before = crate::codec::ms(chattr_core::now());
    let names = ["o1", "o2", "o3", "o4", "o5"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(user(&store, name).await);
    }
    let registered = |i: usize| Event::UserRegistered { user_id: ids[i], username: names[i].into() };
    let first = store.outbox_pending(2).await.expect("pending");
    assert_eq!(first.iter().map(|r| r.event.clone()).collect::<Vec<_>>(), [registered(0), registered(1)]);
    assert!(first[0].id < first[1].id);
    let all = store.outbox_pending(100).await.expect("pending");
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert_eq!(all[..2], first[..], "reading does not consume");
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.rows, 5);
    let oldest = backlog.oldest_ms.expect("an oldest row");
    assert!(oldest >= before && oldest <= crate::codec::ms(chattr_core::now()), "{oldest} vs {before}");
    assert!(store.outbox_pending(0).await.expect("pending").is_empty());

    store.outbox_mark_published(&[first[0].id, first[1].id]).await.expect("publish");
    let rest = store.outbox_pending(100).await.expect("pending");
    assert_eq!(rest, all[2..]);
    assert_eq!(store.outbox_backlog().await.expect("backlog").rows, 3, "published rows leave the backlog");
    // Publishing out of order, twice, or unknown ids is harmless.
    store.outbox_mark_published(&[all[3].id, all[0].id, 999_999]).await.expect("publish");
    store.outbox_mark_published(&[]).await.expect("publish none");
    assert_eq!(store.outbox_pending(100).await.expect("pending"), [all[2].clone(), all[4].clone()]);
    // New rows get ids above every earlier one, published or not.
    let late = user(&store, "late").await;
    let pending = store.outbox_pending(100).await.expect("pending");
    assert_eq!(pending.len(), 3);
    assert!(pending[2].id > all[4].id);
    assert_eq!(pending[2].event, Event::UserRegistered { user_id: late, username: "late".into() });
    assert_eq!(drain(&store).await.len(), 3);
    assert!(store.outbox_pending(100).await.expect("pending").is_empty());
}

/// A whole scenario writes exactly the expected events, in commit order.
pub async fn outbox_records_every_mutation_in_order(store: DynStore) {
    let a = user(&store, "fa").await;
    let b = user(&store, "fb").await;
    let c = user(&store, "fc").await;
    let s = session_record(a, "h1", 0);
    store.create_session(&s).await.expect("session");
    let (d, _) = direct(&store, a, b).await;
    direct(&store, b, a).await;
    let g = group(&store, &[a, b], 1).await;
    store.add_member(g, c, at(2)).await.expect("add");
    store.add_member(g, c, at(2)).await.expect("add again");
    store.set_title(g, "T").await.expect("title");
    let m1 = send(&store, d, a, "1", 3).await;
    store.insert_message(&new_message(d, a, "1", 4)).await.expect("dup");
    let m2 = send(&store, g, c, "2", 5).await;
    store.mark_read(d, b, 1).await.expect("read");
    let edited = store
        .change_message(d, m1.id, &MessageChange::Edit { body: "e".into(), at: at(6) })
        .await
        .expect("edit");
    let deleted = store.change_message(g, m2.id, &MessageChange::Delete { at: at(7) }).await.expect("delete");
    store.remove_member(g, c).await.expect("remove");
    store.remove_member(g, c).await.expect("remove again");
    store.rotate_refresh(s.id, "h1", "h2", at(1_000_000), at(8)).await.expect("rotate");
    store.rotate_refresh(s.id, "h1", "h3", at(1_000_000), at(9)).await.expect("reuse");

    let expected = vec![
        Event::UserRegistered { user_id: a, username: "fa".into() },
        Event::UserRegistered { user_id: b, username: "fb".into() },
        Event::UserRegistered { user_id: c, username: "fc".into() },
        Event::ConversationCreated { conversation_id: d },
        Event::ConversationCreated { conversation_id: g },
        Event::MemberAdded { conversation_id: g, user_id: c },
        Event::ConversationUpdated { conversation_id: g },
        Event::MessageCreated { message: m1 },
        Event::MessageCreated { message: m2 },
        Event::MessageRead { conversation_id: d, user_id: b, seq: 1 },
        Event::MessageEdited { message: edited.expect("edited") },
        Event::MessageDeleted { message: deleted.expect("deleted") },
        Event::MemberRemoved { conversation_id: g, user_id: c },
        Event::SessionRevoked { user_id: a, session_id: s.id },
    ];
    let rows = store.outbox_pending(100).await.expect("pending");
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(rows.into_iter().map(|r| r.event).collect::<Vec<_>>(), expected);
}

/// An outbox row carries the trace context of the request that wrote it (its span, which
/// the relay's hop names as parent), and none when the write ran outside any trace.
pub async fn outbox_rows_carry_the_trace_context(store: DynStore) {
    use chattr_core::trace::{self, TraceContext};
    let request = TraceContext::new_root();
    let traced = trace::scope(request, user(&store, "traced")).await;
    let untraced = user(&store, "untraced").await;
    let rows = drain_rows(&store).await;
    let of = |id| {
        rows.iter().find(|r| matches!(&r.event, Event::UserRegistered { user_id, .. } if *user_id == id))
    };
    let traced_row = of(traced).expect("traced row");
    let written =
        TraceContext::parse(traced_row.traceparent.as_deref().expect("a traceparent")).expect("valid");
    assert_eq!(written.trace_id, request.trace_id, "same trace");
    assert_eq!(written.span_id, request.span_id, "the writer's span");
    assert_eq!(of(untraced).expect("untraced row").traceparent, None);

    // A send carries its sender's context too, however the backend commits it.
    let g = group(&store, &[traced, untraced], 0).await;
    drain_rows(&store).await;
    let sending = TraceContext::new_root();
    let message = trace::scope(sending, send(&store, g, traced, "t1", 1)).await;
    send(&store, g, untraced, "u1", 2).await;
    let rows = drain_rows(&store).await;
    let created = |id| {
        rows.iter()
            .find(|r| matches!(&r.event, Event::MessageCreated { message } if message.id == id))
            .expect("a message.created row")
    };
    let written = TraceContext::parse(created(message.id).traceparent.as_deref().expect("a traceparent"))
        .expect("valid");
    assert_eq!((written.trace_id, written.span_id), (sending.trace_id, sending.span_id));
    let other = rows.iter().find(|r| r.id != created(message.id).id).expect("the untraced send");
    assert_eq!(other.traceparent, None);
}

/// Takes every pending outbox row and marks them published.
async fn drain_rows(store: &DynStore) -> Vec<crate::OutboxRow> {
    let rows = store.outbox_pending(1000).await.expect("pending");
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.outbox_mark_published(&ids).await.expect("publish");
    rows
}
