//! The items of an inbox run as stretches (format 5 on).
//!
//! An inbox run lists, per position, the entry it delivers: its seq and
//! its channel. Written out whole (seq 8 bytes, name length 2 and the
//! name) that came to about 20 bytes a position, 250 a message at 13
//! recipients, and sled's file grows with those bytes several times over
//! (BENCHMARKS.md, "Storage per message"). The positions a commit adds to
//! an inbox mostly deliver consecutive entries of one channel (a batch
//! from one sender), so a run names each stretch of them once: how many
//! positions, the channel, the first seq; the seqs that follow are one
//! apart.

use super::InboxItem;

/// Set in a run's count field (4 bytes after its first position) when its
/// items are stretches; earlier runs, written out whole, never set it
/// (a run holds far fewer than 2^31 positions).
pub(super) const STRETCHED: u32 = 1 << 31;

/// The longest channel name a stretch holds (the policy allows far
/// shorter): a longer one read back is damage, refused before a name that
/// large is copied once per position.
pub(super) const MAX_NAME: usize = 255;

/// Whether `items` can be written as stretches: every channel name within
/// [`MAX_NAME`] (a run that cannot is written out whole).
pub(super) fn fits(items: &[(u64, &str)]) -> bool {
    items.iter().all(|(_, c)| c.len() <= MAX_NAME)
}

/// Appends `items` (seq, channel; one per position) as stretches: varints
/// of the count, the name's length, the name, then the first seq.
pub(super) fn encode(items: &[(u64, &str)], out: &mut Vec<u8>) {
    let mut rest = items;
    while let Some(((seq, channel), tail)) = rest.split_first() {
        // The positions after the first that go on by one seq each.
        let mut want = seq.checked_add(1);
        let more = tail
            .iter()
            .take_while(|(s, c)| {
                let on = Some(*s) == want && c == channel;
                want = s.checked_add(1);
                on
            })
            .count();
        let n = more + 1;
        prost::encoding::encode_varint(n as u64, out);
        prost::encoding::encode_varint(channel.len() as u64, out);
        out.extend_from_slice(channel.as_bytes());
        prost::encoding::encode_varint(*seq, out);
        rest = &rest[n..];
    }
}

/// The bytes [`encode`] writes for `items`.
pub(super) fn encoded_len(items: &[(u64, &str)]) -> usize {
    let mut out = Vec::new();
    encode(items, &mut out);
    out.len()
}

/// Decodes `count` positions from `first` on out of `bytes` (all of them
/// stretches); None if they do not hold exactly that.
#[cfg(test)]
fn decode(bytes: &[u8], first: u64, count: u64) -> Option<Vec<InboxItem>> {
    decode_window(bytes, first, count, first, usize::MAX)
}

/// The positions from `from` on, `limit` of them at most, of the `count`
/// positions from `first` on in `bytes`; None if the stretches do not
/// hold exactly `count` positions. The whole run is checked, but a name
/// is copied only for the positions returned: a page of a long run costs
/// its own items, not the run's.
pub(super) fn decode_window(
    bytes: &[u8],
    first: u64,
    count: u64,
    from: u64,
    limit: usize,
) -> Option<Vec<InboxItem>> {
    // Positions decoded so far; `first + done` never passes the run's last.
    let mut done = 0u64;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = prost::encoding::decode_varint(&mut rest).ok()?;
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        if len > MAX_NAME {
            return None;
        }
        let (name, tail) = rest.split_at_checked(len)?;
        rest = tail;
        let seq = prost::encoding::decode_varint(&mut rest).ok()?;
        if n == 0 || count - done < n || seq.checked_add(n - 1).is_none() {
            return None;
        }
        // This stretch's positions, `at` to `at + n - 1`, all within the run.
        let at = first.checked_add(done)?;
        let skip = from.saturating_sub(at).min(n);
        let take = (n - skip).min(limit.saturating_sub(out.len()) as u64);
        if take > 0 {
            let channel = String::from_utf8_lossy(name).into_owned();
            for i in skip..skip + take {
                out.push(InboxItem {
                    cursor: at.checked_add(i)?,
                    seq: seq.checked_add(i)?,
                    channel: channel.clone(),
                });
            }
        }
        done += n;
    }
    (done == count).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_from_one_sender_is_one_stretch() {
        let items: Vec<(u64, &str)> = (40..104).map(|seq| (seq, "finance")).collect();
        let mut v = Vec::new();
        encode(&items, &mut v);
        assert_eq!(v.len(), 1 + 1 + 7 + 1, "{v:?}");
        let read = decode(&v, 7, 64).unwrap_or_default();
        assert_eq!(read.len(), 64);
        assert_eq!(
            read[63],
            InboxItem {
                cursor: 70,
                seq: 103,
                channel: "finance".into()
            }
        );
    }

    #[test]
    fn a_gap_or_another_channel_begins_a_stretch() {
        let items = [(1, "tax"), (2, "tax"), (4, "tax"), (5, "pbc"), (6, "tax")];
        let mut v = Vec::new();
        encode(&items, &mut v);
        let read = decode(&v, 0, 5).unwrap_or_default();
        let got: Vec<(u64, &str)> = read.iter().map(|i| (i.seq, i.channel.as_str())).collect();
        assert_eq!(got, items);
        assert!(
            decode(&v, 0, 4).is_none(),
            "more positions than the run says"
        );
        assert!(
            decode(&v, 0, 6).is_none(),
            "fewer positions than the run says"
        );
        assert!(decode(&v[..v.len() - 1], 0, 5).is_none(), "cut short");
        assert!(decode(&[0, 0, 0], 0, 0).is_none(), "an empty stretch");
    }

    #[test]
    fn a_name_longer_than_a_stretch_holds_is_refused() {
        let long = "a".repeat(MAX_NAME + 1);
        let mut v = Vec::new();
        encode(&[(1, long.as_str())], &mut v);
        assert!(decode(&v, 0, 1).is_none(), "a name of 256 bytes");
        assert!(!fits(&[(1, "tax"), (2, long.as_str())]));
        let longest = "a".repeat(MAX_NAME);
        let mut v = Vec::new();
        encode(&[(1, longest.as_str())], &mut v);
        assert_eq!(decode(&v, 0, 1).map(|i| i.len()), Some(1));
    }

    #[test]
    fn the_last_seqs_end_a_stretch_without_overflow() {
        let items = [(u64::MAX - 1, "tax"), (u64::MAX, "tax"), (0, "tax")];
        let mut v = Vec::new();
        encode(&items, &mut v);
        let read = decode(&v, u64::MAX - 2, 3).unwrap_or_default();
        let got: Vec<(u64, u64)> = read.iter().map(|i| (i.cursor, i.seq)).collect();
        assert_eq!(
            got,
            [
                (u64::MAX - 2, u64::MAX - 1),
                (u64::MAX - 1, u64::MAX),
                (u64::MAX, 0)
            ]
        );
    }
}
