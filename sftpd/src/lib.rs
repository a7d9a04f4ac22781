//! # sftpd — an SFTP-only server that replaces `sshd` + `internal-sftp` for image hosting
//!
//! **In progress** (issue 4). What it will be: an SSH server on russh that only speaks SFTP,
//! reads the `sshd_config` subset people use for image hosting (`Match User/Group`,
//! `ChrootDirectory`, `ForceCommand internal-sftp`), checks chroot ownership exactly as sshd
//! does, and logs like OpenSSH's `sftp-server -l VERBOSE`. There is no binary yet.
//!
//! Built so far (sans-IO, tested):
//! - [`chroot`]: `ChrootDirectory` checked component by component exactly as sshd's
//!   `safely_chroot()` (same messages), plus the command that fixes each problem.
//! - [`config`]: the `sshd_config` subset (with `Include`, `Match User|Group|Address|LocalPort|All`,
//!   first-match-wins, `-o` overrides, `-T` dump, tokens, Allow/Deny lists with sshd's wording);
//!   keywords that do not apply to an SFTP-only server are accepted and reported.
//! - [`passwd`]: `/etc/shadow` entries and password checks (yescrypt `$y$`, SHA-crypt
//!   `$6$`/`$5$`), with a dummy hash so unknown users cost the same time as wrong passwords.
//! - [`sftp`]: the SFTP v3 codec (framing with a length cap checked before allocating, every
//!   request and response, OpenSSH's extensions, zero-copy DATA headers), one codec for server
//!   and client.
//! - [`server_args`]: `internal-sftp` / `sftp-server` arguments (`-l -f -e -R -u -d -P -p -Q`)
//!   with OpenSSH's getopt semantics, request allow/deny lists and the read-only table.

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
