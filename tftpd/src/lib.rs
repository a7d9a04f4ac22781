//! # tftpd — a drop-in, faster replacement for tftpd-hpa
//!
//! The `tftpd` binary takes `in.tftpd`'s flags and writes its log lines; this library holds
//! everything behind it, so integration tests and other crates (the `relay` TFTP client)
//! use the same code.
//!
//! # Layout
//! - [`proto`]: the sans-IO protocol core — codec, option negotiation, rollover, netascii,
//!   and the send/receive state machines with time as a parameter. Shared with `relay`.
//! - [`confine`]: the one place request names become open files, confined to a served
//!   directory (`openat2(RESOLVE_BENEATH)`, with a checked fallback walk).
//! - [`remap`]: tftpd-hpa's `-m` filename remapping rules.
//! - [`server`]: the tokio shell — listeners, one task and socket per transfer, the shared
//!   memory-mapped file cache kept fresh by a filesystem watcher.
//! - [`cli`], [`setup`], [`syslog`]: in.tftpd's command line and `/etc/default/tftpd-hpa`,
//!   process setup (bind, chroot, drop privileges, daemonize), and tftpd-hpa's log format.
//! - [`monitor`]: privilege separation when started as root — a root monitor keeps the pid
//!   file and re-reads the map file on SIGHUP for the unprivileged, chrooted server.

pub mod cli;
pub mod confine;
pub mod monitor;
pub mod proto;
pub mod remap;
pub mod server;
pub mod setup;
pub mod syslog;
