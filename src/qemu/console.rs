//! Scans the guest kernel console (ttyS0 log file) while the guest runs:
//! typed problems (panic, oops, BUG, WARN, GPF, hung task) and the last lines.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// How many console lines are kept for failure messages.
pub const TAIL_LINES: usize = 40;
/// Stop recording problems after this many (a WARN storm must not eat memory).
const MAX_PROBLEMS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Panic,
    Oops,
    Bug,
    Warning,
    GeneralProtection,
    HungTask,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleProblem {
    pub kind: ProblemKind,
    pub line: String,
    /// The case the agent had marked as running on the console (`sockmatrix: case
    /// <id> start` .. `end`) when the kernel printed this.
    pub case: Option<String>,
    /// The problem line and the splat's lines after it (call trace, registers),
    /// up to `EXCERPT_LINES`; complete in the scanner's `problems()`.
    pub excerpt: Vec<String>,
}

/// How many lines of a splat are kept for the verdict of the case it hit.
pub const EXCERPT_LINES: usize = 40;

/// Classifies one console line. Order matters: the most specific pattern wins
/// (6.x prints "Oops: general protection fault ...", a panic line may say "Oops").
pub fn classify(line: &str) -> Option<ProblemKind> {
    use ProblemKind::*;
    const PATTERNS: &[(&str, ProblemKind)] = &[
        ("Kernel panic", Panic),
        ("general protection fault", GeneralProtection),
        ("kernel BUG at", Bug),
        ("BUG:", Bug),
        ("Oops", Oops),
        ("WARNING:", Warning),
        ("blocked for more than", HungTask),
        ("hung_task", HungTask),
    ];
    PATTERNS
        .iter()
        .find(|(p, _)| line.contains(p))
        .map(|&(_, k)| k)
}

/// Line splitter + classifier + tail, fed with raw console bytes.
#[derive(Debug, Default)]
pub struct ConsoleScanner {
    partial: Vec<u8>,
    tail: VecDeque<String>,
    problems: Vec<ConsoleProblem>,
    /// A "[ cut here ]" line whose next line did not classify is reported as a Warning.
    cut_here: Option<String>,
    /// The case between its start and end markers, if any.
    case: Option<String>,
    /// The problem whose excerpt is still growing.
    open_excerpt: Option<usize>,
    /// The kernel's "System halted" / "Power down" line, once it printed one.
    ended: Option<String>,
}

/// Lines the kernel prints as its last when the guest halts or powers off
/// (kernel/reboot.c; 3.x printed "System halted." without the "reboot: " prefix).
/// Without ACPI a power-off becomes a halt and QEMU keeps running: the host ends it.
const END_LINES: &[&str] = &["System halted", "Power down"];

impl ConsoleScanner {
    /// Feeds bytes; returns the problems found in the complete lines among them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ConsoleProblem> {
        let mut found = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                if let Some(p) = self.line(&line) {
                    found.push(p);
                }
            } else {
                self.partial.push(b);
            }
        }
        found
    }

    /// Flushes an unterminated last line (after the guest is gone).
    pub fn finish(&mut self) -> Vec<ConsoleProblem> {
        let line = std::mem::take(&mut self.partial);
        let mut found: Vec<_> = if line.is_empty() {
            vec![]
        } else {
            self.line(&line).into_iter().collect()
        };
        if let Some(cut) = self.cut_here.take() {
            found.extend(self.record(ProblemKind::Warning, cut));
        }
        found
    }

    fn line(&mut self, raw: &[u8]) -> Option<ConsoleProblem> {
        // The console tty turns "\n" into "\r\n"; drop the CR and any other stray controls.
        let line: String = String::from_utf8_lossy(raw)
            .chars()
            .filter(|c| *c != '\r' && *c != '\0')
            .collect();
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        if self.ended.is_none() && END_LINES.iter().any(|p| line.contains(p)) {
            self.ended = Some(line.clone());
        }
        if let Some((id, edge)) = crate::observe::parse_case_marker(&line) {
            self.case = (edge == crate::observe::CaseEdge::Start).then(|| id.to_string());
            self.open_excerpt = None;
            return self
                .cut_here
                .take()
                .and_then(|c| self.record(ProblemKind::Warning, c));
        }
        self.extend_excerpt(&line);
        let pending_cut = self.cut_here.take();
        if line.contains("[ cut here ]") {
            self.cut_here = Some(line);
            return pending_cut.and_then(|c| self.record(ProblemKind::Warning, c));
        }
        match classify(&line) {
            Some(kind) => self.record(kind, line),
            None => pending_cut.and_then(|c| self.record(ProblemKind::Warning, c)),
        }
    }

    fn record(&mut self, kind: ProblemKind, line: String) -> Option<ConsoleProblem> {
        if self.problems.len() >= MAX_PROBLEMS {
            return None;
        }
        let p = ConsoleProblem {
            kind,
            excerpt: vec![line.clone()],
            line,
            case: self.case.clone(),
        };
        self.open_excerpt = Some(self.problems.len());
        self.problems.push(p.clone());
        Some(p)
    }

    /// A line after a problem belongs to its splat until the trace ends, another
    /// problem starts or the excerpt is full.
    fn extend_excerpt(&mut self, line: &str) {
        let Some(i) = self.open_excerpt else { return };
        let excerpt = &mut self.problems[i].excerpt;
        if excerpt.len() >= EXCERPT_LINES || classify(line).is_some() {
            self.open_excerpt = None;
            return;
        }
        excerpt.push(line.to_string());
        if line.contains("---[ end trace") {
            self.open_excerpt = None;
        }
    }

    pub fn problems(&self) -> &[ConsoleProblem] {
        &self.problems
    }

    /// The first panic line, if the kernel panicked.
    pub fn panic_line(&self) -> Option<&str> {
        self.problems
            .iter()
            .find(|p| p.kind == ProblemKind::Panic)
            .map(|p| p.line.as_str())
    }

    /// The halt / power-down line, if the kernel has stopped the guest.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// The last non-empty line seen (complete or not): "where did it hang".
    pub fn last_line(&self) -> String {
        let partial = String::from_utf8_lossy(&self.partial).trim().to_string();
        if !partial.is_empty() {
            return partial;
        }
        self.tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default()
    }
}

