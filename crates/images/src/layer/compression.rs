//! Layer compression, detected from magic bytes rather than trusted from media types.

use std::io::{self, Cursor, Read};

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), possibly multi-member.
    Gzip,
    /// Zstandard frames.
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        use crate::manifest::media_type::*;
        match self {
            Compression::None => OCI_LAYER,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

/// The longest magic we look at.
const SNIFF_LEN: usize = 6;

/// Recognises the compression from the first bytes of a stream.
///
/// Returns `Err(name)` for compressions a layer may not use (xz, bzip2).
pub fn detect(head: &[u8]) -> Result<Compression, &'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Err("xz")
    } else if head.starts_with(b"BZh") {
        Err("bzip2")
    } else {
        Ok(Compression::None)
    }
}

/// Reads up to six bytes from `reader` and returns them with the detected compression.
///
/// The caller chains the returned bytes in front of the rest of the stream.
pub fn sniff<R: Read>(reader: &mut R) -> io::Result<(Vec<u8>, Result<Compression, &'static str>)> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    reader.take(SNIFF_LEN as u64).read_to_end(&mut head)?;
    let c = detect(&head);
    Ok((head, c))
}

/// Wraps `reader` (whose first bytes are `head`) in the matching decompressor.
pub fn decoder<'a, R: Read + 'a>(
    head: Vec<u8>,
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    let stream = Cursor::new(head).chain(reader);
    Ok(match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::Decoder::new(stream)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_round_trips() {
        let data = b"some tar bytes that are long enough".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for (blob, expected) in [
            (data.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
        ] {
            let mut r = &blob[..];
            let (head, c) = sniff(&mut r).unwrap();
            assert_eq!(c, Ok(expected));
            let mut out = Vec::new();
            decoder(head, r, expected)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
        assert_eq!(detect(b"BZh91AY"), Err("bzip2"));
        assert_eq!(detect(b""), Ok(Compression::None));
    }
}
