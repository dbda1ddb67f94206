//! The key type of the key index.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

use compact_bytes::CompactBytesSlice;

/// A key as the index holds it: up to 15 bytes inline, in the 16 bytes a boxed
/// slice takes, and longer keys on the heap. Most keys are short, so most
/// entries need no allocation of their own, and walking the tree compares keys
/// in the node it reads instead of following a pointer for every comparison
/// (the walk was 3% of a member's CPU under puts at 128 clients, two thirds of
/// it in those comparisons).
#[derive(Clone, PartialEq, Eq)]
pub struct IndexKey(CompactBytesSlice);

const _: () = assert!(std::mem::size_of::<IndexKey>() == std::mem::size_of::<Box<[u8]>>());

impl IndexKey {
    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl From<&[u8]> for IndexKey {
    fn from(key: &[u8]) -> Self {
        Self(CompactBytesSlice::new(key))
    }
}

/// Orders as the bytes do, which `Borrow<[u8]>` requires: the index is looked up,
/// and ranged over, by plain byte slices.
impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_slice().escape_ascii().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_compares_as_the_bytes_do_inline_or_not() {
        let keys: [&[u8]; 6] = [
            b"",
            b"a",
            b"a\0",
            b"fifteen bytes!!",
            b"sixteen bytes!!!",
            b"\xffa much longer key that lives on the heap",
        ];
        for a in keys {
            for b in keys {
                let (ka, kb) = (IndexKey::from(a), IndexKey::from(b));
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b);
                assert_eq!(ka.as_slice(), a);
                assert_eq!(Borrow::<[u8]>::borrow(&ka), a);
            }
        }
    }
}
