//! The state machine of a request: which transition is allowed from which
//! status, and where it leads. Pure: no clock, no broker.

use guichet_core::proto::v1::{RequestStatus, Transition};

/// Every status, for exhaustive checks.
pub const STATUSES: [RequestStatus; 5] = [
    RequestStatus::Open,
    RequestStatus::Taken,
    RequestStatus::WaitingUsager,
    RequestStatus::Answered,
    RequestStatus::Closed,
];

/// Every transition a caller may ask for (OPEN is the router's alone).
pub const TRANSITIONS: [Transition; 7] = [
    Transition::Take,
    Transition::RequestDocuments,
    Transition::Resume,
    Transition::Answer,
    Transition::Close,
    Transition::Reopen,
    Transition::Transfer,
];

/// Where `transition` leads from `from`, or `None` when it is not allowed.
pub fn next(from: RequestStatus, transition: Transition) -> Option<RequestStatus> {
    use RequestStatus as S;
    use Transition as T;
    match (transition, from) {
        (T::Take, S::Open) => Some(S::Taken),
        (T::RequestDocuments, S::Taken | S::Answered) => Some(S::WaitingUsager),
        (T::Resume, S::WaitingUsager) => Some(S::Taken),
        (T::Answer, S::Taken) => Some(S::Answered),
        (T::Close, S::Open | S::Taken | S::WaitingUsager | S::Answered) => Some(S::Closed),
        (T::Reopen, S::Closed) => Some(S::Open),
        // Into the other service's queue: nobody there has it yet.
        (T::Transfer, S::Open | S::Taken) => Some(S::Open),
        _ => None,
    }
}

/// The transitions allowed from `from`, for error messages.
pub fn allowed_from(from: RequestStatus) -> Vec<Transition> {
    TRANSITIONS.into_iter().filter(|t| next(from, *t).is_some()).collect()
}

#[cfg(test)]
mod tests {
    use guichet_core::request::{status_token, transition_token};

    use super::*;

    /// The whole table, written out: every transition from every status.
    #[test]
    fn every_transition_from_every_status() {
        use RequestStatus as S;
        use Transition as T;
        let expected: &[(T, [Option<S>; 5])] = &[
            //                      OPEN            TAKEN                 WAITING_USAGER   ANSWERED               CLOSED
            (T::Take, [Some(S::Taken), None, None, None, None]),
            (
                T::RequestDocuments,
                [None, Some(S::WaitingUsager), None, Some(S::WaitingUsager), None],
            ),
            (T::Resume, [None, None, Some(S::Taken), None, None]),
            (T::Answer, [None, Some(S::Answered), None, None, None]),
            (
                T::Close,
                [Some(S::Closed), Some(S::Closed), Some(S::Closed), Some(S::Closed), None],
            ),
            (T::Reopen, [None, None, None, None, Some(S::Open)]),
            (T::Transfer, [Some(S::Open), Some(S::Open), None, None, None]),
        ];
        assert_eq!(expected.len(), TRANSITIONS.len());
        for (transition, row) in expected {
            for (from, want) in STATUSES.iter().zip(row) {
                assert_eq!(
                    next(*from, *transition),
                    *want,
                    "{} from {}",
                    transition_token(*transition),
                    status_token(*from)
                );
            }
        }
        for from in STATUSES {
            assert_eq!(next(from, T::Open), None, "OPEN is never a caller's transition");
            assert_eq!(next(from, T::Unspecified), None);
        }
        assert_eq!(allowed_from(S::Closed), vec![T::Reopen]);
        assert_eq!(allowed_from(S::WaitingUsager), vec![T::Resume, T::Close]);
    }
}
