//! # bundle-tool — unpack, validate, fingerprint and stage Cisco AP image bundles
//!
//! Today people unzip a Cisco AP bundle into the TFTP folder by hand and learn it was wrong when
//! APs fail to download. This crate makes that a checked, atomic, scriptable step.
//!
//! - [`source`]: a bundle's container (zip or folder) and the checks made before reading a byte
//!   (zip-slip names, symbolic links, duplicates, counts, sizes, zip bombs).
//! - [`scan`]: one parallel pass reading every entry once, feeding the tar checker, SHA-256,
//!   MD5 and the extracted copy.
//! - [`check`]: what each file is ([`check::Role`]) and the rules; [`check::inspect`] returns a
//!   [`check::Report`] of [`report::Finding`]s.
//! - [`tar`] and [`info`]: sans-IO parsers for AP images (tar archives) and their `info`
//!   members; [`version`] for `version.info`; [`models`]: the AP model → image family map.
//! - [`stage`], [`manifest`], [`diff`], [`synth`]: the commands' logic; `main.rs` only parses
//!   flags and prints.

pub mod check;
pub mod diff;
pub mod info;
pub mod manifest;
pub mod models;
pub mod names;
pub mod report;
pub mod scan;
pub mod source;
pub mod stage;
pub mod synth;
pub mod tar;
pub mod version;
