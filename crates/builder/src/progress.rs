//! Progress output in the shapes of `docker build --progress`:
//!
//! - plain: numbered vertices (`#5 [build 2/4] RUN make`), their output lines with a
//!   timestamp, and `CACHED`, `DONE 0.3s` or `ERROR` when they end, each line written
//!   once, as it happens;
//! - tty: BuildKit's live display, redrawn in place with ANSI cursor movement ten times
//!   a second: a `[+] Building 1.2s (5/9)` header, one line per vertex with its status
//!   and time (`DONE 0.4s`, `CACHED`, a running clock), and the last output lines of the
//!   running steps; what is left on screen at the end is the summary. A failed step's
//!   output is printed in full below it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_runtime::attach::AttachSink;

/// How progress is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Every line as it happens (`--progress plain`).
    #[default]
    Plain,
    /// A live display redrawn in place on a terminal (`--progress tty`).
    Tty,
    /// Nothing but errors (`-q`).
    Quiet,
}

/// Output lines of a running step the display shows (BuildKit shows a few too).
const SHOWN_LOG_LINES: usize = 6;
/// Output lines kept per step, printed in full when the step fails.
const KEPT_LOG_LINES: usize = 30;
/// How often the display redraws while steps run (their clocks move).
const TICK: Duration = Duration::from_millis(100);

/// The progress writer shared by the stages of one build.
pub struct Progress {
    inner: Arc<Inner>,
    ticker: Option<JoinHandle<()>>,
}

struct Inner {
    out: Mutex<Box<dyn Write + Send>>,
    next: AtomicUsize,
    mode: ProgressMode,
    /// The tty display's state; unused in the other modes.
    display: Mutex<Display>,
    stop: AtomicBool,
}

impl Progress {
    /// Writes to `out` (in tty mode: a terminal, the one on stderr for its size).
    pub fn new(out: Box<dyn Write + Send>, mode: ProgressMode) -> Self {
        Self::with_size(out, mode, TermSize::Stderr)
    }

    fn with_size(out: Box<dyn Write + Send>, mode: ProgressMode, size: TermSize) -> Self {
        let inner = Arc::new(Inner {
            out: Mutex::new(out),
            next: AtomicUsize::new(1),
            mode,
            display: Mutex::new(Display::new(size)),
            stop: AtomicBool::new(false),
        });
        let ticker = (mode == ProgressMode::Tty).then(|| {
            let inner = inner.clone();
            std::thread::spawn(move || {
                while !inner.stop.load(Ordering::SeqCst) {
                    std::thread::park_timeout(TICK);
                    inner.redraw(false);
                }
            })
        });
        Progress { inner, ticker }
    }

    /// Starts vertex `#N` with `title`.
    pub fn start(&self, title: &str) -> Vertex<'_> {
        let n = self.inner.next.fetch_add(1, Ordering::SeqCst);
        match self.inner.mode {
            ProgressMode::Tty => {
                self.inner.update(|d| d.rows.push(Row::new(n, title)));
            }
            _ => self.inner.write(&format!("#{n} {title}\n")),
        }
        Vertex {
            progress: self,
            n,
            started: Instant::now(),
            partial: Vec::new(),
            finished: false,
        }
    }
}

impl Drop for Progress {
    /// Stops the ticker and draws the final frame.
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
            self.inner.redraw(true);
        }
    }
}

impl Inner {
    fn write(&self, text: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    /// Changes the display and redraws it.
    fn update(&self, f: impl FnOnce(&mut Display)) {
        if let Ok(mut d) = self.display.lock() {
            f(&mut d);
        }
        self.redraw(false);
    }

    fn redraw(&self, last: bool) {
        let Ok(mut d) = self.display.lock() else {
            return;
        };
        if d.closed {
            return;
        }
        let frame = d.frame(last);
        d.closed = last;
        drop(d);
        self.write(&frame);
    }
}

/// Where the tty display learns the terminal's size.
#[derive(Debug, Clone, Copy)]
enum TermSize {
    /// The terminal on stderr, asked before each frame (it may be resized).
    Stderr,
    /// Fixed columns and rows (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(usize, usize),
}

impl TermSize {
    /// Columns and rows; 80x24 when the terminal does not say.
    fn get(self) -> (usize, usize) {
        match self {
            TermSize::Fixed(w, h) => (w, h),
            TermSize::Stderr => {
                let mut ws = libc::winsize {
                    ws_row: 0,
                    ws_col: 0,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
                let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
                let w = if rc == 0 && ws.ws_col > 0 {
                    ws.ws_col
                } else {
                    80
                };
                let h = if rc == 0 && ws.ws_row > 0 {
                    ws.ws_row
                } else {
                    24
                };
                (w.into(), h.into())
            }
        }
    }
}

/// The state of a vertex on the tty display.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowState {
    /// Running since the row's start.
    Running,
    /// Finished after this long.
    Done(Duration),
    /// A cache hit.
    Cached,
    /// Failed after this long.
    Error(Duration),
    /// Abandoned because another step failed.
    Canceled(Duration),
}

struct Row {
    n: usize,
    title: String,
    started: Instant,
    state: RowState,
    /// The step's last output lines.
    logs: VecDeque<String>,
    /// Status lines (`naming to ... done`), shown under the row.
    statuses: Vec<String>,
    /// The error message of a failed step.
    error: Option<String>,
}

impl Row {
    fn new(n: usize, title: &str) -> Row {
        Row {
            n,
            title: title.to_string(),
            started: Instant::now(),
            state: RowState::Running,
            logs: VecDeque::new(),
            statuses: Vec::new(),
            error: None,
        }
    }

