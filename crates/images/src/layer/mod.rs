//! Layer blobs: compression detection, verified unpacking and safe tar extraction.

pub mod compression;
pub mod diff;
pub mod extract;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::Path;

pub use compression::Compression;
pub use diff::{write_layer_tar, DiffError};
pub use extract::{unpack_tar, ExtractError, ExtractStats};

use crate::digest::{Digest, HashingReader};

/// What unpacking one layer blob produced: both digests and the extraction stats.
#[derive(Debug, Clone)]
pub struct ExtractedLayer {
    /// Digest of the blob as read (compressed form).
    pub digest: Digest,
    /// Size of the blob as read.
    pub blob_size: u64,
    /// Digest of the uncompressed tar stream (the OCI diff-id).
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub diff_size: u64,
    /// Compression detected from magic bytes.
    pub compression: Compression,
    /// Counts from the extraction.
    pub stats: ExtractStats,
}

/// Extracts a layer blob (gzip, zstd or plain tar, detected by magic) into `dest`.
///
/// Computes the blob digest and the diff-id while streaming; the caller compares them
/// with the expected values and discards `dest` on mismatch. Plain public function so a
/// fuzz target can drive it.
pub fn extract_layer<R: Read>(reader: R, dest: &Path) -> Result<ExtractedLayer, ExtractError> {
    let mut blob = HashingReader::new(reader);
    let (head, compression) = compression::sniff(&mut blob).map_err(ExtractError::Read)?;
    let compression = compression.map_err(ExtractError::UnsupportedCompression)?;
    let decoded = compression::decoder(head, &mut blob, compression).map_err(ExtractError::Read)?;
    let mut diff = HashingReader::new(decoded);
    let stats = unpack_tar(&mut diff, dest)?;
    let (diff_id, diff_size) = diff.finish().map_err(ExtractError::Read)?;
    let (digest, blob_size) = blob.finish().map_err(ExtractError::Read)?;
    Ok(ExtractedLayer {
        digest,
        blob_size,
        diff_id,
        diff_size,
        compression,
        stats,
    })
}
