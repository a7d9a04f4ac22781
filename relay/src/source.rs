//! Image sources named as the controller names them: `tftp://host[:port]/path`,
//! `sftp://user@host[:port]/path` and `file:///path`.
//!
//! A source prints the way the controller logs it: the SFTP user is masked
//! (`sftp://*****@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3`), so a URL can go into
//! a log line or an error message without leaking the account. Passwords are never part of
//! a source: they come from the caller.

use std::fmt;
use std::path::PathBuf;

/// Default TFTP port.
pub const TFTP_PORT: u16 = 69;
/// Default SSH port.
pub const SSH_PORT: u16 = 22;

/// Where an image comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// `tftp://host[:port]/path`.
    Tftp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
        /// The path as requested from the server: the URL path without its leading `/`
        /// (what curl and the controller send), percent-decoded.
        path: String,
    },
    /// `sftp://user@host[:port]/path`.
    Sftp {
        /// Account name (masked when printed).
        user: String,
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Absolute path on the server, percent-decoded.
        path: String,
    },
    /// `file:///path`.
    File {
        /// The local file.
        path: PathBuf,
    },
}

/// Why a URL is not a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Not `tftp://`, `sftp://` or `file://`.
    #[error("unsupported scheme in \"{0}\": use tftp://, sftp:// or file://")]
    Scheme(String),
    /// No host.
    #[error("no host in \"{0}\"")]
    NoHost(String),
    /// No file path.
    #[error("no file path in \"{0}\"")]
    NoPath(String),
    /// A bad port number.
    #[error("bad port in \"{0}\"")]
    Port(String),
    /// `sftp://` without `user@`.
    #[error("no user in \"{0}\" (sftp://user@host/path)")]
    NoUser(String),
    /// A password in the URL (it would end up in logs and shell history).
    #[error("passwords do not go in the URL \"{0}\": use --password-file or --identity")]
    Password(String),
    /// A bad `%XX` escape or a NUL.
    #[error("bad percent-encoding in \"{0}\"")]
    Encoding(String),
    /// An unclosed `[` in an IPv6 host.
    #[error("bad IPv6 host in \"{0}\"")]
    Ipv6(String),
}

fn percent_decode(s: &str, whole: &str) -> Result<String, SourceError> {
    let bad = || SourceError::Encoding(redact_raw(whole));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(bad());
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A URL with any `user[:password]@` masked, for error messages about unparsable URLs.
fn redact_raw(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // Up to the last `@` anywhere: a malformed URL may carry a password with a `/` in it
    // (`sftp://user:pa/ss@host/x`), and over-masking an invalid URL costs nothing.
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://*****@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Splits `host[:port]` (IPv6 in brackets) and applies the default port.
fn host_port(authority: &str, default: u16, whole: &str) -> Result<(String, u16), SourceError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| SourceError::Ipv6(redact_raw(whole)))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| SourceError::Port(redact_raw(whole)))?,
            ),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(SourceError::NoHost(redact_raw(whole)));
    }
    let port = match port {
        None => default,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(SourceError::Port(redact_raw(whole))),
        },
    };
    Ok((host.to_owned(), port))
}

impl Source {
    /// Parses a source URL.
    pub fn parse(url: &str) -> Result<Source, SourceError> {
        Source::parse_with(url, false)
    }

    /// Parses the URL of a folder (`relay bundle`, `relay check`): like [`Source::parse`],
    /// but the server's top folder (`tftp://host/`, `sftp://user@host/`) is allowed.
    pub fn parse_folder(url: &str) -> Result<Source, SourceError> {
        Source::parse_with(url, true)
    }

