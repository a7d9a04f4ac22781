//! # bundle-tool — unpack, validate, fingerprint and stage Cisco AP image bundles
//!
//! **Not built yet** (a later issue fills this crate in). What it will be: the bundle model
//! (`version.info`, per-family tar images such as `ap1g7`/`ap1g8`/`ap3g3`, the model-to-family
//! map) and a CLI that validates, fingerprints and atomically stages a bundle into a served
//! folder, usable as a CI gate.
