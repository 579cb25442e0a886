//! Reading the stick. tough's own `FilesystemTransport` streams in 4 KiB chunks through tokio's
//! blocking pool, which costs more CPU than the hashing; this one reads 1 MiB at a time. Sizes
//! and hashes are still enforced by tough on top of whatever a transport returns.

use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use futures::TryStreamExt;

/// Bytes read from the stick per chunk.
pub const CHUNK: usize = 1024 * 1024;

/// Opens a file on the stick without following a link and without blocking on a FIFO, and
/// refuses anything but a regular file. Checked on the opened descriptor, so a stick cannot swap
/// the file for a FIFO or a link between the directory check and the read.
fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Reads `file://` URLs from a mounted bundle directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct StickTransport;

#[tough::async_trait]
impl Transport for StickTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if url.scheme() != "file" {
            return Err(TransportError::new(TransportErrorKind::UnsupportedUrlScheme, url));
        }
        let path = url
            .to_file_path()
            .map_err(|()| TransportError::new(TransportErrorKind::Other, url.clone()))?;
        let file = open_regular(&path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                TransportErrorKind::FileNotFound
            } else {
                TransportErrorKind::Other
            };
            TransportError::new_with_cause(kind, url.clone(), e)
        })?;
        let file = tokio::fs::File::from_std(file);
        let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK)
            .map_err(move |e| TransportError::new_with_cause(TransportErrorKind::Other, url.clone(), e));
        Ok(Box::pin(stream))
    }
}
