//! `skiff logs`: reading a container's CRI log file.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::time::Duration;

use chrono::SecondsFormat;
use skiff_runtime::crilog::{self, Record, Stream};

use crate::{Engine, EngineError, Result};

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep following until the container stops (`-f`).
    pub follow: bool,
    /// Only the last N lines (`--tail`).
    pub tail: Option<usize>,
    /// Prefix each line with its time (`-t`).
    pub timestamps: bool,
}

fn emit(
    record: &Record,
    at_line_start: &mut bool,
    timestamps: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let w: &mut dyn Write = match record.stream {
        Stream::Stdout => out,
        Stream::Stderr => err,
    };
    if timestamps && *at_line_start {
        write!(
            w,
            "{} ",
            record.time.to_rfc3339_opts(SecondsFormat::Nanos, true)
        )?;
    }
    w.write_all(&record.content)?;
    if !record.partial {
        w.write_all(b"\n")?;
    }
    *at_line_start = !record.partial;
    Ok(())
}

impl Engine {
    /// The container's CRI-format log file (it may not exist yet).
    pub fn log_path(&self, name_or_id: &str) -> Result<std::path::PathBuf> {
        let container = self.find(name_or_id)?;
        Ok(self.files(&container.record.id).log())
    }

    /// Writes the container's logs to `out` and `err` by stream.
    pub fn logs(
        &self,
        name_or_id: &str,
        opts: &LogOptions,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<()> {
        let container = self.find(name_or_id)?;
        let path = self.files(&container.record.id).log();
        let io = EngineError::io(format!("reading logs of {}", container.record.name));
        let file = match std::fs::File::open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let mut at_line_start = true;
        let mut position = 0u64;
        if let Some(file) = file {
            let mut reader = BufReader::new(file);
            let records = crilog::read_all(&mut reader).map_err(EngineError::io("reading logs"))?;
            position = reader.stream_position().unwrap_or(0);
            let start = opts
                .tail
                .map(|n| crilog::tail_start(&records, n))
                .unwrap_or(0);
            for r in &records[start..] {
                emit(r, &mut at_line_start, opts.timestamps, out, err)
                    .map_err(EngineError::io("writing logs"))?;
            }
        }
        out.flush().ok();
        err.flush().ok();
        if !opts.follow {
            return Ok(());
        }
        let mut pending = Vec::new();
        loop {
            let running = self
                .find(&container.record.id)
                .map(|c| c.is_running())
                .unwrap_or(false);
            if let Ok(mut f) = std::fs::File::open(&path) {
                f.seek(SeekFrom::Start(position))
                    .map_err(EngineError::io("reading logs"))?;
                let mut reader = BufReader::new(f);
                loop {
                    let n = reader
                        .read_until(b'\n', &mut pending)
                        .map_err(EngineError::io("reading logs"))?;
                    if n == 0 || !pending.ends_with(b"\n") {
                        break;
                    }
                    position += pending.len() as u64;
                    if let Some(r) = crilog::parse_line(&pending) {
                        emit(&r, &mut at_line_start, opts.timestamps, out, err)
                            .map_err(EngineError::io("writing logs"))?;
                    }
                    pending.clear();
                }
                // An incomplete line is read again next round.
                pending.clear();
                out.flush().ok();
                err.flush().ok();
            }
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
