//! Background acceptors: a thread per served listener accepts everything until stopped.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::Socket;

use super::sockets::{accept_queued, poll_readable, AcceptedList};

pub struct Server {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// An epoll instance watching one listener.
struct Waiter(nix::sys::epoll::Epoll);

impl Waiter {
    fn new(listener: &Socket) -> nix::Result<Waiter> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(listener, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        Ok(Waiter(epoll))
    }

    fn wait(&self, ms: u64) -> bool {
        use nix::sys::epoll::{EpollEvent, EpollTimeout};
        let mut events = [EpollEvent::empty()];
        let timeout =
            EpollTimeout::try_from(ms.min(i32::MAX as u64) as i32).unwrap_or(EpollTimeout::NONE);
        self.0.wait(&mut events, timeout).is_ok_and(|n| n > 0)
    }
}

impl Server {
    /// `listener` is a duplicate of the listener's fd; it is dropped when the thread
    /// ends, so that closing the listener really closes it. With `epoll_wait_ms` the
    /// thread sleeps in epoll_wait() and relies on the kernel waking it.
    pub fn start(listener: Socket, accepted: AcceptedList, epoll_wait_ms: Option<u64>) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let epoll = epoll_wait_ms.and_then(|ms| Waiter::new(&listener).ok().map(|w| (w, ms)));
            while !flag.load(Ordering::Relaxed) {
                let ready = match &epoll {
                    Some((waiter, ms)) => waiter.wait(*ms),
                    None => poll_readable(listener.as_raw_fd(), 5),
                };
                if ready {
                    let _ = accept_queued(&listener, &accepted, None);
                }
            }
        });
        Server { stop, thread }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
