//! The server side of SPDY/3.1 (draft-mbelshe-httpbis-spdy), as much as Kubernetes'
//! streaming protocols use: kubectl (client-go over moby/spdystream) opens streams with
//! SYN_STREAM frames whose headers name their role (`streamtype: stdout`, `port: 8080`),
//! the server answers each with SYN_REPLY, and bytes flow in DATA frames until a FIN.
//!
//! Header blocks are one zlib stream per direction, primed with the SPDY/3 dictionary.
//! Flow control (WINDOW_UPDATE) is neither sent nor enforced: spdystream does not use it.

use std::collections::HashMap;
use std::io;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// The protocol version in every control frame.
const VERSION: u16 = 3;
/// SYN_STREAM.
const SYN_STREAM: u16 = 1;
/// SYN_REPLY.
const SYN_REPLY: u16 = 2;
/// RST_STREAM.
const RST_STREAM: u16 = 3;
/// PING.
const PING: u16 = 6;
/// GOAWAY.
const GOAWAY: u16 = 7;
/// HEADERS.
const HEADERS: u16 = 8;
/// The last frame of a stream's direction.
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is cancelled.
const CANCEL: u32 = 5;
/// The largest DATA payload sent in one frame.
const MAX_DATA: usize = 32 * 1024;
/// The largest frame accepted (the 24-bit length allows 16 MiB).
const MAX_FRAME: usize = 1 << 24;

/// Names in the SPDY/3 header dictionary, each preceded by its big-endian u32 length.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's unprefixed tail.
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411\
412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server \
Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov \
Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,\
image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate\
max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The SPDY/3 header compression dictionary (section 2.6.10.1 of the draft).
pub fn dictionary() -> Vec<u8> {
    let mut dict = Vec::with_capacity(1424);
    for word in DICTIONARY_WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    dict
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Decompresses the header blocks of one direction.
pub struct HeaderReader {
    zlib: Decompress,
}

impl Default for HeaderReader {
    fn default() -> Self {
        HeaderReader {
            zlib: Decompress::new(true),
        }
    }
}

impl HeaderReader {
    /// Decodes one compressed header block into (name, value) pairs.
    pub fn read(&mut self, block: &[u8]) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut consumed = 0;
        loop {
            let (before_in, before_out) = (self.zlib.total_in(), self.zlib.total_out());
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            match self
                .zlib
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&dictionary())
                        .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
                }
                Err(e) => return Err(invalid(format!("SPDY header block: {e}"))),
            }
            consumed += (self.zlib.total_in() - before_in) as usize;
            let progressed =
                self.zlib.total_in() != before_in || self.zlib.total_out() != before_out;
            if consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
            if !progressed && consumed >= block.len() {
                break;
            }
        }
        parse_header_block(&out)
    }
}

/// Compresses the header blocks of one direction.
pub struct HeaderWriter {
    zlib: Compress,
}

impl Default for HeaderWriter {
    fn default() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&dictionary())
            .expect("a fresh deflate stream takes a dictionary");
        HeaderWriter { zlib }
    }
}

