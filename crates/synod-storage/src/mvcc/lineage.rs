//! What a put carries forward from the version it replaces (create revision,
//! version count, lease), packed small enough for the key index to keep beside
//! every version.

/// A version's create revision and version count, and whether it has a lease,
/// packed into 8 bytes. A put carries the first two forward from the version it
/// replaces, and needs the lease only when there is one; with the lineage in the
/// index, a put of a key without a lease reads nothing back from the database.
/// Numbers too large to pack leave the lineage unknown, and the put reads the
/// version as it did without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage {
    /// `main - create_revision`; [`Lineage::UNKNOWN_BACK`] when unknown.
    created_back: u32,
    /// The version count, with [`Lineage::LEASED`] set when the version has a lease.
    count: u32,
}

/// A lineage spelled out: what [`Lineage`] packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownLineage {
    /// The key's create revision.
    pub create_revision: i64,
    /// Writes since that creation, this one included.
    pub version: i64,
    /// Whether the version is attached to a lease.
    pub leased: bool,
}

impl Lineage {
    const UNKNOWN_BACK: u32 = u32::MAX;
    const LEASED: u32 = 1 << 31;

    /// A lineage that says nothing.
    pub const UNKNOWN: Lineage = Lineage {
        created_back: Self::UNKNOWN_BACK,
        count: 0,
    };

    /// The lineage of the version at main revision `main` that `known` describes,
    /// or [`Lineage::UNKNOWN`] when its numbers do not pack.
    pub fn new(main: i64, known: KnownLineage) -> Lineage {
        let back = main
            .checked_sub(known.create_revision)
            .and_then(|back| u32::try_from(back).ok())
            .filter(|back| *back != Self::UNKNOWN_BACK);
        let count = u32::try_from(known.version)
            .ok()
            .filter(|count| count & Self::LEASED == 0);
        match (back, count) {
            (Some(created_back), Some(count)) => Lineage {
                created_back,
                count: if known.leased {
                    count | Self::LEASED
                } else {
                    count
                },
            },
            _ => Self::UNKNOWN,
        }
    }

    /// What this lineage of a version at main revision `main` says, if it is known.
    pub fn known(self, main: i64) -> Option<KnownLineage> {
        if self.created_back == Self::UNKNOWN_BACK {
            return None;
        }
        Some(KnownLineage {
            create_revision: main - i64::from(self.created_back),
            version: i64::from(self.count & !Self::LEASED),
            leased: self.count & Self::LEASED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lineage_packs_what_fits_and_is_unknown_otherwise() {
        let known = |create_revision, version, leased| KnownLineage {
            create_revision,
            version,
            leased,
        };
        for (main, lineage) in [
            (9, known(3, 7, false)),
            (9, known(9, 1, true)),
            (
                i64::MAX,
                known(i64::MAX - i64::from(u32::MAX - 1), (1 << 31) - 1, true),
            ),
        ] {
            assert_eq!(Lineage::new(main, lineage).known(main), Some(lineage));
        }
        for (main, lineage) in [
            (i64::MAX, known(i64::MAX - i64::from(u32::MAX), 1, false)),
            (9, known(3, 1 << 31, false)),
            (9, known(10, 1, false)),
            (9, known(3, -1, false)),
        ] {
            assert_eq!(Lineage::new(main, lineage), Lineage::UNKNOWN);
            assert_eq!(Lineage::new(main, lineage).known(main), None);
        }
    }
}
