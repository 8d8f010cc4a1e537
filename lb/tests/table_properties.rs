//! Property tests of the lookup table: shares follow weights, changes move
//! what they should and little else, and the table is a pure function of
//! the configuration.

use lb::table::{self, Algorithm, Entry, Table};
use proptest::prelude::*;

const SIZE: u32 = table::DEFAULT_SIZE;

fn entries(weights: &[u32], salt: u8) -> Vec<Entry> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Entry {
            id: vec![198, 18, 71 + salt, i as u8 + 1],
            weight: w,
        })
        .collect()
}

fn algorithms() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Maglev), Just(Algorithm::Rendezvous)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Each backend's share of slots is its share of the weights, within 1 %
    /// of the table.
    #[test]
    fn shares_follow_weights(
        weights in prop::collection::vec(1u32..=100, 2..12),
        salt in 0u8..4,
        algorithm in algorithms(),
    ) {
        let e = entries(&weights, salt);
        let t = Table::build(algorithm, &e, SIZE);
        let total: u32 = weights.iter().sum();
        for (share, w) in t.shares(e.len()).iter().zip(&weights) {
            let got = *share as f64 / f64::from(SIZE);
            let want = f64::from(*w) / f64::from(total);
            prop_assert!((got - want).abs() <= 0.01, "{algorithm:?}: got {got} want {want}");
        }
    }

    /// Adding a backend moves about 1/N of the slots (N backends after),
    /// all of them to the new backend, with rendezvous none between two
    /// unchanged backends and with Maglev very few.
    #[test]
    fn adding_a_backend_moves_about_one_nth(
        n in 2usize..16,
        salt in 0u8..4,
        algorithm in algorithms(),
    ) {
        let old = entries(&vec![1; n], salt);
        let new = entries(&vec![1; n + 1], salt);
        let (a, b) = (Table::build(algorithm, &old, SIZE), Table::build(algorithm, &new, SIZE));
        let d = table::diff((&a, &old), (&b, &new));
        let ideal = 1.0 / (n + 1) as f64;
        let moved = d.moved_fraction();
        prop_assert!(moved >= ideal - 0.01, "{algorithm:?}: moved {moved}, ideal {ideal}");
        prop_assert!(moved <= ideal * 1.25 + 0.01, "{algorithm:?}: moved {moved}, ideal {ideal}");
        match algorithm {
            Algorithm::Rendezvous => prop_assert_eq!(d.between_unchanged, 0),
            Algorithm::Maglev => prop_assert!(
                (d.between_unchanged as f64) / f64::from(SIZE) < 0.05,
                "maglev moved {} slots between unchanged backends", d.between_unchanged
            ),
        }
    }

    /// Removing a backend moves exactly its own slots with rendezvous.
    #[test]
    fn removing_a_backend_moves_its_slots(
        n in 3usize..16,
        salt in 0u8..4,
        victim in 0usize..3,
    ) {
        let old = entries(&vec![1; n], salt);
        let mut new = old.clone();
        new[victim].weight = 0;
        let algorithm = Algorithm::Rendezvous;
        let (a, b) = (Table::build(algorithm, &old, SIZE), Table::build(algorithm, &new, SIZE));
        let d = table::diff((&a, &old), (&b, &new));
        prop_assert_eq!(d.moved, a.shares(n)[victim]);
        prop_assert_eq!(d.between_unchanged, 0);
    }

    /// The table is a pure function of the configuration: rebuilding it
    /// (another balancer, another run) gives the same slots.
    #[test]
    fn the_same_configuration_gives_the_same_table(
        weights in prop::collection::vec(0u32..=50, 1..8),
        salt in 0u8..4,
        algorithm in algorithms(),
    ) {
        let e = entries(&weights, salt);
        prop_assert_eq!(Table::build(algorithm, &e, 4099), Table::build(algorithm, &e.clone(), 4099));
    }
}

/// The same configuration gives the same table on every machine: pinned by
/// a digest of the table, computed once and written here. A change of hash
/// function, key, fill order or slot layout changes it, and with it where
/// every balancer behind the same ECMP group sends a flow.
#[test]
fn the_table_is_the_same_on_every_machine() {
    let e = entries(&[5, 3, 2], 0);
    for (algorithm, want) in [
        (Algorithm::Maglev, 12_998_570_438_784_312_852u64),
        (Algorithm::Rendezvous, 18_298_371_006_649_900_582u64),
    ] {
        let t = Table::build(algorithm, &e, SIZE);
        let mut h = 0xcbf2_9ce4_8422_2325u64; // FNV-1a over the slots
        for s in t.slots() {
            for b in s.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(h, want, "{algorithm:?} table digest");
    }
}
