//! # relay — fetch AP images from TFTP and SFTP servers, once, verified
//!
//! **Not built yet** (a later issue fills this crate in). What it will be: the library (and a
//! small CLI) that fetches `tftp://`, `sftp://` and `file://` sources into a content-addressed
//! image store, with a TFTP client built on the same sans-IO core as `tftpd` (no second codec),
//! errors worded as the controller logs them, and single-flight fetches.
