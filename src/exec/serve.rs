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

impl Server {
    /// `listener` is a duplicate of the listener's fd; it is dropped when the thread
    /// ends, so that closing the listener really closes it.
    pub fn start(listener: Socket, accepted: AcceptedList) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if poll_readable(listener.as_raw_fd(), 5) {
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
