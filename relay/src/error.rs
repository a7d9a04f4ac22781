//! Fetch errors worded as the controller logs them:
//! `Failed to download file tftp://172.16.5.27/Wrong-Path/ap1g6: No such file or directory`,
//! with a machine-readable [`ErrorKind`].

use std::fmt;

/// What went wrong, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The path does not exist on the server.
    NotFound,
    /// The server did not answer in time (or at all).
    TimedOut,
    /// The server refused access to the file.
    PermissionDenied,
    /// Wrong user, password or key.
    AuthenticationFailed,
    /// The server's host key does not match the known one.
    HostKeyMismatch,
    /// The host name does not resolve.
    UnknownHost,
    /// Nothing listens on the port (TCP reset).
    Refused,
    /// No route to the host or its network (the detail says which).
    Unreachable,
    /// The server broke the protocol or reported another error.
    Protocol,
    /// The fetched bytes are not what was expected (size or hash).
    Verification,
    /// A local file could not be written.
    LocalIo,
}

impl ErrorKind {
    /// The controller's wording.
    pub fn text(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "No such file or directory",
            ErrorKind::TimedOut => "Timed out",
            ErrorKind::PermissionDenied => "Permission denied",
            ErrorKind::AuthenticationFailed => "Authentication failed",
            ErrorKind::HostKeyMismatch => "Host key mismatch",
            ErrorKind::UnknownHost => "Name or service not known",
            ErrorKind::Refused => "Connection refused",
            ErrorKind::Unreachable => "Host unreachable",
            ErrorKind::Protocol => "Protocol error",
            ErrorKind::Verification => "Verification failed",
            ErrorKind::LocalIo => "Local I/O error",
        }
    }

    /// A stable lower-case name for JSON and scripts (`not-found`, `timed-out`, …).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::TimedOut => "timed-out",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::AuthenticationFailed => "authentication-failed",
            ErrorKind::HostKeyMismatch => "host-key-mismatch",
            ErrorKind::UnknownHost => "unknown-host",
            ErrorKind::Refused => "connection-refused",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Verification => "verification",
            ErrorKind::LocalIo => "local-io",
        }
    }
}

/// A failed fetch: the (redacted) source, the kind, and details for the curious.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// The source as printed (SFTP user masked).
    pub source: String,
    /// What went wrong.
    pub kind: ErrorKind,
    /// Extra detail (the server's message, the OS error), empty when there is none.
    pub detail: String,
}

impl FetchError {
    /// An error of `kind` for `source`.
    pub fn new(source: impl fmt::Display, kind: ErrorKind, detail: impl Into<String>) -> Self {
        FetchError {
            source: source.to_string(),
            kind,
            detail: detail.into(),
        }
    }
}

/// `Failed to download file URL: Kind` — the controller's line; details follow in
/// parentheses when they add something.
impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Failed to download file {}: {}",
            self.source,
            self.kind.text()
        )?;
        if !self.detail.is_empty() && self.detail != self.kind.text() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for FetchError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_the_controller_writes_them() {
        let e = FetchError::new(
            "tftp://172.16.5.27/Wrong-Path/ap1g6",
            ErrorKind::NotFound,
            "",
        );
        assert_eq!(
            e.to_string(),
            "Failed to download file tftp://172.16.5.27/Wrong-Path/ap1g6: No such file or directory"
        );
        let e = FetchError::new("tftp://h/x", ErrorKind::TimedOut, "no answer in 5 s");
        assert_eq!(
            e.to_string(),
            "Failed to download file tftp://h/x: Timed out (no answer in 5 s)"
        );
        assert_eq!(ErrorKind::HostKeyMismatch.name(), "host-key-mismatch");
    }
}
