//! Background acceptors: a thread per served listener accepts everything until stopped.

use std::os::fd::AsRawFd;
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
    /// thread sleeps in epoll_wait() and relies on the kernel waking it.
    pub fn start(listener: Socket, accepted: AcceptedList, epoll_wait_ms: Option<u64>) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let wake = epoll_wait_ms
            .and_then(|_| EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok())
            .map(Arc::new);
        let wake_in = wake.clone();
        let thread = std::thread::spawn(move || {
            let epoll = epoll_wait_ms
                .zip(wake_in)
                .and_then(|(ms, wake)| Waiter::new(&listener, &wake).ok().map(|w| (w, ms, wake)));
            while !flag.load(Ordering::Relaxed) {
                let ready = match &epoll {
                    Some((waiter, ms, _)) => waiter.wait(*ms),
                    None => poll_readable(listener.as_raw_fd(), 5),
                };
                if ready {
                    let _ = accept_queued(&listener, &accepted, None);
                }
            }
        });
        Server { stop, wake, thread }
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
        let server = Server::start(listener, AcceptedList::default(), Some(600_000));
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        server.stop();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stop waited for epoll_wait's timeout"
        );
    }
}
