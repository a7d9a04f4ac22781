//! # tftpd — a drop-in, faster replacement for tftpd-hpa
//!
//! The `tftpd` binary takes `in.tftpd`'s flags and writes its log lines; this library holds
//! everything behind it, so integration tests and other crates (the `relay` TFTP client)
//! use the same code.
//!
//! # Layout
//! - [`proto`]: the sans-IO protocol core — codec, option negotiation, rollover, netascii,
//!   and the send/receive state machines with time as a parameter. Shared with `relay`.
pub mod proto;
