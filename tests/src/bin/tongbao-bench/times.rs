//! When each (channel, seq) reached a subscriber, kept per channel so that
//! noting one is a look-up among a few channel names and one insert of a
//! number: the bench's own bookkeeping shares the cores with the hub and
//! the clients it measures, so it should cost as little as it can.

use std::collections::HashMap;
use std::time::Instant;

/// A time per (channel, seq).
#[derive(Default)]
pub struct Times {
    channels: Vec<(String, HashMap<u64, Instant>)>,
    len: usize,
}

impl Times {
    /// Where `channel`'s times are, added if new. A run has a few channels.
    pub fn channel(&mut self, channel: &str) -> usize {
        if let Some(i) = self.channels.iter().position(|(c, _)| c == channel) {
            return i;
        }
        self.channels.push((channel.to_string(), HashMap::new()));
        self.channels.len() - 1
    }

    /// Notes `at` for `seq` of the channel at `channel` (from
    /// [`Times::channel`]) unless one is noted already; says whether it was
    /// new.
    pub fn note(&mut self, channel: usize, seq: u64, at: Instant) -> bool {
        let Some((_, times)) = self.channels.get_mut(channel) else {
            return false;
        };
        let new = match times.entry(seq) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
                true
            }
        };
        self.len += usize::from(new);
        new
    }

    pub fn get(&self, channel: &str, seq: u64) -> Option<Instant> {
        let (_, times) = self.channels.iter().find(|(c, _)| c == channel)?;
        times.get(&seq).copied()
    }

    pub fn contains(&self, channel: &str, seq: u64) -> bool {
        self.get(channel, seq).is_some()
    }

    /// Every (channel, seq) noted.
    pub fn keys(&self) -> impl Iterator<Item = (&str, u64)> {
        self.channels
            .iter()
            .flat_map(|(c, times)| times.keys().map(move |s| (c.as_str(), *s)))
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
}
