//! # controller — relay AP images over CAPWAP, and the one-command lab
//!
//! The embedded controller's role in the source document: learn from an image download
//! profile where the images live, fetch each AP family's image once through relay, and hand
//! it to every AP that needs it over CAPWAP Image Data messages (RFC 5415 §9.1), while the
//! administrator watches `show ap image` and the syslog.
//!
//! - [`capwap`]: the sans-IO CAPWAP core (header, control header, message elements, messages
//!   with their mandatory-element checks, fragmentation and reassembly, §4.5.3
//!   request/response reliability), shared by the controller and the AP simulator.
//! - [`flow`]: the image-download conversation both ends speak; [`ac`]: the controller's
//!   side of one AP's session, sans-IO; [`wtp`]: the AP's side, sans-IO (versions compared,
//!   image checked by size, MD5 and tar, stored as primary or backup).
//! - [`config`]: the TOML profile (`wireless profile image-download default`); [`images`]:
//!   each family fetched once, verified, shared, MD5 once; [`events`]: the syslog lines;
//!   [`logging`]: where they go (stdout or a syslog socket); [`show`]: `show ap image`.
//! - [`server`]: the tokio shell of every AP session on one UDP socket (admission in
//!   parallel or in sets, predownload, activate, new releases); [`daemon`]: the controller as
//!   a service (release, control socket, local-folder watcher, reload); [`control`]: the
//!   control socket's protocol.
//! - [`fleet`]: simulated APs with faults (the `ap-sim` binary); [`testbed`]: a staged
//!   synthetic release served by our tftpd or sftpd in-process; [`lab`]: the whole story.
//!
//! Plain UDP: DTLS (which RFC 5415 requires on the control channel) is not implemented; the
//! codec never sees the transport, so it can be added in the shells.

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
pub mod logging;
pub mod server;
pub mod show;
pub mod testbed;
pub mod wtp;
