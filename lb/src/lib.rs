//! Pure load-balancing logic (services, backends, weights, the Maglev table, load-driven weight policy); not started yet, see issue 5.