    fn line(&self, width: usize, now: Instant) -> String {
        let status = match self.state {
            RowState::Running => format!("{:.1}s", (now - self.started).as_secs_f64()),
            RowState::Done(d) => format!("DONE {:.1}s", d.as_secs_f64()),
            RowState::Cached => "CACHED".to_string(),
            RowState::Error(d) => format!("ERROR {:.1}s", d.as_secs_f64()),
            RowState::Canceled(d) => format!("CANCELED {:.1}s", d.as_secs_f64()),
        };
        fit(&format!(" => {}", self.title), &status, width)
    }
}

/// `left` and `right` on one line of `width` columns: `left` shortened if needed.
fn fit(left: &str, right: &str, width: usize) -> String {
    // One column spare: writing the last column makes some terminals wrap.
    let room = width.saturating_sub(right.chars().count() + 2).max(10);
    let mut left: String = left.chars().filter(|c| !c.is_control()).collect();
    if left.chars().count() > room {
        left = left
            .chars()
            .take(room.saturating_sub(3))
            .collect::<String>()
            + "...";
    }
    let pad = room.saturating_sub(left.chars().count());
    format!("{left}{} {right}", " ".repeat(pad))
}

/// Shortens `text` to `width` columns.
fn clip(text: &str, width: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(width.saturating_sub(1))
        .collect()
}

struct Display {
    size: TermSize,
    started: Instant,
    rows: Vec<Row>,
    /// Rows scrolled off above the live region: never redrawn.
    committed: usize,
    /// Lines of the live region on screen, where the next frame starts.
    drawn: usize,
    /// The final frame was drawn.
    closed: bool,
}

impl Display {
    fn new(size: TermSize) -> Display {
        Display {
            size,
            started: Instant::now(),
            rows: Vec::new(),
            committed: 0,
            drawn: 0,
            closed: false,
        }
    }

    fn row(&mut self, n: usize) -> Option<&mut Row> {
        self.rows.iter_mut().rev().find(|r| r.n == n)
    }

    fn row_lines(&self, row: &Row, width: usize, now: Instant, last: bool) -> Vec<String> {
        let mut lines = vec![row.line(width, now)];
        lines.extend(
            row.statuses
                .iter()
                .map(|s| clip(&format!(" => => {s}"), width)),
        );
        if row.state == RowState::Running && !last {
            let skip = row.logs.len().saturating_sub(SHOWN_LOG_LINES);
            lines.extend(
                row.logs
                    .iter()
                    .skip(skip)
                    .map(|l| clip(&format!(" => => # {l}"), width)),
            );
        }
        lines
    }

