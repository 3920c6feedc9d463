//! bldr's integration tests: one binary, one module per area.
//! `cli` and `corpus` need nothing special; `root` creates namespaces and needs root
//! (with BLDR_REQUIRE_ROOT_TESTS=1 a root test that cannot run fails instead of skipping).

mod cli;
mod corpus;
mod debian;
mod ephemeral;
mod fuzz;
mod gentoo;
mod leftovers;
mod powers;
mod records;
mod root;
mod util;
