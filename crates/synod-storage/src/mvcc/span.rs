//! etcd's key-range convention, resolved once.

/// The keys a request covers, from its `key` and `range_end` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpan<'a> {
    /// Exactly one key (`range_end` empty).
    Single(&'a [u8]),
    /// Keys from `start` up to `end` (exclusive); `None` means no upper bound
    /// (`range_end` is `"\0"`).
    Range {
        /// First key covered.
        start: &'a [u8],
        /// First key past the span, if any.
        end: Option<&'a [u8]>,
    },
}

impl<'a> KeySpan<'a> {
    /// Interprets a request's `key` and `range_end` as etcd does.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::Range {
                start: key,
                end: None,
            },
            end => KeySpan::Range {
                start: key,
                end: Some(end),
            },
        }
    }

    /// Whether `key` lies in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySpan::Single(single) => *single == key,
            KeySpan::Range { start, end } => key >= *start && end.is_none_or(|end| key < end),
        }
    }

    /// Whether the span covers no key at all (an end at or before its start).
    pub fn is_empty(&self) -> bool {
        match self {
            KeySpan::Single(_) => false,
            KeySpan::Range { start, end } => end.is_some_and(|end| end <= *start),
        }
    }

    /// Whether two spans share a key. Used to find duplicate keys in a Txn.
    pub fn overlaps(&self, other: &KeySpan<'_>) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let (a_start, a_end) = self.bounds();
        let (b_start, b_end) = other.bounds();
        let a_before_b_ends = match b_end {
            Bound::Inclusive(end) => a_start <= end,
            Bound::Exclusive(end) => a_start < end,
            Bound::None => true,
        };
        let b_before_a_ends = match a_end {
            Bound::Inclusive(end) => b_start <= end,
            Bound::Exclusive(end) => b_start < end,
            Bound::None => true,
        };
        a_before_b_ends && b_before_a_ends
    }

    fn bounds(&self) -> (&[u8], Bound<'_>) {
        match self {
            KeySpan::Single(key) => (key, Bound::Inclusive(key)),
            KeySpan::Range { start, end } => (
                start,
                match end {
                    Some(end) => Bound::Exclusive(end),
                    None => Bound::None,
                },
            ),
        }
    }
}

enum Bound<'a> {
    Inclusive(&'a [u8]),
    Exclusive(&'a [u8]),
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_etcd_conventions() {
        assert_eq!(KeySpan::new(b"a", b""), KeySpan::Single(b"a"));
        assert!(KeySpan::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeySpan::new(b"b", b"\0").contains(b"a"));
        assert!(KeySpan::new(b"a", b"c").contains(b"b"));
        assert!(!KeySpan::new(b"a", b"c").contains(b"c"));
        assert!(KeySpan::new(b"b", b"a").is_empty());
    }

    #[test]
    fn detects_overlaps() {
        let single = KeySpan::new(b"b", b"");
        assert!(single.overlaps(&KeySpan::new(b"a", b"c")));
        assert!(!single.overlaps(&KeySpan::new(b"c", b"d")));
        assert!(KeySpan::new(b"a", b"c").overlaps(&KeySpan::new(b"b", b"\0")));
        assert!(!KeySpan::new(b"a", b"b").overlaps(&KeySpan::new(b"b", b"c")));
        assert!(single.overlaps(&KeySpan::new(b"b", b"")));
    }
}
