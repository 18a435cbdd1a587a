//! Where each assigned partition stands, and what to do about it. Pure.
//!
//! The consumer keeps one mark per partition in Redis (see
//! `paystream_core::readmodel::Mark`): how far the model has applied it, and
//! whether the model holds its whole history. A partition whose mark is
//! missing has never been applied to this Redis, or Redis lost it; either way
//! the partition is replayed from its beginning (the change topics are
//! compacted, so the beginning holds the latest image of every row). A
//! replay that was interrupted resumes where its mark says. A replay is done
//! once it passes the end the partition had when it started.

use paystream_core::readmodel::Mark;

/// What the consumer knows about one assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Just assigned: the mark is not read yet, so its records wait.
    Unchecked,
    /// Must move its position first; its records wait until the seek is done.
    Seek {
        /// Where to go.
        to: SeekTo,
        /// The end of the replay.
        target: i64,
    },
    /// Applying from the committed offset onward; the model is complete.
    Live,
    /// Replaying; complete once the position reaches `target`.
    Rebuilding {
        /// The partition's end when the replay started.
        target: i64,
    },
}

/// A position to seek to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The first record still in the log.
    Beginning,
    /// An absolute offset.
    Offset(i64),
}

/// How to start a newly assigned partition, given its stored mark and its
/// low and high watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The state to enter.
    pub state: State,
    /// A mark to write unconditionally before anything else.
    pub write_mark: Option<Mark>,
}

/// Decides how to start a partition.
pub fn start(mark: Option<Mark>, low: i64, high: i64) -> Start {
    match mark {
        Some(Mark::Live(_)) => Start {
            state: State::Live,
            write_mark: None,
        },
        Some(Mark::Rebuilding(n)) if n >= high => Start {
            state: State::Live,
            write_mark: Some(Mark::Live(n)),
        },
        Some(Mark::Rebuilding(n)) => Start {
            state: State::Seek {
                to: SeekTo::Offset(n.max(low)),
                target: high,
            },
            write_mark: None,
        },
        None if high <= low => Start {
            state: State::Live,
            write_mark: Some(Mark::Live(high)),
        },
        None => Start {
            state: State::Seek {
                to: SeekTo::Beginning,
                target: high,
            },
            write_mark: Some(Mark::Rebuilding(low)),
        },
    }
}

/// The mark to store after applying a partition's records up to `next`, and
/// the state that follows.
pub fn after_apply(state: State, next: i64) -> (Mark, State) {
    match state {
        State::Rebuilding { target } if next < target => (Mark::Rebuilding(next), state),
        _ => (Mark::Live(next), State::Live),
    }
}

/// Whether records of a partition in `state` may be applied now.
pub fn accepts_records(state: State) -> bool {
    matches!(state, State::Live | State::Rebuilding { .. })
}

/// The offset to commit for a live partition whose position moved past the
/// last applied record with no record to apply: a transaction's commit
/// marker takes an offset, and the consumer steps over it without handing
/// it out. Committing the position then makes the lag read 0 at rest instead
/// of 1 per partition. `applied` is the offset last committed for the
/// partition by this owner (`None`: nothing yet).
pub fn idle_commit(state: State, applied: Option<i64>, position: i64) -> Option<i64> {
    match state {
        State::Live if applied.is_none_or(|a| position > a) => Some(position),
        _ => None,
    }
}

/// Redis lost a live partition's mark: replay it from the beginning.
pub fn lost(high: i64, low: i64) -> Start {
    start(None, low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_mark_continues_from_the_committed_offset() {
        assert_eq!(
            start(Some(Mark::Live(40)), 0, 100),
            Start {
                state: State::Live,
                write_mark: None
            }
        );
    }

    #[test]
    fn a_missing_mark_replays_from_the_beginning() {
        let s = start(None, 5, 100);
        assert_eq!(
            s.state,
            State::Seek {
                to: SeekTo::Beginning,
                target: 100
            }
        );
        assert_eq!(s.write_mark, Some(Mark::Rebuilding(5)));
        // An empty partition has nothing to replay.
        assert_eq!(
            start(None, 7, 7),
            Start {
                state: State::Live,
                write_mark: Some(Mark::Live(7))
            }
        );
        assert_eq!(lost(100, 5), s);
    }

    #[test]
    fn an_interrupted_replay_resumes_at_its_mark() {
        let s = start(Some(Mark::Rebuilding(30)), 10, 100);
        assert_eq!(
            s.state,
            State::Seek {
                to: SeekTo::Offset(30),
                target: 100
            }
        );
        assert_eq!(s.write_mark, None);
        // Compaction moved the start past the mark.
        let s = start(Some(Mark::Rebuilding(3)), 10, 100);
        assert_eq!(
            s.state,
            State::Seek {
                to: SeekTo::Offset(10),
                target: 100
            }
        );
        // Already past the end: live.
        assert_eq!(
            start(Some(Mark::Rebuilding(100)), 0, 100).write_mark,
            Some(Mark::Live(100))
        );
    }

    #[test]
    fn a_live_partition_commits_past_a_commit_marker() {
        // Applied up to 41 (next 42); the marker at 42 moved the position to 43.
        assert_eq!(idle_commit(State::Live, Some(42), 43), Some(43));
        assert_eq!(idle_commit(State::Live, Some(43), 43), None);
        // A position behind what was applied (a rewind) commits nothing.
        assert_eq!(idle_commit(State::Live, Some(50), 43), None);
        // Nothing applied yet by this owner: the position is committed once.
        assert_eq!(idle_commit(State::Live, None, 43), Some(43));
        // Replays and unchecked partitions keep their own bookkeeping.
        assert_eq!(
            idle_commit(State::Rebuilding { target: 90 }, Some(42), 43),
            None
        );
        assert_eq!(idle_commit(State::Unchecked, None, 43), None);
    }

    #[test]
    fn a_replay_turns_live_at_its_target() {
        let r = State::Rebuilding { target: 50 };
        assert_eq!(after_apply(r, 20), (Mark::Rebuilding(20), r));
        assert_eq!(after_apply(r, 50), (Mark::Live(50), State::Live));
        assert_eq!(after_apply(State::Live, 7), (Mark::Live(7), State::Live));
        assert!(accepts_records(r) && accepts_records(State::Live));
        assert!(!accepts_records(State::Unchecked));
        assert!(!accepts_records(State::Seek {
            to: SeekTo::Beginning,
            target: 1
        }));
    }
}
