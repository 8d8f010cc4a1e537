//! The lookup table a new connection's hash indexes: `size` slots (a prime),
//! each naming a backend, filled so that each backend owns a share of slots
//! proportional to its weight.
//!
//! Two fill algorithms, both pure functions of (backends, weights, size), so
//! every load balancer with the same configuration builds the same table and
//! several of them behind ECMP send a flow to the same backend without talking
//! to each other:
//!
//! - [`Algorithm::Maglev`] (the default; Eisenbud et al., NSDI 2016, with
//!   Katran's weighting: a backend of weight w takes w turns per round). Even
//!   shares, O(size) to build, but *not* minimally disruptive: when a backend
//!   joins, a backend that loses its preferred slot falls back to its next
//!   preference, which may belong to another unchanged backend. The paper
//!   measures this and accepts it; [`diff`] counts it
//!   (`between_unchanged`), and the property tests bound it.
//! - [`Algorithm::Rendezvous`]: weighted highest-random-weight per slot. A
//!   change moves slots only to or from the backends that changed, never
//!   between two unchanged ones, at the price of O(size × backends) hashing
//!   per build and shares that are binomial rather than exact (σ ≈ 0.2 % of a
//!   65,537-slot table).
//!
//! Backends are identified by a stable byte string (their address), never by
//! their position in the configuration, so reordering the file moves nothing.

use siphasher::sip::SipHasher13;
use std::hash::Hasher as _;

/// Slots in the table by default: a prime, as Maglev needs, and ~100× the
/// number of backends a service usually has, so shares are accurate to 1 %.
pub const DEFAULT_SIZE: u32 = 65_537;
/// A slot no backend owns (every weight is zero).
pub const EMPTY: u32 = u32::MAX;

/// How the table is filled (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Maglev,
    Rendezvous,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Maglev => "maglev",
            Algorithm::Rendezvous => "rendezvous",
        }
    }
}

/// One backend as the table sees it: a stable identity and a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable identity, hashed to place the backend (its address bytes).
    pub id: Vec<u8>,
    /// Relative share; 0 = no slots (drained or down).
    pub weight: u32,
}

/// A filled table: `slots[i]` is an index into the entry list it was built
/// from, or [`EMPTY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    slots: Vec<u32>,
}

/// Fixed keys: the table must not depend on the machine or the run.
const KEY_OFFSET: (u64, u64) = (0x6d61_676c_6576_2d6f, 0x6666_7365_7421_0001);
const KEY_SKIP: (u64, u64) = (0x6d61_676c_6576_2d73, 0x6b69_7021_0000_0002);
const KEY_RENDEZVOUS: (u64, u64) = (0x7265_6e64_657a_766f, 0x7573_2100_0000_0003);

fn hash(key: (u64, u64), parts: &[&[u8]]) -> u64 {
    let mut h = SipHasher13::new_with_keys(key.0, key.1);
    for part in parts {
        h.write(part);
    }
    h.finish()
}

/// Whether `n` is prime (trial division; table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

impl Table {
    /// Fills a table of `size` slots. `size` must be prime (checked when the
    /// configuration is read; a non-prime size here is a caller bug).
    pub fn build(algorithm: Algorithm, entries: &[Entry], size: u32) -> Table {
        assert!(is_prime(size), "table size {size} is not prime");
        match algorithm {
            Algorithm::Maglev => maglev(entries, size),
            Algorithm::Rendezvous => rendezvous(entries, size),
        }
    }

    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots owned by each of `n` entries.
    pub fn shares(&self, n: usize) -> Vec<usize> {
        let mut shares = vec![0; n];
        for &s in &self.slots {
            if let Some(c) = shares.get_mut(s as usize) {
                *c += 1;
            }
        }
        shares
    }
}

