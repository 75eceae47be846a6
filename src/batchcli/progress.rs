//! Progress on stderr: a bar with rate and the batch's ETA on a terminal, plain lines otherwise. The
//! ETA is the service's (`eta_seconds`: the rows left at their sources' budgets), not a guess from the
//! bar's own pace, which a paced batch's first burst would make far too hopeful.

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
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}{msg})",
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

    /// Rows done out of `total`, the service's ETA in seconds, and the rows waiting for budget.
    pub fn update(&mut self, done: u64, total: u64, eta: Option<u64>, waiting: u64) {
        if self.quiet {
            return;
        }
        let told = told(eta, waiting);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(told);
            return;
        }
        let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if done != self.last_done && (due || done == total) {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            eprintln!("enrichd: {done}/{total} rows ({pct}%{told})");
            self.last_line = Some(Instant::now());
            self.last_done = done;
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("");
        }
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// `, ETA 3m 20s, 16 rows waiting for budget`, or nothing when there is nothing to tell.
fn told(eta: Option<u64>, waiting: u64) -> String {
    let mut out = String::new();
    if let Some(secs) = eta {
        let d = humantime::format_duration(std::time::Duration::from_secs(secs));
        out.push_str(&format!(", ETA {d}"));
    }
    if waiting > 0 {
        out.push_str(&format!(", {waiting} rows waiting for budget"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_and_the_rows_waiting_are_told_when_known() {
        assert_eq!(
            told(Some(200), 16),
            ", ETA 3m 20s, 16 rows waiting for budget"
        );
        assert_eq!(told(None, 0), "");
        assert_eq!(told(Some(0), 0), ", ETA 0s");
    }
}
