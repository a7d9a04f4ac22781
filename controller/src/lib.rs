//! # controller — relay AP images over CAPWAP, and the one-command lab
//!
//! **Not built yet** (a later issue fills this crate in). What it will be: a sans-IO CAPWAP
//! core (RFC 5415 framing, Join/Configuration Update/Image Data/Reset, reliability), a
//! controller that fetches each AP family's image once through `relay` and hands it to many
//! APs, an AP simulator, and `controller lab`.
