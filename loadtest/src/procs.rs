//! The processes a run starts: spawn with a log file, kill -9, SIGSTOP/SIGCONT, restart with
//! the same arguments, and their cost from /proc (CPU seconds = utime + stime over every
//! incarnation, peak RSS = VmHWM). Every process is killed when its [`Proc`] is dropped, so an
//! error, a panic or Ctrl-C (which ends `main` normally) leaves nothing running.

use serde::Serialize;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("log file {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error("no free port in {0}..{1}")]
    NoPort(u32, u32),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A port for a process to bind, below Linux's ephemeral range (32768+): a port picked with
/// `bind(:0)` and released can be taken as the local port of an outgoing connection before
/// the process binds it. Spread by pid so concurrent harnesses rarely collide, and checked.
pub fn free_port() -> Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id().wrapping_mul(211)) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(Error::NoPort(LOW, LOW + SPAN))
}

/// CPU and memory of one process over all its incarnations.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    pub starts: u32,
}

/// Last /proc sample of the running incarnation.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    cpu_ticks: u64,
    hwm_kib: u64,
}

/// One managed process.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub role: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// CPU of earlier incarnations (ticks) and peak RSS over all of them.
    past_ticks: u64,
    peak_kib: u64,
    last: Sample,
    starts: u32,
    stopped: bool,
    /// Set when the harness killed it on purpose (so an exit is not a crash).
    pub expected_down: bool,
    /// Exits the harness did not cause: (exit status, ms since the run started).
    pub crashes: Vec<String>,
}

impl Proc {
    pub fn new(
        name: &str,
        role: &'static str,
        program: &Path,
        args: Vec<String>,
        logs: &Path,
    ) -> Self {
        Self {
            name: name.to_string(),
            role,
            program: program.to_path_buf(),
            args,
            log: logs.join(format!("{name}.log")),
            child: None,
            past_ticks: 0,
            peak_kib: 0,
            last: Sample::default(),
            starts: 0,
            stopped: false,
            expected_down: false,
            crashes: Vec::new(),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Starts it (again); output is appended to its log.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            if self.is_running() {
                return Ok(());
            }
            // Exited and not noticed yet: record it (as a crash unless we caused it).
            self.check_crash(f64::NAN);
        }
        let log_err = |source| Error::Log {
            path: self.log.display().to_string(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("LOADTEST_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .map_err(|source| Error::Spawn {
                name: self.name.clone(),
                program: self.program.display().to_string(),
                source,
            })?;
        self.child = Some(child);
        self.starts += 1;
        self.stopped = false;
        self.expected_down = false;
        self.last = Sample::default();
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Running (not exited; a SIGSTOPped process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// kill -9 (a stopped process is killed too).
    pub fn kill(&mut self) {
        self.sample();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.retire();
        }
        self.stopped = false;
        self.expected_down = true;
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        self.sample();
        if let Some(pid) = self.pid() {
            if self.stopped {
                self.signal("CONT");
            }
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if !self.is_running() {
                    break;
                }
                self.sample();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGSTOP: frozen, as a process the OS stopped scheduling.
    pub fn pause(&mut self) {
        if self.signal("STOP") {
            self.stopped = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if self.signal("CONT") {
            self.stopped = false;
        }
    }

    /// Sends a signal with kill(1): the workspace forbids `unsafe`, and libc's kill is unsafe.
    fn signal(&self, sig: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// kill -9 then start with the same arguments (same data dir).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start()
    }

    /// Notices an exit the harness did not cause; returns true if it just happened.
    pub fn check_crash(&mut self, now_ms: f64) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.retire();
                if !self.expected_down {
                    self.crashes.push(if now_ms.is_nan() {
                        format!("exited with {status}")
                    } else {
                        format!("exited with {status} at {:.1}s", now_ms / 1000.0)
                    });
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    fn retire(&mut self) {
        self.past_ticks += self.last.cpu_ticks;
        self.peak_kib = self.peak_kib.max(self.last.hwm_kib);
        self.last = Sample::default();
    }

    /// Reads /proc for the running incarnation.
    pub fn sample(&mut self) {
        let Some(pid) = self.pid() else { return };
        if let Some(s) = read_proc(pid) {
            self.last.cpu_ticks = self.last.cpu_ticks.max(s.cpu_ticks);
            self.last.hwm_kib = self.last.hwm_kib.max(s.hwm_kib);
        }
    }

    pub fn usage(&self) -> Usage {
        let ticks = self.past_ticks + self.last.cpu_ticks;
        Usage {
            cpu_seconds: ticks as f64 / clock_ticks() as f64,
            peak_rss_mib: self.peak_kib.max(self.last.hwm_kib) as f64 / 1024.0,
            starts: self.starts,
        }
    }

    /// The last line of its log that reads as an error (what a crash said), if any.
    pub fn last_error_line(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .find(|l| l.starts_with("error") || l.contains(" ERROR ") || l.contains("panicked"))
            .map(|l| l.chars().take(300).collect())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                let _ = self.signal("CONT");
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_proc(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let cpu_ticks = parse_stat_cpu(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(Sample {
        cpu_ticks,
        hwm_kib: parse_status_hwm(&status).unwrap_or(0),
    })
}

/// utime + stime (fields 14 and 15) of /proc/PID/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmHWM (peak resident set) in KiB from /proc/PID/status.
pub fn parse_status_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run on).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// The harness's own CPU seconds and peak RSS.
pub fn own_usage() -> Usage {
    let s = read_proc(std::process::id()).unwrap_or_default();
    Usage {
        cpu_seconds: s.cpu_ticks as f64 / clock_ticks() as f64,
        peak_rss_mib: s.hwm_kib as f64 / 1024.0,
        starts: 1,
    }
}

/// Raises RLIMIT_NOFILE to the hard limit (each simulated proxy holds a socket).
pub fn raise_nofile() -> (u64, u64) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => (n, n),
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let stat = "1234 (flo tilla) (x)) S 1 1234 1234 0 -1 4194560 2539 0 0 0 250 37 0 0 20 0 9 0 123 456789 1234 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some(287));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn parses_vmhwm() {
        let status = "Name:\tflotilla\nVmPeak:\t  100 kB\nVmHWM:\t   55296 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_status_hwm(status), Some(55296));
        assert_eq!(parse_status_hwm("Name: x\n"), None);
    }

    #[test]
    fn own_usage_reads_this_process() {
        let u = own_usage();
        assert!(u.peak_rss_mib > 1.0, "{u:?}");
    }

    #[test]
    fn kill_restart_and_crash_detection_with_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::new(
            "sleeper",
            "test",
            Path::new("/bin/sleep"),
            vec!["30".into()],
            dir.path(),
        );
        p.start().unwrap();
        assert!(p.is_running());
        p.pause();
        assert!(p.is_stopped() && p.is_running());
        p.resume();
        p.sample();
        p.restart().unwrap();
        assert_eq!(p.usage().starts, 2);
        assert!(!p.check_crash(0.0));
        p.kill();
        assert!(!p.is_running());
        // An exit the harness did not cause is a crash.
        let mut q = Proc::new(
            "quick",
            "test",
            Path::new("/bin/sh"),
            vec!["-c".into(), "exit 3".into()],
            dir.path(),
        );
        q.start().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !q.check_crash(1500.0) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(q.crashes.len(), 1, "{:?}", q.crashes);
        assert!(q.crashes[0].contains("1.5s"), "{:?}", q.crashes);
    }
}