impl HeaderWriter {
    /// Encodes and compresses one header block.
    pub fn write(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name.to_ascii_lowercase().as_str(), value] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut consumed = 0;
        loop {
            let before = self.zlib.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            self.zlib
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer");
            consumed += (self.zlib.total_in() - before) as usize;
            if consumed >= plain.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// Parses an uncompressed header block.
pub fn parse_header_block(block: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut at = 0;
    let mut next = |len: usize| -> io::Result<&[u8]> {
        let slice = block
            .get(at..at + len)
            .ok_or_else(|| invalid("truncated SPDY header block"))?;
        at += len;
        Ok(slice)
    };
    let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(next(4)?);
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = u32_at(next(4)?);
        let name = String::from_utf8_lossy(next(len)?).to_ascii_lowercase();
        let len = u32_at(next(4)?);
        let value = String::from_utf8_lossy(next(len)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// One frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control frame: type, flags, payload.
    Control(u16, u8, Vec<u8>),
    /// A DATA frame: stream, flags, payload.
    Data(u32, u8, Vec<u8>),
}

/// Encodes a control frame.
pub fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// Encodes a DATA frame.
pub fn data_frame(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads one frame; `None` at a clean end of the connection.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 8];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = header[4];
    let len = u32::from_be_bytes([0, header[5], header[6], header[7]]) as usize;
    if len >= MAX_FRAME {
        return Err(invalid("SPDY frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if header[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([header[0] & 0x7f, header[1]]);
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version} is not supported")));
        }
        let kind = u16::from_be_bytes([header[2], header[3]]);
        Ok(Some(Frame::Control(kind, flags, payload)))
    } else {
        let stream = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        Ok(Some(Frame::Data(stream, flags, payload)))
    }
}

/// A stream the client opened.
#[derive(Debug)]
pub struct Stream {
    /// Its id.
    pub id: u32,
    /// The headers of its SYN_STREAM.
    pub headers: Vec<(String, String)>,
    /// What the client sends on it; closed at the client's FIN or RST_STREAM.
    pub data: mpsc::UnboundedReceiver<Bytes>,
}

impl Stream {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Out {
    Reply(u32),
    Data(u32, Bytes),
    Fin(u32),
    Reset(u32),
    Raw(Vec<u8>),
    GoAway,
}

/// Sends on a connection's streams; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<Out>,
}

impl Sender {
    /// Sends bytes on a stream; false once the connection is gone.
    pub fn data(&self, stream: u32, data: Bytes) -> bool {
        self.tx.send(Out::Data(stream, data)).is_ok()
    }

    /// Ends the server's direction of a stream.
    pub fn finish(&self, stream: u32) {
        let _ = self.tx.send(Out::Fin(stream));
    }

    /// Cancels a stream.
    pub fn reset(&self, stream: u32) {
        let _ = self.tx.send(Out::Reset(stream));
    }

    /// Says goodbye and closes the connection once everything queued is written.
    pub fn close(&self) {
        let _ = self.tx.send(Out::GoAway);
    }
}

/// Serves a SPDY connection: returns the streams the client opens (each already answered
/// with SYN_REPLY) and a sender for the server's side.
pub fn serve<T>(io: T) -> (mpsc::UnboundedReceiver<Stream>, Sender)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();
    let sender = Sender { tx: out_tx };

    tokio::spawn(async move {
        let mut headers = HeaderWriter::default();
        let mut last_stream = 0u32;
        while let Some(out) = out_rx.recv().await {
            let frame = match out {
                Out::Reply(id) => {
                    last_stream = last_stream.max(id);
                    let mut payload = id.to_be_bytes().to_vec();
                    payload.extend(headers.write(&[]));
                    control_frame(SYN_REPLY, 0, &payload)
                }
                Out::Data(id, data) => {
                    let mut frames = Vec::with_capacity(data.len() + 16);
                    for chunk in data.chunks(MAX_DATA) {
                        frames.extend(data_frame(id, 0, chunk));
                    }
                    frames
                }
                Out::Fin(id) => data_frame(id, FLAG_FIN, &[]),
                Out::Reset(id) => {
                    let mut payload = id.to_be_bytes().to_vec();
                    payload.extend_from_slice(&CANCEL.to_be_bytes());
                    control_frame(RST_STREAM, 0, &payload)
                }
                Out::Raw(frame) => frame,
                Out::GoAway => {
                    let mut payload = last_stream.to_be_bytes().to_vec();
                    payload.extend_from_slice(&0u32.to_be_bytes());
                    let _ = writer.write_all(&control_frame(GOAWAY, 0, &payload)).await;
                    let _ = writer.flush().await;
                    let _ = writer.shutdown().await;
                    return;
                }
            };
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            if out_rx.is_empty() && writer.flush().await.is_err() {
                return;
            }
        }
    });

    let replies = sender.clone();
    tokio::spawn(async move {
        let mut headers = HeaderReader::default();
        let mut open: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
        loop {
            let frame = match read_frame(&mut reader).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("SPDY connection: {e}");
                    break;
                }
            };
            match frame {
                Frame::Control(SYN_STREAM, flags, payload) if payload.len() >= 10 => {
                    let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    let Ok(stream_headers) = headers.read(&payload[10..]) else {
                        break;
                    };
                    let (data_tx, data_rx) = mpsc::unbounded_channel();
                    if flags & FLAG_FIN == 0 {
                        open.insert(id, data_tx);
                    }
                    let _ = replies.tx.send(Out::Reply(id));
                    let stream = Stream {
                        id,
                        headers: stream_headers,
                        data: data_rx,
                    };
                    if streams_tx.send(stream).is_err() {
                        replies.reset(id);
                    }
                }
                Frame::Control(HEADERS, _, payload) if payload.len() >= 4 => {
                    // Read to keep the shared zlib stream in step; nothing uses them.
                    if headers.read(&payload[4..]).is_err() {
                        break;
                    }
                }
                Frame::Control(RST_STREAM, _, payload) if payload.len() >= 4 => {
                    let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    open.remove(&id);
                }
                Frame::Control(PING, _, payload) => {
                    let _ = replies.tx.send(Out::Raw(control_frame(PING, 0, &payload)));
                }
                Frame::Control(GOAWAY, _, _) => break,
                Frame::Control(..) => {}
                Frame::Data(id, flags, payload) => {
                    if let Some(tx) = open.get(&id) {
                        if !payload.is_empty() {
                            let _ = tx.send(Bytes::from(payload));
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open.remove(&id);
                    }
                }
            }
        }
        // The client is gone: every stream's incoming side ends.
        drop(open);
    });
    (streams_rx, sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(&dict[..11], b"\0\0\0\x07options");
        // Its Adler-32 is the DICTID every SPDY/3 header stream names.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &dict {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_round_trip_across_one_zlib_stream() {
        let mut w = HeaderWriter::default();
        let mut r = HeaderReader::default();
        let first = w.write(&[("streamtype", "error"), ("port", "8080")]);
        let second = w.write(&[("streamtype", "data"), ("port", "8080")]);
        assert_eq!(
            r.read(&first).unwrap(),
            vec![
                ("streamtype".to_string(), "error".to_string()),
                ("port".to_string(), "8080".to_string())
            ]
        );
        assert_eq!(r.read(&second).unwrap()[0].1, "data");
        assert!(w.write(&[]).len() < 16);
    }