    /// The file `name` inside this folder (`…/EWC_17_9_4a` + `ap1g7` → `…/EWC_17_9_4a/ap1g7`).
    pub fn join(&self, name: &str) -> Source {
        let joined = |path: &str| {
            let base = path.trim_end_matches('/');
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}/{name}")
            }
        };
        match self {
            Source::Tftp { host, port, path } => Source::Tftp {
                host: host.clone(),
                port: *port,
                path: joined(path),
            },
            Source::Sftp {
                user,
                host,
                port,
                path,
            } => Source::Sftp {
                user: user.clone(),
                host: host.clone(),
                port: *port,
                path: format!("{}/{name}", path.trim_end_matches('/')),
            },
            Source::File { path } => Source::File {
                path: path.join(name),
            },
        }
    }

    fn parse_with(url: &str, folder: bool) -> Result<Source, SourceError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| SourceError::Scheme(redact_raw(url)))?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') || (path.len() < 2 && !folder) {
                    return Err(SourceError::NoPath(url.to_owned()));
                }
                Ok(Source::File {
                    path: PathBuf::from(percent_decode(path, url)?),
                })
            }
            "tftp" | "sftp" => {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let decoded = percent_decode(path, url)?;
                if decoded.trim_start_matches('/').is_empty() && !folder {
                    return Err(SourceError::NoPath(redact_raw(url)));
                }
                if scheme.eq_ignore_ascii_case("tftp") {
                    if authority.contains('@') {
                        return Err(SourceError::NoHost(redact_raw(url)));
                    }
                    let (host, port) = host_port(authority, TFTP_PORT, url)?;
                    let path = decoded.strip_prefix('/').unwrap_or(&decoded).to_owned();
                    Ok(Source::Tftp { host, port, path })
                } else {
                    let (userinfo, hostport) = authority
                        .rsplit_once('@')
                        .ok_or_else(|| SourceError::NoUser(redact_raw(url)))?;
                    if userinfo.contains(':') {
                        return Err(SourceError::Password(redact_raw(url)));
                    }
                    let user = percent_decode(userinfo, url)?;
                    if user.is_empty() {
                        return Err(SourceError::NoUser(redact_raw(url)));
                    }
                    let (host, port) = host_port(hostport, SSH_PORT, url)?;
                    Ok(Source::Sftp {
                        user,
                        host,
                        port,
                        path: decoded,
                    })
                }
            }
            _ => Err(SourceError::Scheme(redact_raw(url))),
        }
    }

    /// Everything that names what is fetched, user included (never printed): what the
    /// store's single flight is keyed on, so two accounts never share a fetch.
    pub(crate) fn identity(&self) -> String {
        match self {
            Source::Tftp { host, port, path } => format!("tftp\0{host}\0{port}\0{path}"),
            Source::Sftp {
                user,
                host,
                port,
                path,
            } => format!("sftp\0{user}\0{host}\0{port}\0{path}"),
            Source::File { path } => format!("file\0{}", path.display()),
        }
    }

    /// The last path component (the image's name).
    pub fn file_name(&self) -> &str {
        let p = match self {
            Source::Tftp { path, .. } | Source::Sftp { path, .. } => path.as_str(),
            Source::File { path } => path.to_str().unwrap_or(""),
        };
        p.rsplit('/').next().unwrap_or(p)
    }
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The controller's form, with the SFTP user masked.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Tftp { host, port, path } => {
                write!(f, "tftp://{}", host_for_url(host))?;
                if *port != TFTP_PORT {
                    write!(f, ":{port}")?;
                }
                write!(f, "/{path}")
            }
            Source::Sftp {
                host, port, path, ..
            } => {
                write!(f, "sftp://*****@{}", host_for_url(host))?;
                if *port != SSH_PORT {
                    write!(f, ":{port}")?;
                }
                if !path.starts_with('/') {
                    f.write_str("/")?;
                }
                f.write_str(path)
            }
            Source::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

