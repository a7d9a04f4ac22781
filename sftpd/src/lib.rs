//! # sftpd — an SFTP-only server that replaces `sshd` + `internal-sftp` for image hosting
//!
//! **Not built yet** (a later issue fills this crate in). What it will be: an SSH server on
//! russh + russh-sftp that only speaks SFTP, reads the `sshd_config` subset people use for
//! image hosting (`Match User/Group`, `ChrootDirectory`, `ForceCommand internal-sftp`), checks
//! chroot ownership exactly as sshd does, and logs like OpenSSH's `sftp-server -l VERBOSE`.
