//! Progress on stderr: a bar with rate and ETA on a terminal, plain lines otherwise.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Reports rows done out of rows total.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    last_done: u64,
    quiet: bool,
}

impl Progress {
    /// A bar when `terminal`, else plain lines.
    pub fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            last_line: None,
            last_done: u64::MAX,
            quiet: false,
        }
    }

    /// Reports nothing (tests, scripts that want silence).
    pub fn quiet() -> Self {
        Self {
            bar: None,
            last_line: None,
            last_done: u64::MAX,
            quiet: true,
        }
    }

    pub fn message(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("enrichd: {text}"),
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if self.quiet {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if done != self.last_done && (due || done == total) {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            eprintln!("enrichd: {done}/{total} rows ({pct}%)");
            self.last_line = Some(Instant::now());
            self.last_done = done;
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
