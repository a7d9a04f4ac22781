//! # controller — relay AP images over CAPWAP, and the one-command lab
//!
//! **In progress** (issue 6). Built so far:
//! - [`flow`]: the image-download conversation both ends of this crate speak (RFC 5415 §9.1
//!   with its choices fixed), and [`ac`]: the controller's side of one AP's session, sans-IO
//!   (join, image data in stop-and-wait blocks of a shared image, predownload, activate);
//!   [`wtp`]: the AP's side, sans-IO (versions compared, image checked by size, MD5 and tar,
//!   stored as primary or backup, echo, faults for the simulator). `tests/session.rs` runs
//!   the two against each other.
//! - [`capwap`]: the sans-IO CAPWAP core (RFC 5415 header, control header, message elements,
//!   messages with their mandatory-element checks, fragmentation and reassembly, §4.5.3
//!   request/response reliability), shared by the controller and the AP simulator.
//! - [`config`]: the TOML config file, modelled on `wireless profile image-download default`
//!   (tftp, sftp or local folder; parallel or in sets; retries), checked into relay sources.
//! - [`images`]: each family's image fetched once through relay's store, verified by the
//!   release's manifest or its own tar against `version.info`, loaded once and shared, MD5
//!   computed once; failures remembered until the retry interval.
//! - [`events`]: the controller's syslog lines (`%INSTALL-…`, `%CAPWAPAC_SMGR_TRACE_MESSAGE-…`)
//!   and their `*Feb 1 20:29:14.108: ` timestamps.
//! - [`show`]: `show ap image` — counters derived from per-AP rows, text and JSON.
//!
//! - [`server`]: the tokio shells — [`server::serve`] runs every AP's session on one UDP
//!   socket (image fetched on demand through [`images`], at most `max_concurrent` transfers,
//!   the controller's log lines, `show` rows), [`server::run_ap`] runs one simulated AP.
//!
//! Not yet: fragment reassembly in the controller shell, the `show` socket, the `controller`
//! and `ap-sim` binaries, `controller lab`, the local-mode folder watcher.

pub mod ac;
pub mod capwap;
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod fleet;
pub mod flow;
pub mod images;
pub mod lab;
pub mod server;
pub mod show;
pub mod testbed;
pub mod wtp;
