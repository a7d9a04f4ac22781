//! # sftpd — an SFTP-only server that replaces `sshd` + `internal-sftp` for image hosting
//!
//! An SSH server on russh that only speaks SFTP. It reads the `sshd_config` people use for
//! image hosting (`Match User/Group`, `ChrootDirectory`, `ForceCommand internal-sftp`),
//! checks chroot ownership exactly as sshd does (and says how to fix it), chroots and
//! switches to the user in a process per connection, and logs like sshd and
//! `sftp-server -l VERBOSE`. See ARCHITECTURE.md for the data flow.
//!
//! Sans-IO pieces: [`config`] (sshd_config subset), [`server_args`] (internal-sftp flags),
//! [`passwd`] (shadow hashes), [`chroot`] (sshd's ownership walk), [`sftp`] (SFTP v3 codec,
//! server and client), [`penalty`] (per-source penalties). With I/O: [`users`] (accounts,
//! `UsersFile`, authorized_keys), [`vfs`] (openat2 confinement), [`sftp_server`] (the
//! request executor), [`pump`] (bounded queues to russh), [`connection`] (one SSH
//! connection), [`listener`] (MaxStartups, re-exec per connection), [`log`], [`hostkey`],
//! [`setup`].

pub mod chroot;
pub mod config;
pub mod connection;
pub mod hostkey;
pub mod listener;
pub mod log;
pub mod passwd;
pub mod penalty;
pub mod pump;
pub mod server_args;
pub mod setup;
pub mod sftp;
pub mod sftp_server;
pub mod users;
pub mod vfs;