fn maglev(entries: &[Entry], size: u32) -> Table {
    let m = u64::from(size);
    let mut slots = vec![EMPTY; size as usize];
    // Fill order by identity, not by position in the file: who claims a
    // contested slot first must not depend on how the file is ordered.
    let mut live: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].weight > 0)
        .collect();
    live.sort_by(|&a, &b| entries[a].id.cmp(&entries[b].id));
    if live.is_empty() {
        return Table { slots };
    }
    // permutation of backend i: (offset + j * skip) mod m, j = 0, 1, ...
    let perm: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| {
            let offset = hash(KEY_OFFSET, &[&e.id]) % m;
            let skip = hash(KEY_SKIP, &[&e.id]) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; entries.len()];
    let mut filled = 0u64;
    // Katran's weighting: a backend of weight w places w slots per round.
    // Weights are divided by their common divisor first so a 500:300:200
    // configuration fills as fast as 5:3:2.
    let g = live
        .iter()
        .fold(0u32, |g, &i| gcd(g, entries[i].weight))
        .max(1);
    'fill: loop {
        for &i in &live {
            for _ in 0..entries[i].weight / g {
                let (offset, skip) = perm[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if slots[slot] == EMPTY {
                        slots[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    Table { slots }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn rendezvous(entries: &[Entry], size: u32) -> Table {
    let mut slots = vec![EMPTY; size as usize];
    for (slot, owner) in slots.iter_mut().enumerate() {
        let slot_bytes = (slot as u32).to_le_bytes();
        let mut best = f64::INFINITY;
        for (i, e) in entries.iter().enumerate() {
            if e.weight == 0 {
                continue;
            }
            // u in (0, 1]; -ln(u) / w is exponential with rate w, and the
            // smallest of those is backend i with probability w_i / sum(w)
            let h = hash(KEY_RENDEZVOUS, &[&e.id, &slot_bytes]);
            let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let score = -u.ln() / f64::from(e.weight);
            if score < best {
                best = score;
                *owner = i as u32;
            }
        }
    }
    Table { slots }
}

/// How two tables differ, by backend identity (entry positions may differ
/// between the two entry lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Slots whose backend changed.
    pub moved: usize,
    /// Of those, slots that moved from one backend to another where both are
    /// in both tables with the same weight: disruption nobody asked for.
    pub between_unchanged: usize,
    /// Table size.
    pub size: usize,
}

impl Diff {
    pub fn moved_fraction(&self) -> f64 {
        self.moved as f64 / self.size.max(1) as f64
    }
}

/// Compares two tables built from `old` and `new` entry lists: how many slots
/// a change of backends or weights moves. This is the figure an operator
/// wants before reweighting: the share of *new* connections that land
/// elsewhere (established ones keep their backend through the connection
/// table).
pub fn diff(old: (&Table, &[Entry]), new: (&Table, &[Entry])) -> Diff {
    let (old_t, old_e) = old;
    let (new_t, new_e) = new;
    assert_eq!(old_t.len(), new_t.len(), "tables of different sizes");
    let id = |entries: &[Entry], s: u32| entries.get(s as usize).map(|e| e.id.clone());
    let weight_of =
        |entries: &[Entry], id: &[u8]| entries.iter().find(|e| e.id == id).map(|e| e.weight);
    let unchanged = |id: &[u8]| {
        let (a, b) = (weight_of(old_e, id), weight_of(new_e, id));
        a.is_some() && a == b
    };
    let mut d = Diff {
        size: old_t.len(),
        ..Diff::default()
    };
    for (&a, &b) in old_t.slots.iter().zip(&new_t.slots) {
        let (ia, ib) = (id(old_e, a), id(new_e, b));
        if ia != ib {
            d.moved += 1;
            if let (Some(ia), Some(ib)) = (&ia, &ib)
                && unchanged(ia)
                && unchanged(ib)
            {
                d.between_unchanged += 1;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(weights: &[u32]) -> Vec<Entry> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Entry {
                id: vec![198, 18, 71, i as u8 + 1],
                weight: w,
            })
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(DEFAULT_SIZE));
        assert!(is_prime(251));
        assert!(!is_prime(65_536));
        assert!(!is_prime(1));
    }

    #[test]
    fn every_slot_is_filled_and_weights_hold() {
        for algorithm in [Algorithm::Maglev, Algorithm::Rendezvous] {
            let e = entries(&[5, 3, 2]);
            let t = Table::build(algorithm, &e, DEFAULT_SIZE);
            assert!(t.slots().iter().all(|&s| s < 3), "{algorithm:?}");
            let shares = t.shares(3);
            for (share, w) in shares.iter().zip([5.0, 3.0, 2.0]) {
                let got = *share as f64 / f64::from(DEFAULT_SIZE);
                assert!((got - w / 10.0).abs() < 0.01, "{algorithm:?}: {shares:?}");
            }
        }
    }

    #[test]
    fn zero_weights_leave_the_table_empty_or_skip_the_backend() {
        for algorithm in [Algorithm::Maglev, Algorithm::Rendezvous] {
            let t = Table::build(algorithm, &entries(&[0, 0]), 251);
            assert!(t.slots().iter().all(|&s| s == EMPTY));
            let t = Table::build(algorithm, &entries(&[9, 1, 0]), 251);
            assert_eq!(t.shares(3)[2], 0);
        }
    }

    #[test]
    fn reordering_the_backends_changes_no_assignment() {
        let e = entries(&[5, 3, 2]);
        let mut r = e.clone();
        r.reverse();
        for algorithm in [Algorithm::Maglev, Algorithm::Rendezvous] {
            let a = Table::build(algorithm, &e, 251);
            let b = Table::build(algorithm, &r, 251);
            assert_eq!(diff((&a, &e), (&b, &r)).moved, 0, "{algorithm:?}");
        }
    }
}
