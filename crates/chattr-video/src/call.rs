//! The call lifecycle as a pure state machine: no clock, no I/O. Each transition takes the
//! current time (milliseconds) and returns what must happen as [`Effect`]s (ring these
//! devices, stop ringing those, say who joined, end the call), which the service carries
//! out. Keeping it pure makes every rule testable without timers or sockets.
//!
//! Rules:
//! - Starting a call in a conversation invites its other members; all their devices ring.
//! - An invitee answers on one device (the others stop ringing), declines, or is busy.
//! - Ringing ends after the ring timeout: invitees who did not answer missed it.
//! - A direct call ends when either side leaves; a group call when its last participant
//!   leaves, or when ringing ends with nobody but the caller in it (missed), or when every
//!   invitee declined.
//! - A call holds at most `max_participants` (a mesh); joining beyond that is refused.

use std::collections::{BTreeMap, BTreeSet};

use chattr_core::{ConversationId, SessionId, UserId};
use serde::{Deserialize, Serialize};

/// How a call ended (the wire type: `completed`, `missed`, `declined`, `cancelled`).
pub use chattr_api::v1::CallOutcome as Outcome;

/// What the service must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Ring every device of these users.
    Ring(Vec<UserId>),
    /// Stop ringing the devices of `user`, except `answered_on` (the device that answered).
    StopRinging {
        /// Whose devices.
        user: UserId,
        /// The device that answered, if any.
        answered_on: Option<SessionId>,
    },
    /// `user` joined on `device`.
    Joined {
        /// Who.
        user: UserId,
        /// Which device (session) carries the media.
        device: SessionId,
    },
    /// `user` left.
    Left(UserId),
    /// The call is over.
    Ended {
        /// How.
        outcome: Outcome,
        /// From the first answer to the end (0 if nobody answered).
        duration_ms: u64,
        /// Everyone who was ever in the call, the caller included.
        participants: Vec<UserId>,
    },
}

/// Why a transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call has ended.
    #[error("the call has ended")]
    Ended,
    /// The user is not a member of the call's conversation.
    #[error("not invited to this call")]
    NotInvited,
    /// The user is not in the call.
    #[error("not in this call")]
    NotInCall,
    /// The call already holds `max_participants`.
    #[error("the call is full")]
    Full,
}

/// The limits a call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRules {
    /// How long invitees' devices ring.
    pub ring_ms: u64,
    /// Most people in one call (a mesh: each sends to every other).
    pub max_participants: usize,
}

/// One call. Serialisable: the service keeps it in the cache between transitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who started it.
    pub caller: UserId,
    /// Whether it is a group call (direct calls end when either side leaves).
    pub group: bool,
    /// Members who may join (everyone in the conversation, the caller included).
    members: BTreeSet<UserId>,
    /// Invitees still ringing.
    ringing: BTreeSet<UserId>,
    /// Invitees who declined or were busy.
    declined: BTreeSet<UserId>,
    /// Who is in the call now, on which device.
    present: BTreeMap<UserId, SessionId>,
    /// Everyone who was ever in the call.
    ever: BTreeSet<UserId>,
    /// When ringing stops.
    ring_until_ms: u64,
    /// When someone other than the caller first joined.
    answered_at_ms: Option<u64>,
    /// Mesh cap.
    max_participants: usize,
    ended: bool,
}

