//! Progress of long operations on stderr: one bar (bytes) or spinner (waiting) per phase on a
//! terminal, each phase closed with a line saying how long it took; elsewhere (a log, a pipe)
//! a plain line when a phase starts and every ten seconds while it runs, so nothing looks hung.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_data::humanize::bytes;
use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(10);

struct Current {
    phase: &'static str,
    started: Instant,
    last_line: Instant,
    done: u64,
    total: u64,
    bar: Option<ProgressBar>,
}

/// The display behind a [`repo::progress::Phases`]; [`PhaseDisplay::finish`] closes the last phase.
#[derive(Clone)]
pub struct PhaseDisplay {
    tty: bool,
    current: Arc<Mutex<Option<Current>>>,
}

/// A phase reporter for a library operation and the display it drives; `None` when `--quiet`.
pub fn phases(quiet: bool) -> (repo::progress::Phases, Option<PhaseDisplay>) {
    if quiet {
        return (repo::progress::Phases::default(), None);
    }
    let d = PhaseDisplay { tty: std::io::stderr().is_terminal(), current: Arc::new(Mutex::new(None)) };
    let shown = d.clone();
    (repo::progress::Phases::new(move |phase, done, total| shown.update(phase, done, total)), Some(d))
}

fn byte_style(phase: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{spinner}} {phase} {{decimal_bytes}}/{{decimal_total_bytes}} [{{bar:30}}] {{decimal_bytes_per_sec}} {{eta}}"))
        .expect("template")
        .progress_chars("=> ")
}

fn wait_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template")
}

impl PhaseDisplay {
    fn update(&self, phase: &'static str, done: u64, total: u64) {
        let mut cur = self.current.lock().expect("progress lock");
        if cur.as_ref().is_none_or(|c| c.phase != phase) {
            if let Some(old) = cur.take() {
                self.close(old);
            }
            let now = Instant::now();
            let bar = self.tty.then(|| {
                let b = ProgressBar::new(total);
                if total > 0 {
                    b.set_style(byte_style(phase));
                } else {
                    b.set_style(wait_style());
                    b.set_message(phase);
                }
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            if !self.tty {
                eprintln!("{phase} ...");
            }
            *cur = Some(Current { phase, started: now, last_line: now, done, total, bar });
        }
        let c = cur.as_mut().expect("set above");
        if let Some(b) = &c.bar {
            if total > 0 && c.total == 0 {
                b.set_style(byte_style(phase));
            }
            b.set_length(total);
            b.set_position(done);
        } else if c.last_line.elapsed() >= PLAIN_EVERY {
            c.last_line = Instant::now();
            if total > 0 {
                eprintln!("{phase}: {} of {} ({:.0}%)", bytes(done), bytes(total), done as f64 * 100.0 / total as f64);
            } else {
                eprintln!("{phase}: {:.0}s so far", c.started.elapsed().as_secs_f64());
            }
        }
        c.done = done;
        c.total = total;
    }

    fn close(&self, c: Current) {
        if let Some(b) = &c.bar {
            b.finish_and_clear();
        }
        let size = if c.total > 0 { format!(", {}", bytes(c.total)) } else { String::new() };
        eprintln!("{}: done in {:.1}s{size}", c.phase, c.started.elapsed().as_secs_f64());
    }

    /// Close the phase still open (the operation ended).
    pub fn finish(self) {
        if let Some(c) = self.current.lock().expect("progress lock").take() {
            self.close(c);
        }
    }

    /// Close the open phase without a "done" line (the operation failed).
    pub fn abandon(self) {
        if let Some(c) = self.current.lock().expect("progress lock").take() {
            if let Some(b) = c.bar {
                b.finish_and_clear();
            }
        }
    }
}

/// Waits that are not byte counts (a defrag's pause between members, a member coming back): a
/// spinner with what is awaited and, for a pause, a countdown; elsewhere a plain line when the
/// wait changes and every ten seconds.
pub struct WaitDisplay {
    bar: Option<ProgressBar>,
    last: Mutex<(String, Instant)>,
    quiet: bool,
}

impl WaitDisplay {
    pub fn new(quiet: bool) -> WaitDisplay {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("template"));
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        WaitDisplay { bar, last: Mutex::new((String::new(), Instant::now())), quiet }
    }

    pub fn wait(&self, what: &str, left: Option<Duration>) {
        let text = match left {
            Some(l) => format!("{what}: {}s left", l.as_secs_f64().ceil() as u64),
            None => what.to_string(),
        };
        if let Some(b) = &self.bar {
            b.set_message(text);
            return;
        }
        let mut last = self.last.lock().expect("wait lock");
        if !self.quiet && (last.0 != what || last.1.elapsed() >= PLAIN_EVERY) {
            eprintln!("{text}");
            *last = (what.to_string(), Instant::now());
        }
    }

    /// Print a line of the command's own output without tearing the spinner.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
