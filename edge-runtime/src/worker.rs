//! A background thread that runs until its handle is dropped: the e-stop watcher and the status
//! LED are both one (a loop that polls a stop flag between rounds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A running background thread; dropping it raises its stop flag and joins it.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts `body` on a thread named `name`; `body` returns once the flag it is given is set.
    pub fn spawn(name: &str, body: impl FnOnce(&AtomicBool) + Send + 'static) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(&s)).map_err(|e| format!("cannot start the {name} thread: {e}"))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
