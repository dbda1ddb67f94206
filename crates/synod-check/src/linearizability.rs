//! Linearizability of a key-value history: the Wing–Gong search with Lowe's
//! memoization, run per key as Porcupine does (a key-value store is linearizable iff
//! each key is).
//!
//! The search walks a time-ordered list of call and return entries (Porcupine's
//! layout): the operations that may go next are the calls before the first
//! return still in the list; linearizing one lifts its two entries out of the
//! list, backtracking puts them back. Visited states — which operations are
//! linearized, and the register's value — are remembered so no state is explored
//! twice; the set of linearized operations is kept as a Zobrist hash (an XOR of a
//! random 128-bit word per operation), so remembering a state costs 20 bytes
//! whatever the history's length.
//!
//! Operations without an answer may take effect at any time after their call, or
//! never; they are what makes the search grow (each may go anywhere). When the
//! store's own history is known, [`without_unapplied_unknowns`] drops those that
//! certainly never took effect.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::Change;

/// What a client did to one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A read; `None` means the key was absent.
    Get,
    /// A write of the value.
    Put(String),
    /// A delete.
    Delete,
    /// A compare-and-swap: write `new` if the value is `expected` (`None`: absent).
    CompareAndSwap {
        /// The value required.
        expected: Option<String>,
        /// The value written.
        new: String,
    },
}

/// What the operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A read's answer.
    Value(Option<String>),
    /// A write or delete that was acknowledged.
    Done,
    /// A compare-and-swap's answer: whether it swapped.
    Swapped(bool),
    /// No answer (timeout, lost connection): the operation may or may not have
    /// taken effect, at any time after its call.
    Unknown,
}

/// One operation of a history. Times are in any monotonic unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The key.
    pub key: String,
    /// What was done.
    pub operation: Operation,
    /// When the call was made.
    pub call: u64,
    /// When the answer arrived (ignored for [`Outcome::Unknown`]).
    pub ret: u64,
    /// The answer.
    pub outcome: Outcome,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history has no linearization.
    pub key: String,
    /// That key's operations, for the report.
    pub events: Vec<Event>,
    /// The search gave up after [`SEARCH_STATES_MAX`] states without deciding: the
    /// history may be linearizable, but the check cannot say so.
    pub inconclusive: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.inconclusive {
            writeln!(
                f,
                "the search for a linearization of key {:?} gave up after {SEARCH_STATES_MAX} \
                 states (inconclusive, not a proof of a violation); its {} operations:",
                self.key,
                self.events.len()
            )?;
        } else {
            writeln!(
                f,
                "no linearization for key {:?}; its {} operations:",
                self.key,
                self.events.len()
            )?;
        }
        for event in &self.events {
            writeln!(
                f,
                "  [{}, {}] {:?} -> {:?}",
                event.call, event.ret, event.operation, event.outcome
            )?;
        }
        Ok(())
    }
}

/// Most search states explored for one key before the check gives up (and fails,
/// so an inconclusive check never passes).
pub const SEARCH_STATES_MAX: usize = 5_000_000;

/// Checks a history; `Err` names the first key with no linearization, or whose
/// search was too large to finish ([`Violation::inconclusive`]).
pub fn check_linearizable(history: &[Event]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for event in history {
        by_key.entry(&event.key).or_default().push(event.clone());
    }
    for (key, events) in by_key {
        let verdict = search(&events, SEARCH_STATES_MAX);
        if verdict != Verdict::Linearizable {
            return Err(Violation {
                key: key.to_string(),
                events,
                inconclusive: verdict == Verdict::Inconclusive,
            });
        }
    }
    Ok(())
}

/// `history` without the unanswered writes that the store's own `store_history`
/// shows never took effect: a put or compare-and-swap whose value the store never
/// wrote to the key. (Values must be unique per write, as the harness makes
/// them.)
///
/// This only ever helps the search, never the verdict: an unanswered operation may
/// be linearized after every other one, which is the same as leaving it out, so
/// whatever linearization the shorter history has, the full one has too. If the
/// store's history were wrong and a dropped write did take effect, a read that saw
/// it would have nothing to explain it and the check would fail — a false alarm
/// at worst, never a missed violation.
pub fn without_unapplied_unknowns(history: &[Event], store_history: &[Change]) -> Vec<Event> {
    let written: HashSet<(&str, &str)> = store_history
        .iter()
        .filter_map(|change| Some((change.key.as_str(), change.value.as_deref()?)))
        .collect();
    history
        .iter()
        .filter(|event| {
            let value = match &event.operation {
                Operation::Put(value) | Operation::CompareAndSwap { new: value, .. } => value,
                Operation::Get | Operation::Delete => return true,
            };
            event.outcome != Outcome::Unknown || written.contains(&(event.key.as_str(), value))
        })
        .cloned()
        .collect()
}

