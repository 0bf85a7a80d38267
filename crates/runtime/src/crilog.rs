//! Container logs in the CRI log format, the files `kubectl logs` reads.
//!
//! Each record is one line: `<RFC3339Nano time> <stream> <tag> <content>`,
//! where tag `F` ends a line and `P` marks a partial chunk (a line longer
//! than [`MAX_LINE`] or output that stopped before a newline).

use std::io::{self, BufRead, Write};

use chrono::{DateTime, SecondsFormat, Utc};

/// Longest content of one record before it is split with `P` tags.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the runtime read the bytes.
    pub time: DateTime<Utc>,
    /// Source stream.
    pub stream: Stream,
    /// True for a `P` (partial) record: no newline follows the content.
    pub partial: bool,
    /// The bytes, without the newline.
    pub content: Vec<u8>,
}

/// Splits raw container output into CRI records and appends them to a file.
pub struct Writer<W: Write> {
    out: W,
    pending: [Vec<u8>; 2],
}

impl<W: Write> Writer<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Records bytes read from `stream`; complete lines are written at once.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            self.emit_line(stream, line)?;
            start += nl + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.emit(stream, true, &rest)?;
            rest = tail;
        }
        self.pending[idx] = rest;
        Ok(())
    }

    fn emit_line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if chunks.peek().is_none() {
            return self.emit(stream, false, b"");
        }
        while let Some(chunk) = chunks.next() {
            self.emit(stream, chunks.peek().is_some(), chunk)?;
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let tag = if partial { "P" } else { "F" };
        let mut record = Vec::with_capacity(content.len() + 48);
        record.extend_from_slice(time.as_bytes());
        record.push(b' ');
        record.extend_from_slice(stream.as_str().as_bytes());
        record.push(b' ');
        record.extend_from_slice(tag.as_bytes());
        record.push(b' ');
        record.extend_from_slice(content);
        record.push(b'\n');
        self.out.write_all(&record)
    }

    /// Pushes written records to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes out buffered partial output (at container exit).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.emit(stream, true, &rest)?;
            }
        }
        self.out.flush()
    }
}

/// Parses one CRI log line; `None` for a malformed line.
pub fn parse_line(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"").to_vec();
    Some(Record {
        time,
        stream,
        partial,
        content,
    })
}

/// Reads every record of a log.
pub fn read_all<R: BufRead>(mut reader: R) -> io::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if let Some(r) = parse_line(&line) {
            records.push(r);
        }
    }
    Ok(records)
}

/// Index of the first record belonging to the last `n` complete lines.
pub fn tail_start(records: &[Record], n: usize) -> usize {
    let mut lines = 0;
    for (i, r) in records.iter().enumerate().rev() {
        if !r.partial {
            lines += 1;
            if lines > n {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tagged_full_and_partial() {
        let mut out = Vec::new();
        {
            let mut w = Writer::new(&mut out);
            w.write(Stream::Stdout, b"hello\nwor").unwrap();
            w.write(Stream::Stderr, b"oops\n").unwrap();
            w.write(Stream::Stdout, b"ld\nno newline").unwrap();
            w.flush_partial().unwrap();
        }
        let records = read_all(&out[..]).unwrap();
        let shown: Vec<(Stream, bool, &[u8])> = records
            .iter()
            .map(|r| (r.stream, r.partial, r.content.as_slice()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (Stream::Stdout, false, &b"hello"[..]),
                (Stream::Stderr, false, &b"oops"[..]),
                (Stream::Stdout, false, &b"world"[..]),
                (Stream::Stdout, true, &b"no newline"[..]),
            ]
        );
    }

    #[test]
    fn long_lines_are_split() {
        let mut out = Vec::new();
        {
            let mut w = Writer::new(&mut out);
            let mut line = vec![b'x'; MAX_LINE + 10];
            line.push(b'\n');
            w.write(Stream::Stdout, &line).unwrap();
        }
        let records = read_all(&out[..]).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[0].partial);
        assert!(!records[1].partial);
        assert_eq!(records[1].content.len(), 10);
    }

    #[test]
    fn tail_counts_complete_lines() {
        let mut out = Vec::new();
        {
            let mut w = Writer::new(&mut out);
            w.write(Stream::Stdout, b"1\n2\n3\n").unwrap();
        }
        let records = read_all(&out[..]).unwrap();
        assert_eq!(tail_start(&records, 2), 1);
        assert_eq!(tail_start(&records, 10), 0);
        assert_eq!(tail_start(&records, 0), 3);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2024-01-01T00:00:00Z stdin F x").is_none());
    }
}