/// Follows a growing log file from a given offset (QEMU appends to it).
pub struct LogFollower {
    file: Option<File>,
    path: std::path::PathBuf,
    offset: u64,
}

impl LogFollower {
    pub fn new(path: &Path, offset: u64) -> Self {
        LogFollower {
            file: None,
            path: path.to_path_buf(),
            offset,
        }
    }

    /// Reads whatever was appended since the last call into `scanner`.
    pub fn poll(&mut self, scanner: &mut ConsoleScanner) -> io::Result<Vec<ConsoleProblem>> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(e),
            }
        }
        let f = self.file.as_mut().expect("opened above");
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        Ok(scanner.feed(&buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProblemKind::*;

    #[test]
    fn classify_table() {
        let table: &[(&str, Option<ProblemKind>)] = &[
            (
                "[    1.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300",
                Some(Panic),
            ),
            ("[    3.0] Oops: 0002 [#1] PREEMPT SMP NOPTI", Some(Oops)),
            (
                "[    3.0] Oops: general protection fault, probably for non-canonical address",
                Some(GeneralProtection),
            ),
            (
                "[    3.0] general protection fault: 0000 [#1] SMP",
                Some(GeneralProtection),
            ),
            (
                "[    3.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
                Some(Bug),
            ),
            ("[    3.0] kernel BUG at net/core/skbuff.c:110!", Some(Bug)),
            (
                "[    3.0] WARNING: CPU: 0 PID: 1 at net/ipv4/tcp.c:42 tcp_foo+0x1/0x2",
                Some(Warning),
            ),
            (
                "[  123.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
                Some(HungTask),
            ),
            ("[    0.0] tsc: Detected 2995.200 MHz processor", None),
            ("[    0.5] Run /init as init process", None),
        ];
        for (line, want) in table {
            assert_eq!(classify(line), *want, "{line}");
        }
    }

    #[test]
    fn splits_across_feeds_and_strips_cr() {
        let mut s = ConsoleScanner::default();
        assert!(s.feed(b"[ 1] hello\r\n[ 2] Kernel pa").is_empty());
        let got = s.feed(b"nic - not syncing: boom\r\n");
        assert_eq!(
            got,
            vec![ConsoleProblem {
                kind: Panic,
                line: "[ 2] Kernel panic - not syncing: boom".into(),
                case: None,
                excerpt: vec!["[ 2] Kernel panic - not syncing: boom".into()],
            }]
        );
        assert_eq!(
            s.tail(),
            vec!["[ 1] hello", "[ 2] Kernel panic - not syncing: boom"]
        );
        assert_eq!(
            s.panic_line(),
            Some("[ 2] Kernel panic - not syncing: boom")
        );
    }

    #[test]
    fn cut_here_alone_is_a_warning_but_not_doubled() {
        let mut s = ConsoleScanner::default();
        s.feed(b"------------[ cut here ]------------\nWARNING: CPU: 1 PID: 9 at x.c:1\n");
        assert_eq!(s.problems().len(), 1);
        s.feed(b"------------[ cut here ]------------\nsomething unusual\n");
        assert_eq!(s.problems().len(), 2);
        assert_eq!(s.problems()[1].kind, Warning);
        assert!(s.problems()[1].line.contains("cut here"));
    }

    #[test]
    fn tail_is_bounded_and_last_line_sees_partial() {
        let mut s = ConsoleScanner::default();
        for i in 0..100 {
            s.feed(format!("line {i}\n").as_bytes());
        }
        assert_eq!(s.tail().len(), TAIL_LINES);
        assert_eq!(s.tail()[0], "line 60");
        assert_eq!(s.last_line(), "line 99");
        s.feed(b"tsc: Fast TSC calibration");
        assert_eq!(s.last_line(), "tsc: Fast TSC calibration");
        assert!(s.finish().is_empty());
    }

    #[test]
    fn follower_reads_appended_bytes_from_offset() {
        let p = std::env::temp_dir().join(format!("follow-{}.log", std::process::id()));
        std::fs::write(&p, b"old\n").unwrap();
        let mut f = LogFollower::new(&p, 4);
        let mut s = ConsoleScanner::default();
        f.poll(&mut s).unwrap();
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"BUG: x\n")
            .unwrap();
        let got = f.poll(&mut s).unwrap();
        assert_eq!(got[0].kind, Bug);
        assert_eq!(s.tail(), vec!["BUG: x"]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn halt_and_power_down_lines_end_the_guest() {
        for (text, ended) in [
            (
                "[    2.1] reboot: System halted\r\n",
                Some("[    2.1] reboot: System halted"),
            ),
            (
                "[    2.1] reboot: Power down\n",
                Some("[    2.1] reboot: Power down"),
            ),
            ("System halted.\n", Some("System halted.")),
            ("[    2.1] reboot: Restarting system\n", None),
            ("sockmatrix: case a/b end\n", None),
        ] {
            let mut s = ConsoleScanner::default();
            s.feed(text.as_bytes());
            assert_eq!(s.ended(), ended, "{text:?}");
        }
    }
}
