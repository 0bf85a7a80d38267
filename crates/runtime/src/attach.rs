//! The attach protocol between a shim and its clients (`skiff run`, `skiff attach`).
//!
//! A stream of frames over the shim's unix socket: one kind byte, a
//! big-endian u32 length, the payload. The shim sends output and, last, the
//! exit status; clients send stdin, an end of stdin and terminal resizes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::status::ExitStatus;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to shim: bytes for the container's stdin.
    Stdin = 0,
    /// Shim to client: container stdout (or the terminal).
    Stdout = 1,
    /// Shim to client: container stderr.
    Stderr = 2,
    /// Shim to client: the container exited; payload is an [`ExitStatus`] as JSON.
    Exit = 3,
    /// Client to shim: no more stdin.
    CloseStdin = 5,
    /// Client to shim: terminal size, rows then columns as u16 big-endian.
    Resize = 6,
    /// Client to shim: "I will do the exit command's work myself once I get
    /// the exit frame" (a foreground `run` cleans up in-process). If that
    /// client is gone when the container exits, the shim runs the command.
    TakeCleanup = 7,
    /// Client to shim: start the container now. A shim started with
    /// `wait_for_attach` holds the created container until its first client
    /// sends this (after the engine set up networking, for instance).
    Start = 8,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Exit,
            5 => FrameKind::CloseStdin,
            6 => FrameKind::Resize,
            7 => FrameKind::TakeCleanup,
            8 => FrameKind::Start,
            _ => return None,
        })
    }
}

/// Largest payload accepted in one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// Encodes one frame.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(kind as u8);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(kind, payload))
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let kind = FrameKind::from_u8(header[0])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown attach frame kind"))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "attach frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// Incrementally decodes frames from a non-blocking byte stream.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if any; an error for a corrupt stream.
    pub fn next_frame(&mut self) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "attach frame too large",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(self.buf[0]).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unknown attach frame kind")
        })?;
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// Where an attached client sends what it receives.
pub trait AttachSink {
    /// Container stdout bytes.
    fn stdout(&mut self, data: &[u8]);
    /// Container stderr bytes.
    fn stderr(&mut self, data: &[u8]);
}

/// Connects to a shim's attach socket.
pub fn connect(socket: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(socket)
}

/// Reads output frames into `sink` until the exit frame; `None` if the shim
/// went away without reporting an exit.
pub fn pump_output(
    stream: &mut UnixStream,
    sink: &mut dyn AttachSink,
) -> io::Result<Option<ExitStatus>> {
    while let Some((kind, payload)) = read_frame(stream)? {
        match kind {
            FrameKind::Stdout => sink.stdout(&payload),
            FrameKind::Stderr => sink.stderr(&payload),
            FrameKind::Exit => {
                let status = serde_json::from_slice(&payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return Ok(Some(status));
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_decoder() {
        let mut d = Decoder::default();
        let mut bytes = encode(FrameKind::Stdin, b"abc");
        bytes.extend(encode(FrameKind::Resize, &[0, 24, 0, 80]));
        d.push(&bytes[..4]);
        assert!(d.next_frame().unwrap().is_none());
        d.push(&bytes[4..]);
        assert_eq!(
            d.next_frame().unwrap(),
            Some((FrameKind::Stdin, b"abc".to_vec()))
        );
        assert_eq!(
            d.next_frame().unwrap(),
            Some((FrameKind::Resize, vec![0, 24, 0, 80]))
        );
        assert!(d.next_frame().unwrap().is_none());
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }
}
