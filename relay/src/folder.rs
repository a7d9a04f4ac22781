//! A bundle's folder on a server (`tftp://host/EWC_17_9_4a`, `sftp://user@host/…/EWC_17_9_4a`,
//! `file:///srv/tftp/EWC_17_9_4a`), reached once for several files: one SSH login for all of
//! an SFTP folder's files, as the controller's "Save & Download" would use it.

use std::io::Write;
use std::time::Instant;

use crate::error::{ErrorKind, FetchError};
use crate::progress::Progress;
use crate::source::Source;
use crate::{FetchOptions, sftp, tftp};

/// A folder, open for probing and fetching its files.
#[derive(Debug)]
pub struct Folder {
    base: Source,
    opts: FetchOptions,
    session: Option<sftp::Session>,
}

/// A small file read into memory, refused past its cap.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            return Err(std::io::Error::other(format!(
                "larger than the {} bytes expected of it",
                self.cap
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Folder {
    /// Opens `base`: for SFTP, connects, checks the host key and logs in (the errors a wrong
    /// server, key or password give); for TFTP and local folders, nothing is sent yet.
    pub async fn open(base: &Source, opts: &FetchOptions) -> Result<Folder, FetchError> {
        let session = match base {
            Source::Sftp { .. } => {
                let Some(o) = &opts.sftp else {
                    return Err(FetchError::new(
                        base,
                        ErrorKind::AuthenticationFailed,
                        "no password or key given",
                    ));
                };
                let deadline = Instant::now() + o.deadline;
                Some(sftp::within(base, o.deadline, deadline, sftp::Session::open(base, o)).await?)
            }
            _ => None,
        };
        Ok(Folder {
            base: base.clone(),
            opts: opts.clone(),
            session,
        })
    }

    /// The folder itself.
    pub fn base(&self) -> &Source {
        &self.base
    }

    /// The file `name` in the folder.
    pub fn file(&self, name: &str) -> Source {
        self.base.join(name)
    }

    /// Whether the folder exists and is a folder (SFTP and local folders; TFTP cannot say, so
    /// `Ok(None)`).
    pub async fn is_dir(&mut self) -> Result<Option<bool>, FetchError> {
        let base = self.base.clone();
        match (&base, &mut self.session, &self.opts.sftp) {
            (Source::Sftp { .. }, Some(s), Some(o)) => {
                let deadline = Instant::now() + o.deadline;
                let st = sftp::within(&base, o.deadline, deadline, s.stat(&base)).await?;
                Ok(Some(st.is_dir))
            }
            (Source::File { path }, _, _) => match std::fs::metadata(path) {
                Ok(m) => Ok(Some(m.is_dir())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(FetchError::new(&base, ErrorKind::NotFound, ""))
                }
                Err(e) => Err(FetchError::new(&base, ErrorKind::LocalIo, e.to_string())),
            },
            _ => Ok(None),
        }
    }

    /// Whether `name` is there to be fetched, and its size when the server says: STAT over
    /// SFTP, a request ended at the server's first answer over TFTP. A missing file is
    /// [`ErrorKind::NotFound`].
    pub async fn probe(&mut self, name: &str) -> Result<Option<u64>, FetchError> {
        let file = self.file(name);
        match (&file, &mut self.session, &self.opts.sftp) {
            (Source::Sftp { .. }, Some(s), Some(o)) => {
                let deadline = Instant::now() + o.deadline;
                let st = sftp::within(&file, o.deadline, deadline, s.stat(&file)).await?;
                if st.is_dir {
                    return Err(FetchError::new(&file, ErrorKind::NotFound, "a folder"));
                }
                Ok(st.size)
            }
            (Source::Tftp { .. }, _, _) => tftp::probe(&file, &self.opts.tftp).await,
            (Source::File { path }, _, _) => match std::fs::metadata(path) {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Err(FetchError::new(&file, ErrorKind::NotFound, "not a file")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(FetchError::new(&file, ErrorKind::NotFound, ""))
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    Err(FetchError::new(&file, ErrorKind::PermissionDenied, ""))
                }
                Err(e) => Err(FetchError::new(&file, ErrorKind::LocalIo, e.to_string())),
            },
            _ => crate::fetch_into(&file, &self.opts, &mut std::io::sink(), &mut |_| {})
                .await
                .map(Some),
        }
    }

    /// Fetches `name` into `sink`; returns the bytes written.
    pub async fn fetch(
        &mut self,
        name: &str,
        sink: &mut (dyn Write + Send),
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<u64, FetchError> {
        let file = self.file(name);
        match (&mut self.session, &self.opts.sftp) {
            (Some(s), Some(o)) => {
                let deadline = Instant::now() + o.deadline;
                let work = s.fetch(&file, sink, progress);
                Ok(sftp::within(&file, o.deadline, deadline, work).await?.bytes)
            }
            _ => crate::fetch_into(&file, &self.opts, sink, progress).await,
        }
    }

    /// Fetches a small file (`version.info`, `manifest.json`) into memory; more than `cap`
    /// bytes is an error.
    pub async fn read_small(&mut self, name: &str, cap: usize) -> Result<Vec<u8>, FetchError> {
        let mut sink = Capped {
            buf: Vec::new(),
            cap,
        };
        self.fetch(name, &mut sink, &mut |_| {}).await?;
        Ok(sink.buf)
    }

    /// Logs out (SFTP).
    pub async fn close(self) {
        if let Some(s) = self.session {
            s.close().await;
        }
    }
}