    /// The escape sequences and text that replace the previous frame.
    fn frame(&mut self, last: bool) -> String {
        let (width, height) = self.size.get();
        let now = Instant::now();
        if last {
            for r in &mut self.rows {
                if r.state == RowState::Running {
                    r.state = RowState::Canceled(now - r.started);
                }
            }
        }
        let finished = self
            .rows
            .iter()
            .filter(|r| r.state != RowState::Running)
            .count();
        let header = {
            let mut h = format!(
                "[+] Building {:.1}s ({finished}/{})",
                (now - self.started).as_secs_f64(),
                self.rows.len()
            );
            if last {
                h.push_str(if self.rows.iter().any(|r| r.error.is_some()) {
                    " ERROR"
                } else {
                    " FINISHED"
                });
            }
            clip(&h, width)
        };
        let mut live: Vec<Vec<String>> = self.rows[self.committed..]
            .iter()
            .map(|r| self.row_lines(r, width, now, last))
            .collect();
        // The live region must fit on the screen, or moving up cannot reach its top:
        // finished rows at its top scroll off for good.
        let mut scrolled = Vec::new();
        let limit = height.saturating_sub(2).max(3);
        while 1 + live.iter().map(Vec::len).sum::<usize>() > limit
            && self
                .rows
                .get(self.committed)
                .is_some_and(|r| r.state != RowState::Running)
        {
            scrolled.extend(live.remove(0));
            self.committed += 1;
        }
        let mut lines = vec![header];
        lines.extend(live.into_iter().flatten());
        if lines.len() > limit {
            // Running steps alone overflow: keep the newest lines.
            let cut = lines.len() - limit;
            lines.drain(1..=cut);
        }
        let mut out = String::new();
        if self.drawn == 0 {
            out.push_str("\x1b[?25l"); // hide the cursor while drawing
        } else {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for l in scrolled.iter().chain(&lines) {
            out.push_str("\r\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("\x1b[J"); // clear what a longer previous frame left below
        self.drawn = lines.len();
        if last {
            out.push_str("\x1b[?25h");
            for r in self.rows.iter().filter(|r| r.error.is_some()) {
                out.push_str(&format!("------\n > {}:\n", r.title));
                for l in &r.logs {
                    out.push_str(&format!("{l}\n"));
                }
                out.push_str("------\n");
            }
        }
        out
    }
}

/// One numbered step of the output.
pub struct Vertex<'a> {
    progress: &'a Progress,
    n: usize,
    started: Instant,
    partial: Vec<u8>,
    finished: bool,
}

impl Vertex<'_> {
    fn tty(&self) -> bool {
        self.progress.inner.mode == ProgressMode::Tty
    }

    fn set(&mut self, state: RowState, statuses: Option<String>) {
        self.finished = true;
        let n = self.n;
        self.progress.inner.update(|d| {
            if let Some(r) = d.row(n) {
                r.state = state;
                if statuses.is_some() {
                    r.error = statuses;
                }
            }
        });
    }

    /// A line of the step's own output.
    pub fn log(&self, line: &str) {
        if self.tty() {
            let n = self.n;
            let line = line.to_string();
            // No redraw per line: a chatty step would flood the terminal; the ticker
            // shows the newest lines.
            if let Ok(mut d) = self.progress.inner.display.lock() {
                if let Some(r) = d.row(n) {
                    if r.logs.len() == KEPT_LOG_LINES {
                        r.logs.pop_front();
                    }
                    r.logs.push_back(line);
                }
            }
            return;
        }
        self.progress.inner.write(&format!(
            "#{} {:.3} {line}\n",
            self.n,
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// A status line without timestamp (`writing image ... done`).
    pub fn status(&self, line: &str) {
        if self.tty() {
            let n = self.n;
            self.progress.inner.update(|d| {
                if let Some(r) = d.row(n) {
                    r.statuses.push(line.to_string());
                }
            });
            return;
        }
        self.progress.inner.write(&format!("#{} {line}\n", self.n));
    }

    /// The step was a cache hit.
    pub fn cached(mut self) {
        if self.tty() {
            return self.set(RowState::Cached, None);
        }
        self.finished = true;
        self.progress
            .inner
            .write(&format!("#{} CACHED\n\n", self.n));
    }

    /// The step finished.
    pub fn done(mut self) {
        self.flush_partial();
        let elapsed = self.started.elapsed();
        if self.tty() {
            return self.set(RowState::Done(elapsed), None);
        }
        self.finished = true;
        self.progress.inner.write(&format!(
            "#{} DONE {:.1}s\n\n",
            self.n,
            elapsed.as_secs_f64()
        ));
    }

    /// The step failed.
    pub fn error(mut self, message: &str) {
        self.flush_partial();
        if self.tty() {
            let elapsed = self.started.elapsed();
            return self.set(RowState::Error(elapsed), Some(message.to_string()));
        }
        self.finished = true;
        self.progress
            .inner
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

impl Drop for Vertex<'_> {
    /// A vertex dropped unfinished (its stage gave up on an error elsewhere) shows as
    /// canceled on the tty display.
    fn drop(&mut self) {
        if !self.finished && self.tty() {
            let elapsed = self.started.elapsed();
            self.set(RowState::Canceled(elapsed), None);
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
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
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
        drop(p);
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#1 [stage-0 1/2] FROM busybox");
        assert!(lines[1].starts_with("#1 DONE 0.0s"));
        assert!(lines[4].starts_with("#2 0.") && lines[4].ends_with(" hello"));
        assert!(lines[5].ends_with(" world"));
        assert!(text.contains("#3 CACHED\n"));
        assert!(
            !text.contains('\x1b'),
            "no escape sequences in plain output"
        );
    }

    /// What a terminal shows after `text`: cursor-up, clear-line and clear-below
    /// interpreted, other sequences dropped.
    fn screen(text: &str) -> Vec<String> {
        let mut lines: Vec<String> = vec![String::new()];
        let mut row = 0usize;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\x1b' => {
                    let mut seq = String::new();
                    chars.next(); // '['
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        seq.push(n);
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                    match seq.chars().last() {
                        Some('A') => row -= seq[..seq.len() - 1].parse::<usize>().unwrap(),
                        Some('K') => lines[row].clear(),
                        Some('J') => lines.truncate(row + 1),
                        _ => {}
                    }
                }
                '\r' => {}
                '\n' => {
                    row += 1;
                    if lines.len() <= row {
                        lines.push(String::new());
                    }
                }
                c => lines[row].push(c),
            }
        }
        lines.retain(|l| !l.is_empty());
        lines
    }

    #[test]
    fn tty_redraws_in_place_and_ends_with_a_summary() {
        let buf = Buf::default();
        let p = Progress::with_size(
            Box::new(buf.clone()),
            ProgressMode::Tty,
            TermSize::Fixed(60, 40),
        );
        p.start("[internal] load build definition from Dockerfile")
            .done();
        let mut run = p.start("[a 2/2] RUN make");
        run.stdout(b"compiling\n");
        std::thread::sleep(Duration::from_millis(250));
        let during = screen(&buf.text());
        assert!(
            during.iter().any(|l| l.contains("# compiling")),
            "{during:#?}"
        );
        run.done();
        p.start("[b 2/2] RUN test").cached();
        let v = p.start("exporting to image");
        v.status("naming to docker.io/library/x:latest done");
        v.done();
        drop(p);
        let text = buf.text();
        assert!(
            text.contains("\x1b[2K") && text.contains("A\r\x1b[2K"),
            "{text:?}"
        );
        let shown = screen(&text);
        assert!(shown[0].starts_with("[+] Building ") && shown[0].ends_with("(4/4) FINISHED"));
        assert!(shown[1].starts_with(" => [internal] load build definition"));
        assert!(shown[1].ends_with(" DONE 0.0s"), "{shown:#?}");
        assert!(shown[2].starts_with(" => [a 2/2] RUN make ") && shown[2].contains(" DONE 0."));
        assert!(shown[3].ends_with(" CACHED"), "{shown:#?}");
        assert_eq!(shown[5], " => => naming to docker.io/library/x:latest done");
        assert_eq!(
            shown.len(),
            6,
            "the output of finished steps is gone: {shown:#?}"
        );
        assert!(shown.iter().all(|l| l.chars().count() < 60));
    }

    #[test]
    fn tty_scrolls_finished_rows_and_prints_a_failed_steps_output() {
        let buf = Buf::default();
        let p = Progress::with_size(
            Box::new(buf.clone()),
            ProgressMode::Tty,
            TermSize::Fixed(80, 8),
        );
        for i in 0..10 {
            p.start(&format!("[s {i}/10] RUN step {i}")).done();
        }
        let mut v = p.start("[s 10/10] RUN false");
        v.stdout(b"boom\n");
        v.error("exit code: 1");
        let waiting = p.start("[t 2/2] RUN never");
        drop(waiting);
        drop(p);
        let shown = screen(&buf.text());
        // Every row is on screen once, in order, the header above the live region.
        for i in 0..10 {
            let at: Vec<_> = shown
                .iter()
                .filter(|l| l.starts_with(&format!(" => [s {i}/10] RUN step {i} ")))
                .collect();
            assert_eq!(at.len(), 1, "{shown:#?}");
        }
        assert!(shown.iter().any(|l| l.ends_with(") ERROR")), "{shown:#?}");
        assert!(shown
            .iter()
            .any(|l| l.contains("RUN false") && l.contains(" ERROR ")));
        assert!(shown
            .iter()
            .any(|l| l.contains("RUN never") && l.contains(" CANCELED ")));
        let tail = shown[shown.len() - 4..].to_vec();
        assert_eq!(
            tail,
            ["------", " > [s 10/10] RUN false:", "boom", "------"]
        );
    }
}
