//! Progress bars: one style for all long work (rate and ETA), hidden when asked or when
//! standard error is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    if !show {
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
    eprintln!("{}", msg.as_ref());
}
