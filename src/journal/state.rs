//! Where a journaled command is, and the transitions allowed between states: the whole
//! lifecycle as one exhaustive table.

/// Where a command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Journaled, not acted on.
    Received,
    /// A side effect may have started.
    Applying,
    /// Result recorded.
    Done,
}

/// What happens to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// About to cause a side effect.
    Apply,
    /// A result was produced (including a refusal decided before any effect).
    Finish,
    /// Delivered again after a `not_now` result: nothing was applied, so it may run again.
    Redeliver,
}

/// The transition table. Anything not listed is a bug, reported rather than acted on.
pub fn next(state: State, event: Event, not_now: bool) -> Result<State, String> {
    match (state, event) {
        (State::Received, Event::Apply) => Ok(State::Applying),
        (State::Received | State::Applying, Event::Finish) => Ok(State::Done),
        // Only a NOT_NOW result promises that nothing was applied.
        (State::Done, Event::Redeliver) if not_now => Ok(State::Received),
        (s, e) => Err(format!("journal: {e:?} is not allowed in state {s:?}")),
    }
}

impl State {
    /// Stable text form (the stored one).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Applying => "applying",
            Self::Done => "done",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "received" => Self::Received,
            "applying" => Self::Applying,
            "done" => Self::Done,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        assert_eq!(next(State::Received, Event::Apply, false), Ok(State::Applying));
        assert_eq!(next(State::Received, Event::Finish, false), Ok(State::Done));
        assert_eq!(next(State::Applying, Event::Finish, false), Ok(State::Done));
        assert_eq!(next(State::Done, Event::Redeliver, true), Ok(State::Received));
        assert!(next(State::Done, Event::Redeliver, false).is_err(), "a finished command never runs twice");
        assert!(next(State::Applying, Event::Redeliver, true).is_err());
        assert!(next(State::Applying, Event::Apply, false).is_err());
        assert!(next(State::Done, Event::Apply, false).is_err());
        assert!(next(State::Done, Event::Finish, false).is_err());
    }
}
