//! Progress output in the shape of `docker build --progress plain`: numbered vertices
//! (`#5 [build 2/4] RUN make`), their output lines with a timestamp, and `CACHED`,
//! `DONE 0.3s` or `ERROR` when they end.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use skiff_runtime::attach::AttachSink;

/// How progress is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Every line as it happens (`--progress plain`).
    #[default]
    Plain,
    /// A terminal: the same lines, kept for the final summary (`--progress tty`).
    Tty,
    /// Nothing but errors (`-q`).
    Quiet,
}

/// The progress writer shared by the stages of one build.
pub struct Progress {
    out: Mutex<Box<dyn Write + Send>>,
    next: AtomicUsize,
    mode: ProgressMode,
}

impl Progress {
    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>, mode: ProgressMode) -> Self {
        Progress {
            out: Mutex::new(out),
            next: AtomicUsize::new(1),
            mode,
        }
    }

    fn write(&self, text: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    /// Starts vertex `#N` with `title`.
    pub fn start(&self, title: &str) -> Vertex<'_> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.write(&format!("#{n} {title}\n"));
        Vertex {
            progress: self,
            n,
            started: Instant::now(),
            partial: Vec::new(),
        }
    }
}

/// One numbered step of the output.
pub struct Vertex<'a> {
    progress: &'a Progress,
    n: usize,
    started: Instant,
    partial: Vec<u8>,
}

impl Vertex<'_> {
    /// A line of the step's own output.
    pub fn log(&self, line: &str) {
        self.progress.write(&format!(
            "#{} {:.3} {line}\n",
            self.n,
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// A status line without timestamp (`writing image ... done`).
    pub fn status(&self, line: &str) {
        self.progress.write(&format!("#{} {line}\n", self.n));
    }

    /// The step was a cache hit.
    pub fn cached(self) {
        self.progress.write(&format!("#{} CACHED\n\n", self.n));
    }

    /// The step finished.
    pub fn done(mut self) {
        self.flush_partial();
        self.progress.write(&format!(
            "#{} DONE {:.1}s\n\n",
            self.n,
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// The step failed.
    pub fn error(mut self, message: &str) {
        self.flush_partial();
        self.progress
            .write(&format!("#{} ERROR: {message}\n\n", self.n));
    }

    fn push(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            self.log(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r'));
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.log(&String::from_utf8_lossy(&line));
        }
    }
}

/// A RUN step's container output goes to its vertex, line by line.
impl AttachSink for Vertex<'_> {
    fn stdout(&mut self, data: &[u8]) {
        self.push(data);
    }

    fn stderr(&mut self, data: &[u8]) {
        self.push(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_output_shape() {
        let buf = Buf::default();
        let p = Progress::new(Box::new(buf.clone()), ProgressMode::Plain);
        p.start("[stage-0 1/2] FROM busybox").done();
        let mut v = p.start("[stage-0 2/2] RUN echo hi");
        v.stdout(b"hel");
        v.stdout(b"lo\nwor");
        v.stderr(b"ld");
        v.done();
        p.start("[stage-0 2/2] RUN x").cached();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#1 [stage-0 1/2] FROM busybox");
        assert!(lines[1].starts_with("#1 DONE 0.0s"));
        assert!(lines[4].starts_with("#2 0.") && lines[4].ends_with(" hello"));
        assert!(lines[5].ends_with(" world"));
        assert!(text.contains("#3 CACHED\n"));
    }
}
