//! The local control socket: how `controller show ap image`, `predownload`, `activate` and
//! `reload` reach a running controller.
//!
//! A Unix stream socket (mode 0600: only its owner may drive the controller). The client
//! writes one request line, the server writes its answer and closes; an answer that starts
//! with `error: ` is a refusal. Requests ([`Request`]):
//!
//! ```text
//! show ap image          the table, as the embedded controller prints it
//! show ap image json     the same as JSON
//! predownload            predownload the network's version to the APs that need it
//! activate               activate it on the APs that hold it as backup
//! reload                 read the config file again (the image download profile)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line.
const MAX_REQUEST: u64 = 256;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer a client reads (a table of thousands of APs fits).
const MAX_ANSWER: u64 = 64 << 20;

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `show ap image` (`json`: as JSON).
    ShowApImage {
        /// As JSON.
        json: bool,
    },
    /// `predownload`.
    Predownload,
    /// `activate`.
    Activate,
    /// `reload`.
    Reload,
}

impl Request {
    /// The request line.
    pub fn line(self) -> &'static str {
        match self {
            Request::ShowApImage { json: false } => "show ap image",
            Request::ShowApImage { json: true } => "show ap image json",
            Request::Predownload => "predownload",
            Request::Activate => "activate",
            Request::Reload => "reload",
        }
    }

    /// Parses a request line.
    pub fn parse(line: &str) -> Option<Request> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            ["show", "ap", "image"] => Request::ShowApImage { json: false },
            ["show", "ap", "image", "json"] => Request::ShowApImage { json: true },
            ["predownload"] => Request::Predownload,
            ["activate"] => Request::Activate,
            ["reload"] => Request::Reload,
            _ => return None,
        })
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No controller listens there.
    #[error("no controller is listening on {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The conversation broke.
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The controller refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Where the control socket is unless told: `/run/airlift/controller.sock` for root,
/// `$XDG_RUNTIME_DIR/airlift-controller.sock` for others (or `/tmp/airlift-controller-UID.sock`).
pub fn default_socket_path() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/airlift/controller.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("airlift-controller.sock"),
        _ => PathBuf::from(format!("/tmp/airlift-controller-{uid}.sock")),
    }
}

/// Binds the control socket at `path` (its folder created; a stale socket left by a killed
/// controller replaced, a live one refused), readable and writable by its owner only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a controller already listens on {}", path.display()),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?;
        }
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// Reads one request from an accepted connection: `None` if it is not one (the caller
/// answers with an error); a client gets 5 s to send it.
pub async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, std::io::Error> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_REQUEST);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    Ok(Request::parse(&line))
}

/// Sends `request` to the controller at `path` and returns its answer.
pub async fn ask(path: &Path, request: Request) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    stream
        .write_all(format!("{}\n", request.line()).as_bytes())
        .await
        .map_err(io)?;
    let mut answer = String::new();
    tokio::time::timeout(
        ANSWER_TIMEOUT,
        stream.take(MAX_ANSWER).read_to_string(&mut answer),
    )
    .await
    .map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the controller did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
        ))
    })?
    .map_err(io)?;
    match answer.strip_prefix("error: ") {
        Some(why) => Err(ControlError::Refused(why.trim_end().to_owned())),
        None => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_round_trip() {
        for r in [
            Request::ShowApImage { json: false },
            Request::ShowApImage { json: true },
            Request::Predownload,
            Request::Activate,
            Request::Reload,
        ] {
            assert_eq!(Request::parse(r.line()), Some(r));
        }
        assert_eq!(
            Request::parse("  show   ap image\r\n"),
            Some(Request::ShowApImage { json: false })
        );
        assert_eq!(Request::parse("show ap"), None);
        assert_eq!(Request::parse(""), None);
        assert_eq!(Request::parse("activate now"), None);
    }

    #[tokio::test]
    async fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/c.sock");
        let live = bind(&path).expect("bind");
        assert!(
            bind(&path).is_err(),
            "a second controller must not steal it"
        );
        drop(live);
        // The file is left behind (stale): a new controller takes its place.
        assert!(path.exists());
        let _again = bind(&path).expect("rebind");
        let mode = std::fs::metadata(&path).expect("meta");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }
}