/// The result of searching one key's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    NotLinearizable,
    Inconclusive,
}

/// The register's value, interned: 0 is "absent", other numbers stand for the
/// values of one key's history.
type State = u32;

/// An operation compiled against interned values.
#[derive(Debug, Clone, Copy)]
enum Effect {
    Read,
    Write(State),
    CompareAndSwap { expected: State, new: State },
}

/// An answer compiled against interned values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Value(State),
    Done,
    Swapped(bool),
    Unknown,
}

/// Applies an operation to `state`; the new state if the answer is what the
/// register would give (any answer fits an unknown one).
fn step(state: State, effect: Effect, answer: Answer) -> Option<State> {
    let (next, expected_answer) = match effect {
        Effect::Read => (state, Answer::Value(state)),
        Effect::Write(new) => (new, Answer::Done),
        Effect::CompareAndSwap { expected, new } => {
            if state == expected {
                (new, Answer::Swapped(true))
            } else {
                (state, Answer::Swapped(false))
            }
        }
    };
    (answer == Answer::Unknown || answer == expected_answer).then_some(next)
}

/// Interns one key's values.
#[derive(Default)]
struct Values<'a> {
    ids: HashMap<&'a str, State>,
}

impl<'a> Values<'a> {
    fn id(&mut self, value: Option<&'a str>) -> State {
        let Some(value) = value else { return 0 };
        let next = State::try_from(self.ids.len() + 1).unwrap_or(State::MAX);
        *self.ids.entry(value).or_insert(next)
    }

    fn compile(&mut self, event: &'a Event) -> (Effect, Answer) {
        let effect = match &event.operation {
            Operation::Get => Effect::Read,
            Operation::Put(value) => Effect::Write(self.id(Some(value))),
            Operation::Delete => Effect::Write(0),
            Operation::CompareAndSwap { expected, new } => Effect::CompareAndSwap {
                expected: self.id(expected.as_deref()),
                new: self.id(Some(new)),
            },
        };
        let answer = match &event.outcome {
            Outcome::Value(value) => Answer::Value(self.id(value.as_deref())),
            Outcome::Done => Answer::Done,
            Outcome::Swapped(swapped) => Answer::Swapped(*swapped),
            Outcome::Unknown => Answer::Unknown,
        };
        (effect, answer)
    }
}

/// A 128-bit word per operation for the Zobrist hash of linearized sets, from a
/// fixed SplitMix64 stream (the search is deterministic).
fn zobrist_words(count: usize) -> Vec<u128> {
    let mut seed: u64 = 0x5EED_0F5E_A2C4;
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..count)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

