//! A model-free check on revisions: the store's revision never goes backwards in
//! real time.

/// A response's store revision, with the interval its request was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionObservation {
    /// When the request was made.
    pub call: u64,
    /// When the response arrived.
    pub ret: u64,
    /// The header revision of the response.
    pub revision: i64,
}

/// Two observations whose revisions went backwards in real time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRegression {
    /// The earlier, completed observation.
    pub earlier: RevisionObservation,
    /// The later one, which saw an older revision.
    pub later: RevisionObservation,
}

/// Model-free check: the store's revision never goes backwards in real time. If one
/// linearizable request completed before another began (on any member), the second
/// must report a revision at least as new.
pub fn check_revisions_monotonic(
    observations: &[RevisionObservation],
) -> Result<(), RevisionRegression> {
    let mut by_call: Vec<RevisionObservation> = observations.to_vec();
    by_call.sort_by_key(|observation| observation.call);
    let mut by_ret: Vec<RevisionObservation> = observations.to_vec();
    by_ret.sort_by_key(|observation| observation.ret);
    // Sweep in call order, folding in every observation that completed earlier.
    let mut completed = by_ret.iter().peekable();
    let mut newest: Option<RevisionObservation> = None;
    for later in by_call {
        while let Some(earlier) = completed.next_if(|earlier| earlier.ret < later.call) {
            if newest.is_none_or(|newest| earlier.revision > newest.revision) {
                newest = Some(*earlier);
            }
        }
        if let Some(earlier) = newest {
            if later.revision < earlier.revision {
                return Err(RevisionRegression { earlier, later });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_may_not_go_backwards_in_real_time() {
        let seen = |call, ret, revision| RevisionObservation {
            call,
            ret,
            revision,
        };
        assert!(check_revisions_monotonic(&[seen(0, 1, 5), seen(2, 3, 5), seen(4, 5, 9)]).is_ok());
        // Overlapping requests may see either order.
        assert!(check_revisions_monotonic(&[seen(0, 10, 9), seen(1, 2, 5)]).is_ok());
        match check_revisions_monotonic(&[seen(0, 1, 9), seen(2, 3, 5)]) {
            Err(regression) => assert_eq!(regression.later.revision, 5),
            Ok(()) => panic!("a revision going backwards passed"),
        }
    }
}