/// Debug prints the redacted form too, so a source never leaks through `{:?}`.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_join_their_files_as_the_controller_names_them() {
        let cases = [
            (
                "sftp://calo@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/",
                "sftp://*****@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3",
            ),
            (
                "tftp://172.16.5.27/Wrong-Path",
                "tftp://172.16.5.27/Wrong-Path/ap3g3",
            ),
            ("tftp://172.16.5.27/", "tftp://172.16.5.27/ap3g3"),
            ("tftp://172.16.5.27", "tftp://172.16.5.27/ap3g3"),
            ("sftp://calo@[::1]:2222/", "sftp://*****@[::1]:2222/ap3g3"),
            ("file:///srv/tftp/EWC", "file:///srv/tftp/EWC/ap3g3"),
            ("file:///", "file:///ap3g3"),
        ];
        for (folder, file) in cases {
            let f = Source::parse_folder(folder).expect(folder);
            assert_eq!(f.join("ap3g3").to_string(), file, "{folder}");
            assert_eq!(f.join("ap3g3").file_name(), "ap3g3");
        }
        // A file URL still needs a path.
        assert!(Source::parse("tftp://172.16.5.27/").is_err());
        assert!(Source::parse("file:///").is_err());
        assert_eq!(
            Source::parse_folder("tftp://172.16.5.27/EWC/")
                .expect("folder")
                .join("version.info"),
            Source::parse("tftp://172.16.5.27/EWC/version.info").expect("file")
        );
    }

    #[test]
    fn the_documents_urls_parse_and_print_like_the_controller() {
        let s = Source::parse("sftp://calo@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3")
            .expect("sftp");
        assert_eq!(
            s.to_string(),
            "sftp://*****@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3"
        );
        assert_eq!(format!("{s:?}"), format!("Source({s})"));
        assert!(!format!("{s:?}").contains("calo"));
        match &s {
            Source::Sftp {
                user, port, path, ..
            } => {
                assert_eq!(user, "calo");
                assert_eq!(*port, 22);
                assert_eq!(path, "/Documents/sftp_files/EWC_17_9_4a/ap3g3");
            }
            other => panic!("{other:?}"),
        }
        let t = Source::parse("tftp://172.16.5.27/Wrong-Path/ap1g6").expect("tftp");
        assert_eq!(t.to_string(), "tftp://172.16.5.27/Wrong-Path/ap1g6");
        assert_eq!(
            t,
            Source::Tftp {
                host: "172.16.5.27".into(),
                port: 69,
                path: "Wrong-Path/ap1g6".into()
            }
        );
        assert_eq!(t.file_name(), "ap1g6");
    }

    #[test]
    fn ports_ipv6_files_and_escapes() {
        let t = Source::parse("tftp://[::1]:6969/a%20b/ap1g8").expect("v6");
        assert_eq!(t.to_string(), "tftp://[::1]:6969/a b/ap1g8");
        match Source::parse("file:///srv/airlift/ap1g8").expect("file") {
            Source::File { path } => assert_eq!(path, PathBuf::from("/srv/airlift/ap1g8")),
            other => panic!("{other:?}"),
        }
        let s = Source::parse("SFTP://ap@host:2222/x").expect("sftp port");
        assert_eq!(s.to_string(), "sftp://*****@host:2222/x");
        // An `@` in the path is a file name, shown as it is; only the user is masked.
        let t = Source::parse("tftp://a/%40").expect("@ in the path");
        assert_eq!(t.to_string(), "tftp://a/@");
        let s = Source::parse("sftp://ap@host/d/%40x").expect("sftp with @ in the path");
        assert_eq!(s.to_string(), "sftp://*****@host/d/@x");
    }

    #[test]
    fn bad_urls_are_refused_without_leaking_secrets() {
        let cases = [
            "http://h/x",
            "tftp:///x",
            "tftp://h",
            "tftp://h/",
            "tftp://h:0/x",
            "tftp://h:99999/x",
            "tftp://h:12a/x",
            "sftp://h/x",
            "sftp://@h/x",
            "tftp://[::1/x",
            "tftp://h/%zz",
            "tftp://h/a%00b",
            "file://relative",
        ];
        for c in cases {
            assert!(Source::parse(c).is_err(), "{c} parsed");
        }
        let Err(e) = Source::parse("sftp://calo:hunter2@h/x") else {
            panic!("a password in the URL was accepted");
        };
        assert!(matches!(e, SourceError::Password(_)));
        assert!(!e.to_string().contains("hunter2") && !e.to_string().contains("calo"));
        let Err(e) = Source::parse("sftp://calo:hunter2@h:bad/x") else {
            panic!("a bad port was accepted");
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // A password with a `/` in it (not percent-encoded) is still masked.
        for bad in ["sftp://calo:hun/ter2@h/x", "sftp://calo:hun/ter2@h:bad/x"] {
            let Err(e) = Source::parse(bad) else {
                panic!("{bad} parsed")
            };
            assert!(!e.to_string().contains("ter2"), "{e}");
            assert!(!e.to_string().contains("calo"), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = Source::parse(&s);
        }

        #[test]
        fn url_like_input_never_panics(
            scheme in "(tftp|sftp|file|x)",
            auth in "[a-z0-9@:\\[\\]%.]{0,20}",
            path in "[a-z0-9/%._-]{0,30}",
        ) {
            if let Ok(s) = Source::parse(&format!("{scheme}://{auth}{path}")) {
                // Credentials in the authority are masked; an `@` in the path (`%40`
                // decoded) is a file name, not credentials.
                let shown = s.to_string();
                let authority = shown
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split('/').next())
                    .unwrap_or("");
                proptest::prop_assert!(
                    !authority.contains('@') || authority.starts_with("*****@"),
                    "{}", shown
                );
            }
        }
    }
}