/// The call and return entries of a history in time order, as a doubly linked
/// list that entries can be lifted out of and put back into.
struct EntryList {
    /// For entry `e` (`2 * op` is op's call, `2 * op + 1` its return), the next and
    /// previous entries; index `head` is the list's head.
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl EntryList {
    /// Entries ordered by time, a call before a return at the same time (an
    /// operation called when another returned may still go before it).
    fn new(times: &[(u64, u64)]) -> EntryList {
        let mut order: Vec<usize> = (0..times.len() * 2).collect();
        order.sort_by_key(|entry| {
            let (call, ret) = times[entry / 2];
            if entry.is_multiple_of(2) {
                (call, 0)
            } else {
                (ret, 1)
            }
        });
        let head = order.len();
        let mut next = vec![head; head + 1];
        let mut prev = vec![head; head + 1];
        let mut last = head;
        for entry in order {
            next[last] = entry;
            prev[entry] = last;
            last = entry;
        }
        next[last] = head;
        prev[head] = last;
        EntryList { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn remove(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Puts back an entry removed last (its own links are still intact).
    fn restore(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        self.prev[next] = entry;
    }

    /// Takes operation `op`'s call and return out of the list.
    fn lift(&mut self, op: usize) {
        self.remove(2 * op);
        self.remove(2 * op + 1);
    }

    /// Undoes [`EntryList::lift`] of `op` (lifts are undone in reverse order).
    fn unlift(&mut self, op: usize) {
        self.restore(2 * op + 1);
        self.restore(2 * op);
    }
}

/// Searches for a linearization of one key's operations, remembering at most
/// `states_max` states.
fn search(events: &[Event], states_max: usize) -> Verdict {
    let mut values = Values::default();
    let compiled: Vec<(Effect, Answer)> =
        events.iter().map(|event| values.compile(event)).collect();
    // Unanswered operations may take effect at any time after their call.
    let times: Vec<(u64, u64)> = events
        .iter()
        .map(|event| {
            let ret = if event.outcome == Outcome::Unknown {
                u64::MAX
            } else {
                event.ret
            };
            (event.call, ret)
        })
        .collect();
    let words = zobrist_words(events.len());
    let mut list = EntryList::new(&times);
    let mut linearized: u128 = 0;
    let mut state: State = 0;
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    // The operations linearized so far, with the state before each.
    let mut chosen: Vec<(usize, State)> = Vec::new();
    let mut entry = list.first();
    loop {
        if entry == list.head {
            return Verdict::Linearizable;
        }
        let op = entry / 2;
        if entry.is_multiple_of(2) {
            // A call: try linearizing its operation next.
            if let Some(next_state) = step(state, compiled[op].0, compiled[op].1) {
                let next_linearized = linearized ^ words[op];
                if seen.insert((next_linearized, next_state)) {
                    if seen.len() > states_max {
                        return Verdict::Inconclusive;
                    }
                    chosen.push((op, state));
                    linearized = next_linearized;
                    state = next_state;
                    list.lift(op);
                    entry = list.first();
                    continue;
                }
            }
            entry = list.next[entry];
        } else {
            // The first return left: nothing after it may go before it. If it is
            // an unanswered operation's, every answered one is linearized and the
            // unanswered ones can follow in any order.
            if compiled[op].1 == Answer::Unknown {
                return Verdict::Linearizable;
            }
            let Some((last, previous)) = chosen.pop() else {
                return Verdict::NotLinearizable;
            };
            list.unlift(last);
            linearized ^= words[last];
            state = previous;
            entry = list.next[2 * last];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(call: u64, ret: u64, operation: Operation, outcome: Outcome) -> Event {
        Event {
            key: "k".into(),
            operation,
            call,
            ret,
            outcome,
        }
    }

    fn put(call: u64, ret: u64, value: &str) -> Event {
        event(call, ret, Operation::Put(value.into()), Outcome::Done)
    }

    fn get(call: u64, ret: u64, value: Option<&str>) -> Event {
        event(
            call,
            ret,
            Operation::Get,
            Outcome::Value(value.map(str::to_string)),
        )
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            put(0, 1, "a"),
            get(2, 3, Some("a")),
            put(4, 5, "b"),
            get(6, 7, Some("b")),
        ];
        assert!(check_linearizable(&history).is_ok());
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The read overlaps the write: it may see the old or the new value.
        let history = [
            put(0, 1, "a"),
            put(2, 6, "b"),
            get(3, 5, Some("a")),
            get(4, 7, Some("b")),
        ];
        assert!(check_linearizable(&history).is_ok());
    }

    #[test]
    fn stale_read_is_caught() {
        // "b" was acknowledged before the read began, yet the read saw "a".
        let history = [put(0, 1, "a"), put(2, 3, "b"), get(4, 5, Some("a"))];
        match check_linearizable(&history) {
            Err(violation) => assert_eq!(violation.key, "k"),
            Ok(()) => panic!("a stale read passed the check"),
        }
    }

    #[test]
    fn lost_write_is_caught() {
        let history = [put(0, 1, "a"), get(2, 3, None)];
        assert!(check_linearizable(&history).is_err());
    }

    #[test]
    fn read_going_back_in_time_is_caught() {
        // Two sequential reads see "b" then "a" while "b" replaced "a".
        let history = [
            put(0, 1, "a"),
            put(2, 10, "b"),
            get(3, 4, Some("b")),
            get(5, 6, Some("a")),
        ];
        assert!(check_linearizable(&history).is_err());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_apply() {
        let maybe = event(0, 1, Operation::Put("x".into()), Outcome::Unknown);
        assert!(check_linearizable(&[maybe.clone(), get(2, 3, None)]).is_ok());
        assert!(check_linearizable(&[maybe.clone(), get(2, 3, Some("x"))]).is_ok());
        // But it cannot take effect before it was called.
        let late = event(5, 6, Operation::Put("x".into()), Outcome::Unknown);
        assert!(check_linearizable(&[late, get(2, 3, Some("x"))]).is_err());
    }

    #[test]
    fn compare_and_swap_follows_the_register() {
        let cas = |call, ret, expected: Option<&str>, new: &str, swapped| {
            event(
                call,
                ret,
                Operation::CompareAndSwap {
                    expected: expected.map(str::to_string),
                    new: new.into(),
                },
                Outcome::Swapped(swapped),
            )
        };
        assert!(check_linearizable(&[
            put(0, 1, "a"),
            cas(2, 3, Some("a"), "b", true),
            get(4, 5, Some("b"))
        ])
        .is_ok());
        // Two sequential swaps from the same value cannot both succeed.
        assert!(check_linearizable(&[
            put(0, 1, "a"),
            cas(2, 3, Some("a"), "b", true),
            cas(4, 5, Some("a"), "c", true)
        ])
        .is_err());
        assert!(check_linearizable(&[cas(0, 1, None, "a", true), get(2, 3, Some("a"))]).is_ok());
    }

    #[test]
    fn a_search_that_runs_out_of_states_is_inconclusive() {
        let history = [put(0, 1, "a"), put(2, 3, "b"), get(4, 5, Some("b"))];
        assert_eq!(search(&history, 100), Verdict::Linearizable);
        assert_eq!(search(&history, 1), Verdict::Inconclusive);
        let violation = Violation {
            key: "k".into(),
            events: history.to_vec(),
            inconclusive: true,
        };
        assert!(violation.to_string().contains("inconclusive"));
    }

    #[test]
    fn many_unanswered_writes_are_searched_quickly() {
        // 8 clients, each with an unanswered write left hanging every few
        // operations: the search must not try every placement of every one.
        let mut history = Vec::new();
        let mut value = 0;
        for round in 0..60u64 {
            let base = round * 100;
            value += 1;
            history.push(put(base, base + 10, &format!("v{value}")));
            history.push(get(base + 20, base + 30, Some(&format!("v{value}"))));
            for client in 0..6 {
                history.push(event(
                    base + 40 + client,
                    0,
                    Operation::Put(format!("lost{round}-{client}")),
                    Outcome::Unknown,
                ));
            }
            history.push(get(base + 60, base + 70, Some(&format!("v{value}"))));
        }
        // The unanswered puts were never seen: each must be placed after the last
        // read of its round (or left out), which the search must find without
        // trying their every order.
        let started = std::time::Instant::now();
        assert!(check_linearizable(&history).is_ok());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn unapplied_unknown_writes_are_dropped() {
        let store = [Change::put(2, "k", "applied")];
        let history = [
            event(0, 0, Operation::Put("applied".into()), Outcome::Unknown),
            event(0, 0, Operation::Put("lost".into()), Outcome::Unknown),
            event(
                0,
                0,
                Operation::CompareAndSwap {
                    expected: None,
                    new: "lost-too".into(),
                },
                Outcome::Unknown,
            ),
            event(0, 0, Operation::Delete, Outcome::Unknown),
            put(1, 2, "answered"),
        ];
        let kept = without_unapplied_unknowns(&history, &store);
        let kept: Vec<&Operation> = kept.iter().map(|event| &event.operation).collect();
        assert_eq!(
            kept,
            [
                &Operation::Put("applied".into()),
                &Operation::Delete,
                &Operation::Put("answered".into())
            ]
        );
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(0, 1, "z");
        other.key = "other".into();
        let history = [put(0, 1, "a"), other, get(2, 3, Some("a"))];
        assert!(check_linearizable(&history).is_ok());
    }
}
