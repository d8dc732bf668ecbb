//! One access-log record as it lies in a records file: a checksummed
//! frame, so that a write a crash cut short, or a byte changed on disk,
//! is found where it is instead of being read as a record.
//!
//! A frame is `length` (u32, of what follows the checksum), `crc32` (of
//! what follows it), then the record: `n` (u64), `at_micros` (i64),
//! `durable` (u64: how many records were synced when it was written), and
//! its line; integers little-endian. `durable` tells a crash's torn write
//! from a changed record: a bad frame at record `n` followed by a whole
//! one saying more than `n` were synced was durable, so no crash tore it.

use crate::store::access::AccessRow;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The frame's header: length and checksum.
const HEADER: u64 = 8;
/// The record's fixed part: its number, its time and the durable mark.
const FIXED: usize = 24;
/// The longest record a frame may hold (a record is bounded far below).
const MAX_BODY: u64 = 16 << 20;

/// Appends the frame of `row` to `out`, written when `durable` records
/// were synced.
pub fn encode(row: &AccessRow, durable: u64, out: &mut Vec<u8>) {
    let body_len = FIXED + row.line.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&row.n.to_le_bytes());
    out.extend_from_slice(&row.at_micros.to_le_bytes());
    out.extend_from_slice(&durable.to_le_bytes());
    out.extend_from_slice(&row.line);
    let crc = crc32fast::hash(&out[start + HEADER as usize..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the next frame of a file is.
pub enum Frame {
    /// A whole frame, checksum right, ending at `end`, written when
    /// `durable` records were synced.
    Whole {
        row: AccessRow,
        end: u64,
        durable: u64,
    },
    /// A frame of a plausible length whose checksum fails, ending at
    /// `end`: a changed record, or the last write cut short.
    Garbled { end: u64 },
    /// A length that cannot be, or a frame running past the file's end:
    /// nothing from here on can be read as frames.
    Cut,
    /// The file ends here.
    End,
}

/// Reads frames front to back from an offset.
pub struct Frames {
    reader: BufReader<File>,
    offset: u64,
    len: u64,
}

impl Frames {
    /// From `offset` of `path` (the file's length is taken now: what is
    /// appended later is not read).
    pub fn open(path: &Path, offset: u64) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 16, file);
        reader.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            reader,
            offset,
            len,
        })
    }

    /// Where the next frame begins.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's length when opened: where reading stops.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    pub fn next_frame(&mut self) -> std::io::Result<Frame> {
        if self.offset >= self.len {
            return Ok(Frame::End);
        }
        if self.len - self.offset < HEADER {
            return Ok(Frame::Cut);
        }
        let mut header = [0u8; HEADER as usize];
        self.reader.read_exact(&mut header)?;
        let body_len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = self.offset + HEADER + body_len;
        if body_len < FIXED as u64 || body_len > MAX_BODY || end > self.len {
            // Nothing after a bad length can be trusted as a frame; the
            // reader is left where it was.
            self.reader.seek(SeekFrom::Start(self.offset))?;
            return Ok(Frame::Cut);
        }
        let mut body = vec![0u8; body_len as usize];
        self.reader.read_exact(&mut body)?;
        self.offset = end;
        if crc32fast::hash(&body) != crc {
            return Ok(Frame::Garbled { end });
        }
        let line = body.split_off(FIXED);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[i * 8..i * 8 + 8]);
            w
        };
        Ok(Frame::Whole {
            row: AccessRow {
                n: u64::from_le_bytes(word(0)),
                at_micros: i64::from_le_bytes(word(1)),
                line,
            },
            end,
            durable: u64::from_le_bytes(word(2)),
        })
    }
}

