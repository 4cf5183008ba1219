//! Progress on stderr: an indicatif bar when stderr is a terminal, plain lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Clone)]
pub struct Ui {
    bar: Option<ProgressBar>,
}

impl Ui {
    /// A bar only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Self { bar }
    }

    /// A line that stays (above the bar, or on stderr).
    pub fn line(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(b) => b.println(msg.as_ref()),
            None => eprintln!("{}", msg.as_ref()),
        }
    }

    pub fn phase(&self, total_secs: u64, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.bar {
            Some(b) => {
                b.set_length(total_secs);
                b.set_position(0);
                b.set_message(msg);
            }
            None => eprintln!("-- {msg}"),
        }
    }

    pub fn progress(&self, pos_secs: u64, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_position(pos_secs);
            b.set_message(msg.into());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
