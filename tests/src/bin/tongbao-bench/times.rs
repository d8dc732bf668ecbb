//! When each (channel, seq) reached a subscriber, kept per channel so that
//! noting one is a look-up among a few channel names and, mostly, setting
//! a slot by seq: the bench's own bookkeeping shares the cores with the hub and
//! the clients it measures, so it should cost as little as it can.

use std::collections::HashMap;
use std::time::Instant;

/// A seq at most this far past a channel's last slot gets a slot (the
/// slots grow to it); one further goes to the map, so that a stray seq
/// cannot make the slots huge.
const MAX_GAP: u64 = 1 << 12;

/// A time per (channel, seq).
#[derive(Default)]
pub struct Times {
    channels: Vec<Channel>,
    len: usize,
}

/// One channel's times: a channel's seqs arrive in order and without gaps,
/// so most are slots counted from the first noted; the rest are in a map.
struct Channel {
    name: String,
    /// The seq of slot 0: the first noted.
    first: Option<u64>,
    slots: Vec<Option<Instant>>,
    others: HashMap<u64, Instant>,
}

impl Channel {
    fn slot(&self, seq: u64) -> Option<usize> {
        let i = seq.checked_sub(self.first?)?;
        (i <= self.slots.len() as u64 + MAX_GAP).then_some(i as usize)
    }

    /// A seq in the map stays there when the slots later grow past it.
    fn get(&self, seq: u64) -> Option<Instant> {
        let slotted = self
            .slot(seq)
            .and_then(|i| self.slots.get(i).copied().flatten());
        slotted.or_else(|| self.others.get(&seq).copied())
    }

    fn note(&mut self, seq: u64, at: Instant) -> bool {
        self.first.get_or_insert(seq);
        if !self.others.is_empty() && self.others.contains_key(&seq) {
            return false;
        }
        let Some(i) = self.slot(seq) else {
            // Not in the map: checked above.
            self.others.insert(seq, at);
            return true;
        };
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        match &mut self.slots[i] {
            Some(_) => false,
            free => {
                *free = Some(at);
                true
            }
        }
    }

    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        let slotted = (self.slots.iter().enumerate())
            .filter(|(_, t)| t.is_some())
            .filter_map(|(i, _)| self.first?.checked_add(i as u64));
        slotted.chain(self.others.keys().copied())
    }
}

impl Times {
    /// Where `channel`'s times are, added if new; its first seq noted
    /// starts its slots. A run has a few channels.
    pub fn channel(&mut self, channel: &str) -> usize {
        if let Some(i) = self.channels.iter().position(|c| c.name == channel) {
            return i;
        }
        self.channels.push(Channel {
            name: channel.to_string(),
            first: None,
            slots: Vec::new(),
            others: HashMap::new(),
        });
        self.channels.len() - 1
    }

    /// Notes `at` for `seq` of the channel at `channel` (from
    /// [`Times::channel`]) unless one is noted already; says whether it was
    /// new.
    pub fn note(&mut self, channel: usize, seq: u64, at: Instant) -> bool {
        let Some(c) = self.channels.get_mut(channel) else {
            return false;
        };
        let new = c.note(seq, at);
        self.len += usize::from(new);
        new
    }

    pub fn get(&self, channel: &str, seq: u64) -> Option<Instant> {
        self.channels.iter().find(|c| c.name == channel)?.get(seq)
    }

    pub fn contains(&self, channel: &str, seq: u64) -> bool {
        self.get(channel, seq).is_some()
    }

    /// Every (channel, seq) noted.
    pub fn keys(&self) -> impl Iterator<Item = (&str, u64)> {
        self.channels
            .iter()
            .flat_map(|c| c.seqs().map(move |s| (c.name.as_str(), s)))
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_kept_once_per_channel_and_seq() {
        let mut t = Times::default();
        let t0 = Instant::now();
        let tax = t.channel("tax");
        let finance = t.channel("finance");
        assert_eq!(t.channel("tax"), tax);
        assert!(t.note(tax, 1, t0));
        assert!(t.note(finance, 1, t0));
        let later = t0 + std::time::Duration::from_millis(5);
        assert!(!t.note(tax, 1, later), "a second note is refused");
        assert_eq!(t.get("tax", 1), Some(t0), "and changes nothing");
        assert_eq!(t.len(), 2);
        assert!(!t.contains("tax", 2));
        assert!(!t.contains("audit", 1));
        assert!(!t.note(99, 1, t0), "an unknown channel index notes nothing");
        let mut keys: Vec<_> = t.keys().collect();
        keys.sort();
        assert_eq!(keys, vec![("finance", 1), ("tax", 1)]);
    }

    #[test]
    fn seqs_before_the_first_or_far_past_it_are_kept_too() {
        let mut t = Times::default();
        let t0 = Instant::now();
        let tax = t.channel("tax");
        let far = 13 + MAX_GAP + 1;
        for seq in [10, 12, 3, far, u64::MAX - 1] {
            assert!(t.note(tax, seq, t0), "{seq}");
        }
        for seq in [10, 12, 3, far] {
            assert!(!t.note(tax, seq, t0), "{seq} noted twice");
            assert!(t.contains("tax", seq), "{seq}");
        }
        assert!(!t.contains("tax", 11), "a gap is not noted");
        assert_eq!(t.len(), 5);
        let mut keys: Vec<u64> = t.keys().map(|(_, s)| s).collect();
        keys.sort();
        assert_eq!(keys, vec![3, 10, 12, far, u64::MAX - 1]);
        // A seq put in the map stays noted once the slots grow past it.
        for seq in 13..far {
            t.note(tax, seq, t0);
        }
        assert!(!t.note(tax, far, t0), "a seq from the map, noted again");
        assert_eq!(t.get("tax", far), Some(t0));
        assert_eq!(t.keys().filter(|(_, s)| *s == far).count(), 1);
        let mut last = Times::default();
        let tax = last.channel("tax");
        assert!(last.note(tax, u64::MAX, t0), "the largest seq first");
        assert!(last.note(tax, 0, t0));
        assert!(!last.note(tax, u64::MAX, t0));
        assert_eq!(last.keys().count(), 2);
    }
}
