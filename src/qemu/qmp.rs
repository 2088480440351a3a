//! A minimal QMP client (QEMU's JSON monitor on a unix socket): enough to pause a
//! guest, save its state, and resume a restored one.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the socket QEMU serves (waiting up to `within` for it to appear)
    /// and leaves capability negotiation mode.
    pub fn connect(socket: &Path, within: Duration) -> Result<Qmp> {
        let until = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(e).with_context(|| format!("QMP socket {}", socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        stream.set_read_timeout(Some(within))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("not a QMP greeting: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QEMU closed the QMP socket");
        }
        serde_json::from_str(&line).with_context(|| format!("bad QMP line {line:?}"))
    }

    /// Runs a command and returns its `return` value; events in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}")?;
        self.reply(command)
    }

    /// Hands QEMU an open file as `name` (`getfd`; the descriptor travels beside the
    /// command as SCM_RIGHTS), for commands that take `fd:name`.
    pub fn send_fd(&mut self, name: &str, fd: BorrowedFd) -> Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let msg = format!(
            "{}\n",
            json!({"execute": "getfd", "arguments": {"fdname": name}})
        );
        let fds = [fd.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.writer.as_raw_fd(),
            &[IoSlice::new(msg.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .context("sending a file descriptor to QEMU")?;
        // The descriptor went with the first byte; the rest is an ordinary write.
        self.writer.write_all(&msg.as_bytes()[sent..])?;
        self.reply("getfd").map(drop)
    }

    fn reply(&mut self, command: &str) -> Result<Value> {
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {e}");
            }
        }
    }

    /// Blocks until QEMU closes the socket (it has ended).
    pub fn wait_closed(&mut self) {
        let _ = self.reader.get_ref().set_read_timeout(None);
        let mut sink = Vec::new();
        while self
            .reader
            .read_until(b'\n', &mut sink)
            .is_ok_and(|n| n > 0)
        {
            sink.clear();
        }
    }

    /// The VM's run state (`running`, `paused`, `inmigrate`, ...).
    pub fn status(&mut self) -> Result<String> {
        let r = self.execute("query-status", json!({}))?;
        Ok(r["status"].as_str().unwrap_or_default().to_string())
    }

    /// Polls `check` every few ms until it returns Some, or fails after `within`.
    pub fn wait_for<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&mut Qmp) -> Result<Option<T>>,
    ) -> Result<T> {
        let until = Instant::now() + within;
        loop {
            if let Some(t) = check(self)? {
                return Ok(t);
            }
            if Instant::now() >= until {
                bail!("timed out after {within:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
