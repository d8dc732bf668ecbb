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

/// Appends `items` (seq, channel; one per position) as stretches: varints
/// of the count, the name's length, the name, then the first seq.
pub(super) fn encode(items: &[(u64, &str)], out: &mut Vec<u8>) {
    let mut rest = items;
    while let Some(((seq, channel), _)) = rest.split_first() {
        let n = rest
            .iter()
            .zip(*seq..)
            .take_while(|((s, c), want)| s == want && c == channel)
            .count()
            .max(1);
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
pub(super) fn decode(bytes: &[u8], first: u64, count: u64) -> Option<Vec<InboxItem>> {
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(bytes.len()));
    let mut rest = bytes;
    // Positions decoded so far; `first + done` never passes the run's last.
    let mut done = 0u64;
    while !rest.is_empty() {
        let n = prost::encoding::decode_varint(&mut rest).ok()?;
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        let (name, tail) = rest.split_at_checked(len)?;
        rest = tail;
        let seq = prost::encoding::decode_varint(&mut rest).ok()?;
        if n == 0 || count - done < n || seq.checked_add(n - 1).is_none() {
            return None;
        }
        let channel = String::from_utf8_lossy(name).into_owned();
        for i in 0..n {
            out.push(InboxItem {
                cursor: first + done + i,
                seq: seq + i,
                channel: channel.clone(),
            });
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
}
