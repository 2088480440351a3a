//! Background acceptors: a thread per served listener accepts everything until stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sys::eventfd::{EfdFlags, EventFd};
use socket2::Socket;

use super::sockets::{accept_queued, poll_readable, AcceptedList};

pub struct Server {
    stop: Arc<AtomicBool>,
    /// Wakes a thread asleep in epoll_wait() when the server stops.
    wake: Option<Arc<EventFd>>,
    thread: JoinHandle<()>,
}

/// Tags telling the epoll events apart.
const LISTENER: u64 = 0;
const STOP: u64 = 1;

/// An epoll instance watching one listener, and an eventfd that only `stop`
/// writes: stopping must not wait for the listener's wait to run out.
struct Waiter(nix::sys::epoll::Epoll);

impl Waiter {
    fn new(listener: &Socket, wake: &EventFd) -> nix::Result<Waiter> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        epoll.add(wake, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        Ok(Waiter(epoll))
    }

    /// True when the listener is readable (not when only the stop event came).
    fn wait(&self, ms: u64) -> bool {
        use nix::sys::epoll::{EpollEvent, EpollTimeout};
        let mut events = [EpollEvent::empty(), EpollEvent::empty()];
        let timeout =
            EpollTimeout::try_from(ms.min(i32::MAX as u64) as i32).unwrap_or(EpollTimeout::NONE);
        match self.0.wait(&mut events, timeout) {
            Ok(n) => events[..n].iter().any(|e| e.data() == LISTENER),
            Err(_) => false,
        }
    }
}

impl Server {
    /// `listener` is a duplicate of the listener's fd; it is dropped when the thread
    /// ends, so that closing the listener really closes it. With `epoll_wait_ms` the
    /// thread sleeps in epoll_wait() and relies on the kernel waking it; when that
    /// cannot be set up the server does not start (falling back to short polls
    /// would hide the very wake-up an epoll case is about).
    pub fn start(
        listener: Socket,
        accepted: AcceptedList,
        epoll_wait_ms: Option<u64>,
    ) -> std::io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (epoll, wake) = match epoll_wait_ms {
            None => (None, None),
            Some(ms) => {
                let wake = Arc::new(EventFd::from_flags(
                    EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
                )?);
                let waiter = Waiter::new(&listener, &wake)?;
                (Some((waiter, ms)), Some(wake))
            }
        };
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let ready = match &epoll {
                    Some((waiter, ms)) => waiter.wait(*ms),
                    None => poll_readable(&listener, 5),
                };
                if ready {
                    let _ = accept_queued(&listener, &accepted, None);
                }
            }
        });
        Ok(Server { stop, wake, thread })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(wake) = &self.wake {
            let _ = wake.write(1);
        }
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};
    use std::time::{Duration, Instant};

    #[test]
    fn stop_wakes_an_epoll_waiter_at_once() {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        listener.listen(4).unwrap();
        // A wait far longer than the test may take: only the stop event can end it.
        let server = Server::start(listener, AcceptedList::default(), Some(600_000)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        server.stop();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stop waited for epoll_wait's timeout"
        );
    }
}

#[cfg(test)]
mod setup_tests {
    use super::*;
    use crate::observe::Outcome;
    use std::os::fd::AsRawFd;

    /// With no file descriptor left for the epoll instance, an epoll server does not
    /// start (it used to fall back to short polls without a word). Run in a child
    /// process: the descriptor limit is lowered there only.
    #[test]
    fn an_epoll_server_that_cannot_be_set_up_does_not_start() {
        let finished = crate::exec::isolate::run_isolated(
            "serve-setup",
            std::time::Duration::from_secs(10),
            |_| {
                let listener =
                    Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                listener.listen(4).unwrap();
                // Every descriptor from the listener's up is taken: none is left.
                let limit = listener.as_raw_fd() as libc::rlim_t + 1;
                let rlim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                // SAFETY: a plain syscall on a valid struct.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) }, 0);
                match Server::start(listener, AcceptedList::default(), Some(1_000)) {
                    Ok(server) => {
                        server.stop();
                        Outcome::Ran
                    }
                    Err(e) => Outcome::Error {
                        message: crate::errno::of_io(&e),
                        line: None,
                    },
                }
            },
        );
        assert_eq!(
            finished.outcome,
            Outcome::Error {
                message: "EMFILE".into(),
                line: None
            }
        );
    }
}
