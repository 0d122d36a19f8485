//! Turning store records into the wire views members see.

use std::collections::HashMap;

use chattr_api::v1::{Conversation, User};
use chattr_core::UserId;
use chattr_store::ConversationSummary;

/// Builds the wire view of a conversation from its summary and a user directory.
pub fn conversation_view(summary: ConversationSummary, users: &HashMap<UserId, User>) -> Conversation {
    let c = summary.conversation;
    let members = c
        .members
        .iter()
        .map(|id| users.get(id).cloned().unwrap_or_else(|| User { id: *id, username: String::new() }))
        .collect();
    Conversation {
        id: c.id,
        kind: c.kind,
        title: c.title,
        owner_id: c.owner_id,
        members,
        created_at: c.created_at,
        last_seq: c.last_seq,
        read_seq: summary.read_seq,
        unread: summary.unread,
        last_message: summary.last_message,
        read_positions: Vec::new(),
    }
}
