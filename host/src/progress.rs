//! Progress bars: one style for all long work (rate and ETA), hidden when asked or when
//! standard error is not a terminal. Detail lines ([`note`], [`message`]) go to standard
//! error, or to a log file while a [`DetailLog`] is held (the demo keeps the terminal
//! for its status lines, [`status`], and its table).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Where detail lines go while a [`DetailLog`] is held.
static DETAIL: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// While held, detail lines are appended to a file instead of the terminal.
#[must_use = "detail lines return to the terminal when this is dropped"]
pub struct DetailLog(());

impl DetailLog {
    /// Sends detail lines to `path` (appended: a resumed demo keeps the earlier lines).
    pub fn to(path: &Path) -> anyhow::Result<DetailLog> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot write ({e})", path.display()))?;
        *DETAIL.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        Ok(DetailLog(()))
    }
}

impl Drop for DetailLog {
    fn drop(&mut self) {
        *DETAIL.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Writes `msg` to the detail log when one is held; false when none is.
fn to_detail_log(msg: &str) -> bool {
    let mut log = DETAIL.lock().unwrap_or_else(|e| e.into_inner());
    match log.as_mut() {
        // A failed write loses a detail line, not the run.
        Some(f) => {
            let _ = writeln!(f, "{msg}");
            true
        }
        None => false,
    }
}

/// A bar of `len` steps labelled `what`; hidden when `show` is false.
pub fn bar(len: u64, what: &str, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

/// When `show`, prints a line above the bar, or on standard error when the bar is hidden
/// (output redirected to a file), so that logs keep the line either way.
pub fn note(bar: &ProgressBar, show: bool, msg: impl AsRef<str>) {
    if !show || to_detail_log(msg.as_ref()) {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{}", msg.as_ref());
    } else {
        bar.println(msg.as_ref());
    }
}

/// A status line for the user on standard error (the library's one way to talk to the
/// terminal besides bars; the `igpt` binary prints results on standard output).
pub fn message(msg: impl AsRef<str>) {
    if !to_detail_log(msg.as_ref()) {
        eprintln!("{}", msg.as_ref());
    }
}

/// A status line that always reaches the terminal (standard error), and the detail log
/// too when one is held.
pub fn status(msg: impl AsRef<str>) {
    to_detail_log(msg.as_ref());
    eprintln!("{}", msg.as_ref());
}
