//! A thread that stays alive, keeping its writer slot (and so its stripe in
//! every aggregator), and runs what it is handed, one closure at a time:
//! tests use it to leave a pending minute in another thread's stripe.
//! Shared by the core's and the syncer's tests (`#[path]` includes).

use std::sync::mpsc;

pub struct Helper {
    tx: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    pub fn new() -> Helper {
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (ack, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            while let Ok(f) = rx.recv() {
                f();
                ack.send(()).unwrap();
            }
        });
        Helper {
            tx: Some(tx),
            done,
            thread: Some(thread),
        }
    }

    /// Run `f` on the thread and wait for it.
    pub fn run(&self, f: impl FnOnce() + Send + 'static) {
        self.tx.as_ref().unwrap().send(Box::new(f)).unwrap();
        self.done.recv().unwrap();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.tx.take());
        let _ = self.thread.take().unwrap().join();
    }
}