    #[test]
    fn frames_encode_and_decode() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut bytes = control_frame(PING, 0, &7u32.to_be_bytes());
        bytes.extend(data_frame(3, FLAG_FIN, b"hi"));
        let mut cursor = std::io::Cursor::new(bytes);
        rt.block_on(async {
            assert_eq!(
                read_frame(&mut cursor).await.unwrap(),
                Some(Frame::Control(PING, 0, 7u32.to_be_bytes().to_vec()))
            );
            assert_eq!(
                read_frame(&mut cursor).await.unwrap(),
                Some(Frame::Data(3, FLAG_FIN, b"hi".to_vec()))
            );
            assert_eq!(read_frame(&mut cursor).await.unwrap(), None);
        });
    }

    #[test]
    fn streams_are_answered_and_carry_data() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut streams, sender) = serve(server);
            let (mut client_r, mut client_w) = tokio::io::split(client);
            let mut headers = HeaderWriter::default();
            let mut syn = 1u32.to_be_bytes().to_vec();
            syn.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            syn.extend(headers.write(&[("streamtype", "stdin")]));
            client_w
                .write_all(&control_frame(SYN_STREAM, 0, &syn))
                .await
                .unwrap();
            client_w
                .write_all(&data_frame(1, FLAG_FIN, b"input"))
                .await
                .unwrap();
            let mut stream = streams.recv().await.unwrap();
            assert_eq!(stream.header("streamtype"), Some("stdin"));
            assert_eq!(stream.data.recv().await.unwrap(), Bytes::from("input"));
            assert!(stream.data.recv().await.is_none());

            // The reply comes first, then what the server sends.
            sender.data(1, Bytes::from("output"));
            sender.finish(1);
            let mut replies = HeaderReader::default();
            match read_frame(&mut client_r).await.unwrap().unwrap() {
                Frame::Control(SYN_REPLY, _, payload) => {
                    assert_eq!(&payload[..4], &1u32.to_be_bytes());
                    assert!(replies.read(&payload[4..]).unwrap().is_empty());
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                read_frame(&mut client_r).await.unwrap(),
                Some(Frame::Data(1, 0, b"output".to_vec()))
            );
            assert_eq!(
                read_frame(&mut client_r).await.unwrap(),
                Some(Frame::Data(1, FLAG_FIN, vec![]))
            );
        });
    }
}
