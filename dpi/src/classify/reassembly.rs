//! Just enough TCP reassembly for classification: per direction, segments
//! are handed to the dissectors in sequence order. A segment ahead of the
//! next expected byte is held (at most [`MAX_HELD_SEGMENTS`] segments and
//! [`MAX_HELD_BYTES`] bytes per flow) until the gap fills; retransmitted bytes
//! are dropped; past the bounds the held data is released as it is and
//! tracking restarts, so memory stays bounded whatever the peer sends.

/// Segments held out of order per flow.
pub const MAX_HELD_SEGMENTS: usize = 8;
/// Bytes held out of order per flow.
pub const MAX_HELD_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, Default)]
pub struct Reassembler {
    next: [Option<u32>; 2],
    held: [Vec<(u32, Vec<u8>)>; 2],
}

/// `a - b` in sequence space (RFC 1982 style).
fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

impl Reassembler {
    fn held_bytes(&self) -> usize {
        self.held.iter().flatten().map(|(_, d)| d.len()).sum()
    }

    /// Takes one segment of direction `dir` (0 = client, 1 = server) and
    /// calls `deliver` with every byte run now in order.
    pub fn push(
        &mut self,
        dir: usize,
        seq: u32,
        syn: bool,
        data: &[u8],
        mut deliver: impl FnMut(&[u8]),
    ) {
        let next = match self.next[dir] {
            Some(n) => n,
            None => {
                // A SYN takes one sequence number; without one (a flow caught
                // mid-way) this segment starts the stream.
                let start = if syn { seq.wrapping_add(1) } else { seq };
                self.next[dir] = Some(start);
                start
            }
        };
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        if data.is_empty() {
            return;
        }
        let ahead = seq_diff(seq, next);
        if ahead > 0 {
            let fits = self.held[dir].len() < MAX_HELD_SEGMENTS
                && self.held_bytes() + data.len() <= MAX_HELD_BYTES;
            if fits {
                if !self.held[dir].iter().any(|(s, _)| *s == seq) {
                    self.held[dir].push((seq, data.to_vec()));
                }
                return;
            }
            // Too much out of order: release what is held, in order, and restart here.
            let mut held = std::mem::take(&mut self.held[dir]);
            held.sort_by_key(|(s, _)| seq_diff(*s, next));
            for (_, d) in &held {
                deliver(d);
            }
            deliver(data);
            self.next[dir] = Some(seq.wrapping_add(data.len() as u32));
            return;
        }
        // Drop what was already delivered (a retransmission or an overlap).
        let skip = usize::try_from(-ahead).unwrap_or(usize::MAX);
        if skip >= data.len() {
            return;
        }
        deliver(&data[skip..]);
        let mut next = seq.wrapping_add(data.len() as u32);
        // Release held segments that now follow on.
        while let Some(pos) = self.held[dir].iter().position(|(s, d)| {
            seq_diff(*s, next) <= 0 && seq_diff(s.wrapping_add(d.len() as u32), next) > 0
        }) {
            let (s, d) = self.held[dir].swap_remove(pos);
            let skip = seq_diff(next, s) as usize;
            deliver(&d[skip..]);
            next = s.wrapping_add(d.len() as u32);
        }
        // Anything now entirely behind is a stale duplicate.
        self.held[dir].retain(|(s, d)| seq_diff(s.wrapping_add(d.len() as u32), next) > 0);
        self.next[dir] = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(segments: &[(u32, bool, &[u8])]) -> Vec<u8> {
        let mut r = Reassembler::default();
        let mut out = Vec::new();
        for (seq, syn, data) in segments {
            r.push(0, *seq, *syn, data, |d| out.extend_from_slice(d));
        }
        out
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        assert_eq!(
            run(&[(99, true, b""), (100, false, b"abc"), (103, false, b"def")]),
            b"abcdef"
        );
        assert_eq!(
            run(&[(99, true, b""), (103, false, b"def"), (100, false, b"abc")]),
            b"abcdef"
        );
        assert_eq!(
            run(&[
                (99, true, b""),
                (100, false, b"abc"),
                (100, false, b"abc"),
                (101, false, b"bcdx")
            ]),
            b"abcdx"
        );
        assert_eq!(
            run(&[
                (99, true, b""),
                (106, false, b"ghi"),
                (103, false, b"def"),
                (100, false, b"abc")
            ]),
            b"abcdefghi"
        );
    }

    #[test]
    fn sequence_wraps() {
        // "ab" takes sequence numbers u32::MAX and 0, so "cd" starts at 1.
        assert_eq!(
            run(&[
                (u32::MAX - 1, true, b""),
                (1, false, b"cd"),
                (u32::MAX, false, b"ab")
            ]),
            b"abcd"
        );
    }

    #[test]
    fn held_data_is_bounded() {
        let mut r = Reassembler::default();
        let mut delivered = 0;
        r.push(0, 0, true, b"", |_| {});
        for i in 0..100u32 {
            // every segment leaves a gap before it: never in order
            r.push(0, 1000 + i * 2000, false, &[7u8; 1000], |d| {
                delivered += d.len()
            });
            assert!(r.held_bytes() <= MAX_HELD_BYTES);
            assert!(r.held[0].len() <= MAX_HELD_SEGMENTS);
        }
        assert!(delivered > 0, "past the bounds, held data is released");
    }
}
