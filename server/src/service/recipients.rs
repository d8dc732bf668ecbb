//! Where a party sits among an entry's resolved recipients.
//!
//! Every receipt pin, inclusion proof and `GetEntry` asks this of an entry,
//! so it is on the hub's hot path: a receipt of 256 pins to entries of 13
//! recipients compared unit names one by one (each a separate heap
//! string, often not in cache) for every pin. The hub resolves an audience
//! into recipients in sorted order (a `BTreeSet`, once, at append time), so
//! a binary search finds a recipient in about four comparisons. A list not
//! in order (none is written so) is still answered exactly, by a scan when
//! the search misses: the answer is always that of a scan, only faster.

use crate::store::StoredEntry;

/// The index of `who` in `recipients` (resolved recipients, distinct), if
/// it is one of them.
pub fn position(recipients: &[String], who: &str) -> Option<usize> {
    match recipients.binary_search_by(|r| r.as_str().cmp(who)) {
        Ok(i) => Some(i),
        // A miss is the rare case (a refusal), and the only one an
        // unsorted list could get wrong.
        Err(_) => recipients.iter().position(|r| r == who),
    }
}

/// The position of `stored` in `inbox` (its place in that inbox), if the
/// entry was addressed to it.
pub fn cursor_in(stored: &StoredEntry, inbox: &str) -> Option<u64> {
    position(&stored.entry.recipients, inbox).and_then(|i| stored.cursors.get(i).copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::btree_set;
    use proptest::prelude::*;
    use tongbao_proto::pb;

    /// The rule before the search: the first recipient equal to `who`.
    fn scanned(recipients: &[String], who: &str) -> Option<usize> {
        recipients.iter().position(|r| r == who)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_each_recipient_and_no_other() {
        let r = names(&["civil-affairs", "finance", "office:m1", "tax"]);
        for (i, name) in r.iter().enumerate() {
            assert_eq!(position(&r, name), Some(i));
        }
        for other in ["", "a", "finance2", "financ", "zzz", "Tax", "tax "] {
            assert_eq!(position(&r, other), None, "{other:?}");
        }
        assert_eq!(position(&[], "tax"), None);
    }

    #[test]
    fn an_unsorted_list_is_answered_as_a_scan_would() {
        let r = names(&["tax", "finance", "civil-affairs", "police"]);
        for (i, name) in r.iter().enumerate() {
            assert_eq!(position(&r, name), Some(i), "{name}");
        }
        assert_eq!(position(&r, "health"), None);
    }

    #[test]
    fn the_cursor_is_the_recipients_own() {
        let stored = StoredEntry {
            entry: pb::Entry {
                channel: "tax".into(),
                recipients: names(&["civil-affairs", "finance", "police"]),
                ..Default::default()
            },
            leaf_hash: [0; 32],
            encoded: Default::default(),
            cursors: vec![7, 3, 11],
        };
        assert_eq!(cursor_in(&stored, "civil-affairs"), Some(7));
        assert_eq!(cursor_in(&stored, "finance"), Some(3));
        assert_eq!(cursor_in(&stored, "police"), Some(11));
        // The sender is not its own recipient, nor is anyone unnamed.
        assert_eq!(cursor_in(&stored, "tax"), None);
        assert_eq!(cursor_in(&stored, "health"), None);
        // Cursors missing (a damaged record) give no position, not a wrong one.
        let short = StoredEntry {
            cursors: vec![7],
            ..stored
        };
        assert_eq!(cursor_in(&short, "finance"), None);
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof!["[a-c][a-c-]{0,3}", "office:[a-c]{1,2}", any::<String>()]
    }

    proptest! {
        /// Sorted as the hub writes them, the search agrees with the scan
        /// for members and non-members alike.
        #[test]
        fn agrees_with_the_scan_on_sorted_lists(
            set in btree_set(name(), 0..20),
            who in name(),
        ) {
            let r: Vec<String> = set.into_iter().collect();
            prop_assert_eq!(position(&r, &who), scanned(&r, &who));
            for n in &r {
                prop_assert_eq!(position(&r, n), scanned(&r, n));
            }
        }

        /// In any order, too (distinct names, as every resolved list is).
        #[test]
        fn agrees_with_the_scan_in_any_order(
            r in btree_set(name(), 0..20)
                .prop_map(|s| s.into_iter().collect::<Vec<_>>())
                .prop_shuffle(),
            who in name(),
        ) {
            prop_assert_eq!(position(&r, &who), scanned(&r, &who));
            for n in &r {
                prop_assert_eq!(position(&r, n), scanned(&r, n));
            }
        }
    }
}