/// Where a whole frame of a record numbered after `n` begins in `path`
/// past `from` and before `len`, if one does. Reads the file from `from`
/// to `len` (the tail of one record file at most; a length taken once,
/// so that a writer appending meanwhile adds nothing); a position is
/// checksummed only when its length and record number could be a
/// frame's there.
pub fn whole_frame_after(path: &Path, from: u64, n: u64, len: u64) -> std::io::Result<Option<u64>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.take(len.saturating_sub(from)).read_to_end(&mut tail)?;
    let word = |at: usize| -> Option<u64> {
        let b = tail.get(at..at + 8)?;
        Some(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    };
    let most = n.saturating_add(tail.len() as u64 / (HEADER + FIXED as u64));
    for at in 1..tail.len() {
        let Some(head) = tail.get(at..at + HEADER as usize) else {
            break;
        };
        let body_len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let end = at as u64 + HEADER + body_len;
        if body_len < FIXED as u64 || body_len > MAX_BODY || end > tail.len() as u64 {
            continue;
        }
        let body_at = at + HEADER as usize;
        if !word(body_at).is_some_and(|m| m > n && m <= most) {
            continue;
        }
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if crc32fast::hash(&tail[body_at..end as usize]) == crc {
            return Ok(Some(from + at as u64));
        }
    }
    Ok(None)
}

/// What the whole frames of records after `n` in `path` past `from` (and
/// before `len`) say, if there is one: the last one's record, and the
/// most records any says were synced when it was written (see the module
/// doc). A bad frame of a record before that one and below that count
/// was durable.
pub fn durable_after(
    path: &Path,
    from: u64,
    n: u64,
    len: u64,
) -> std::io::Result<Option<(u64, u64)>> {
    let mut most = None;
    let (mut from, mut last) = (from, n);
    while let Some(at) = whole_frame_after(path, from, last, len)? {
        let mut frames = Frames::open(path, at)?;
        // A whole frame found is read on from; the search goes on past
        // the first frame that is not whole and after the last.
        from = loop {
            let here = frames.offset();
            match frames.next_frame()? {
                Frame::Whole { row, durable, end } if row.n > last && end <= len => {
                    most = most.max(Some(durable));
                    last = row.n;
                }
                _ => break here,
            }
        };
    }
    Ok(most.map(|most| (last, most)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_a_changed_or_cut_one_is_told_apart() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let mut bytes = Vec::new();
        for n in 0..3u64 {
            let row = AccessRow {
                n,
                at_micros: -(n as i64),
                line: format!("line {n}").into_bytes(),
            };
            encode(&row, n + 7, &mut bytes);
        }
        let one = bytes.len() / 3;
        let mut changed = bytes.clone();
        changed[one + 20] ^= 1;
        changed.truncate(bytes.len() - 2);
        std::fs::write(&path, &changed)?;
        let mut frames = Frames::open(&path, 0)?;
        match frames.next_frame()? {
            Frame::Whole { row, end, durable } => {
                assert_eq!((row.n, row.at_micros, row.line), (0, 0, b"line 0".to_vec()));
                assert_eq!((end, durable), (one as u64, 7));
            }
            _ => panic!("the first frame is whole"),
        }
        assert!(matches!(frames.next_frame()?, Frame::Garbled { .. }));
        assert!(matches!(frames.next_frame()?, Frame::Cut));
        assert_eq!(frames.offset(), 2 * one as u64);
        Ok(())
    }

    #[test]
    fn what_frames_after_say_is_read_up_to_the_length_taken() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let mut bytes = Vec::new();
        for n in 0..4u64 {
            let row = AccessRow {
                n,
                at_micros: 0,
                line: format!("line {n}").into_bytes(),
            };
            encode(&row, 3 * n, &mut bytes);
        }
        let one = bytes.len() as u64 / 4;
        // Record 1 half written when the length was taken; 2 and 3 after.
        let len = one + one / 2;
        std::fs::write(&path, &bytes)?;
        assert_eq!(durable_after(&path, one, 1, len)?, None);
        assert_eq!(durable_after(&path, one, 1, 3 * one)?, Some((2, 6)));
        assert_eq!(durable_after(&path, one, 1, 4 * one)?, Some((3, 9)));
        // A bad length at record 1: the search finds 2 and 3 past it.
        let mut bad = bytes.clone();
        bad[one as usize] = 0xff;
        bad[one as usize + 3] = 0xff;
        std::fs::write(&path, &bad)?;
        assert_eq!(durable_after(&path, one, 1, 4 * one)?, Some((3, 9)));
        Ok(())
    }
}