impl Call {
    /// Starts a call: the caller is in it (on `device`); the other `members` ring for
    /// `rules.ring_ms`.
    pub fn start(
        conversation_id: ConversationId,
        group: bool,
        caller: UserId,
        device: SessionId,
        members: &[UserId],
        now_ms: u64,
        rules: CallRules,
    ) -> (Call, Vec<Effect>) {
        let members: BTreeSet<UserId> = members.iter().copied().chain([caller]).collect();
        let ringing: BTreeSet<UserId> = members.iter().copied().filter(|m| *m != caller).collect();
        let call = Call {
            conversation_id,
            caller,
            group,
            members,
            ringing: ringing.clone(),
            declined: BTreeSet::new(),
            present: BTreeMap::from([(caller, device)]),
            ever: BTreeSet::from([caller]),
            ring_until_ms: now_ms + rules.ring_ms,
            answered_at_ms: None,
            max_participants: rules.max_participants.max(2),
            ended: false,
        };
        let effects =
            vec![Effect::Joined { user: caller, device }, Effect::Ring(ringing.into_iter().collect())];
        (call, effects)
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Members of the conversation (who may join, and who hears about the call).
    pub fn members(&self) -> impl Iterator<Item = &UserId> {
        self.members.iter()
    }

    /// Invitees whose devices ring.
    pub fn ringing(&self) -> impl Iterator<Item = &UserId> {
        self.ringing.iter()
    }

    /// When someone other than the caller first joined.
    pub fn answered_at_ms(&self) -> Option<u64> {
        self.answered_at_ms
    }

    /// When ringing stops.
    pub fn ring_until_ms(&self) -> u64 {
        self.ring_until_ms
    }

    /// The mesh cap.
    pub fn max_participants(&self) -> usize {
        self.max_participants
    }

    /// The device `user` is in the call on, if any.
    pub fn device_of(&self, user: UserId) -> Option<SessionId> {
        self.present.get(&user).copied()
    }

    /// Who is in the call now.
    pub fn participants(&self) -> impl Iterator<Item = (&UserId, &SessionId)> {
        self.present.iter()
    }

    /// Whether `user` is in the call now.
    pub fn is_present(&self, user: UserId) -> bool {
        self.present.contains_key(&user)
    }

    /// `user` answers (or, in a group call, joins later) on `device`.
    pub fn join(&mut self, user: UserId, device: SessionId, now_ms: u64) -> Result<Vec<Effect>, CallError> {
        self.check_open()?;
        if !self.members.contains(&user) {
            return Err(CallError::NotInvited);
        }
        if let Some(current) = self.present.get(&user) {
            if *current == device {
                return Ok(Vec::new()); // Answering twice on one device changes nothing.
            }
        } else if self.present.len() >= self.max_participants {
            return Err(CallError::Full);
        }
        let mut effects = Vec::new();
        if self.ringing.remove(&user) {
            effects.push(Effect::StopRinging { user, answered_on: Some(device) });
        }
        // Moving the call to another of one's devices replaces the first.
        self.present.insert(user, device);
        self.declined.remove(&user);
        self.ever.insert(user);
        if user != self.caller && self.answered_at_ms.is_none() {
            self.answered_at_ms = Some(now_ms);
        }
        effects.push(Effect::Joined { user, device });
        Ok(effects)
    }

    /// `user` declines (`busy` when they are in another call: the same for the call).
    pub fn decline(&mut self, user: UserId, now_ms: u64) -> Result<Vec<Effect>, CallError> {
        self.check_open()?;
        if !self.ringing.remove(&user) {
            return Err(if self.members.contains(&user) {
                CallError::NotInCall
            } else {
                CallError::NotInvited
            });
        }
        self.declined.insert(user);
        let mut effects = vec![Effect::StopRinging { user, answered_on: None }];
        // Nobody left to answer and nobody has: the call is over.
        if self.ringing.is_empty() && self.answered_at_ms.is_none() {
            effects.extend(self.end(Outcome::Declined, now_ms));
        }
        Ok(effects)
    }

    /// `user` leaves (hangs up).
    pub fn leave(&mut self, user: UserId, now_ms: u64) -> Result<Vec<Effect>, CallError> {
        self.check_open()?;
        if self.present.remove(&user).is_none() {
            return Err(CallError::NotInCall);
        }
        let mut effects = vec![Effect::Left(user)];
        let nobody_answered = self.answered_at_ms.is_none();
        if nobody_answered && user == self.caller {
            effects.extend(self.end(Outcome::Cancelled, now_ms));
        } else if !self.group || self.present.is_empty() {
            // A direct call is over when either side hangs up; a group call when the last
            // one does.
            effects.extend(self.end(Outcome::Completed, now_ms));
        }
        Ok(effects)
    }

    /// Advances time: ringing that ran out stops; a call nobody answered is missed.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        if self.ended || now_ms < self.ring_until_ms || self.ringing.is_empty() {
            return Vec::new();
        }
        let mut effects: Vec<Effect> = std::mem::take(&mut self.ringing)
            .into_iter()
            .map(|user| Effect::StopRinging { user, answered_on: None })
            .collect();
        if self.answered_at_ms.is_none() {
            effects.extend(self.end(Outcome::Missed, now_ms));
        }
        effects
    }

    /// When [`Call::tick`] next has something to do, if ever.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        (!self.ended && !self.ringing.is_empty()).then_some(self.ring_until_ms)
    }

    fn check_open(&self) -> Result<(), CallError> {
        if self.ended {
            Err(CallError::Ended)
        } else {
            Ok(())
        }
    }

    fn end(&mut self, outcome: Outcome, now_ms: u64) -> Vec<Effect> {
        self.ended = true;
        let mut effects: Vec<Effect> = std::mem::take(&mut self.ringing)
            .into_iter()
            .map(|user| Effect::StopRinging { user, answered_on: None })
            .collect();
        effects.extend(std::mem::take(&mut self.present).into_keys().map(Effect::Left));
        let duration_ms = self.answered_at_ms.map_or(0, |at| now_ms.saturating_sub(at));
        effects.push(Effect::Ended {
            outcome,
            duration_ms,
            participants: self.ever.iter().copied().collect(),
        });
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: u64 = 30_000;
    const RULES: CallRules = CallRules { ring_ms: RING, max_participants: 4 };

    fn ids(n: usize) -> Vec<UserId> {
        (0..n).map(|_| uuid::Uuid::now_v7()).collect()
    }

    fn device() -> SessionId {
        uuid::Uuid::now_v7()
    }

    fn ended(effects: &[Effect]) -> Option<(Outcome, u64, usize)> {
        effects.iter().find_map(|e| match e {
            Effect::Ended { outcome, duration_ms, participants } => {
                Some((*outcome, *duration_ms, participants.len()))
            }
            _ => None,
        })
    }

    fn direct() -> (Call, UserId, UserId) {
        let u = ids(2);
        let (call, effects) = Call::start(uuid::Uuid::now_v7(), false, u[0], device(), &u, 0, RULES);
        assert_eq!(effects[1], Effect::Ring(vec![u[1]]), "the callee's devices ring");
        (call, u[0], u[1])
    }

    #[test]
    fn answered_then_hung_up_is_completed_with_its_duration() {
        let (mut call, caller, callee) = direct();
        let phone = device();
        let effects = call.join(callee, phone, 2_000).unwrap();
        assert_eq!(effects[0], Effect::StopRinging { user: callee, answered_on: Some(phone) });
        assert!(call.tick(RING + 1).is_empty(), "no timeout once answered");
        let effects = call.leave(caller, 242_000).unwrap();
        assert_eq!(ended(&effects), Some((Outcome::Completed, 240_000, 2)));
        assert!(effects.contains(&Effect::Left(callee)), "the other side is hung up too");
        assert_eq!(call.join(callee, phone, 243_000), Err(CallError::Ended));
    }

    #[test]
    fn unanswered_ringing_times_out_as_missed() {
        let (mut call, _, callee) = direct();
        assert!(call.tick(RING - 1).is_empty());
        assert_eq!(call.next_deadline_ms(), Some(RING));
        let effects = call.tick(RING);
        assert!(effects.contains(&Effect::StopRinging { user: callee, answered_on: None }));
        assert_eq!(ended(&effects), Some((Outcome::Missed, 0, 1)));
        assert!(call.is_ended() && call.next_deadline_ms().is_none());
    }

    #[test]
    fn declining_or_being_busy_ends_a_direct_call_and_the_caller_can_cancel() {
        let (mut call, _, callee) = direct();
        assert_eq!(ended(&call.decline(callee, 1_000).unwrap()), Some((Outcome::Declined, 0, 1)));
        let (mut call, caller, callee) = direct();
        assert_eq!(ended(&call.leave(caller, 500).unwrap()), Some((Outcome::Cancelled, 0, 1)));
        assert_eq!(call.decline(callee, 600), Err(CallError::Ended));
    }

    #[test]
    fn a_group_call_runs_until_its_last_participant_leaves_and_has_a_cap() {
        let u = ids(6);
        let (mut call, effects) = Call::start(uuid::Uuid::now_v7(), true, u[0], device(), &u, 0, RULES);
        assert_eq!(effects[1], Effect::Ring(u[1..].to_vec()));
        call.join(u[1], device(), 1_000).unwrap();
        call.join(u[2], device(), 2_000).unwrap();
        call.decline(u[3], 2_500).unwrap();
        call.join(u[4], device(), 3_000).unwrap();
        assert_eq!(call.join(u[5], device(), 3_500), Err(CallError::Full), "a mesh of 4");
        let stranger = uuid::Uuid::now_v7();
        assert_eq!(call.join(stranger, device(), 3_600), Err(CallError::NotInvited));
        // The ring timeout stops the rest ringing; the call goes on.
        let effects = call.tick(RING);
        assert_eq!(effects, vec![Effect::StopRinging { user: u[5], answered_on: None }]);
        assert!(!call.is_ended());
        // Leaving one by one: the call ends with the last, and a declined member may still
        // join while it runs.
        call.leave(u[0], 40_000).unwrap();
        call.join(u[3], device(), 41_000).unwrap();
        for (i, user) in [u[1], u[2], u[4]].into_iter().enumerate() {
            let effects = call.leave(user, 50_000 + i as u64).unwrap();
            assert!(ended(&effects).is_none());
        }
        let effects = call.leave(u[3], 60_000).unwrap();
        assert_eq!(ended(&effects), Some((Outcome::Completed, 59_000, 5)));
    }

    #[test]
    fn answering_on_a_second_device_moves_the_call_and_others_stop_ringing_once() {
        let (mut call, _, callee) = direct();
        let (phone, laptop) = (device(), device());
        assert_eq!(call.join(callee, phone, 1_000).unwrap().len(), 2);
        assert!(call.join(callee, phone, 1_100).unwrap().is_empty(), "answering twice changes nothing");
        let moved = call.join(callee, laptop, 1_200).unwrap();
        assert_eq!(moved, vec![Effect::Joined { user: callee, device: laptop }], "no second stop-ringing");
        assert_eq!(call.participants().find(|(u, _)| **u == callee).map(|(_, d)| *d), Some(laptop));
    }

    #[test]
    fn a_group_call_nobody_answers_is_missed_and_all_declining_ends_it() {
        let u = ids(3);
        let (mut call, _) = Call::start(uuid::Uuid::now_v7(), true, u[0], device(), &u, 0, RULES);
        assert_eq!(ended(&call.tick(RING)), Some((Outcome::Missed, 0, 1)));
        let (mut call, _) = Call::start(uuid::Uuid::now_v7(), true, u[0], device(), &u, 0, RULES);
        assert!(ended(&call.decline(u[1], 10).unwrap()).is_none(), "someone may still answer");
        assert_eq!(ended(&call.decline(u[2], 20).unwrap()), Some((Outcome::Declined, 0, 1)));
    }
}
