//! The control socket: a local Unix socket that changes a running loop.
//!
//! One command per line, one reply line each (`ok …` or `error: …`):
//!
//! | command | effect |
//! |---|---|
//! | `instruction TEXT` | replace the instruction (queued chunks are dropped) |
//! | `pause` / `resume` | hold position / carry on |
//! | `stop` | engage the e-stop (hold or torque off, as the run was started) |
//! | `release` | release the e-stop |
//! | `quit` | end the run (teleop: save the current episode, then end) |
//! | `next` | teleop: save the current episode and start the next |
//! | `rerecord` | teleop: throw the current episode away and record it again |
//! | `status` | the instruction and state |
//! | `watch` | from now on, also a `heard "…"` line for each speech decision as it is made (`heard-dropped N` if the client fell 64 behind; at most 8 watchers) |
//!
//! `echo stop | socat - UNIX-CONNECT:/tmp/lapa-edge.sock` stops the arm from another shell.
//! Every line is validated before it changes anything; a line longer than 1 KiB or not UTF-8 is
//! refused and the connection closed.

use crate::instruction::{BadLine, Command, Heard, InstructionSource, Lines};
pub use crate::instruction::{COMMANDS, MAX_LINE};
use crate::runtime::Controls;
use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clients served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 16;
/// Of those, clients that `watch` (idle watchers never time out; the rest of the slots stay free
/// for commands such as `stop`).
pub const MAX_WATCHERS: usize = 8;

/// One taken slot of a capped count (clients, watchers), given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot of `n` if fewer than `max` are taken.
    fn try_take(n: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let slot = Self(n.clone());
        // (Dropping `slot` gives it back when the count was full already.)
        (n.fetch_add(1, Ordering::SeqCst) < max).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A client's writing half, shared by its replies and its watcher; one `write` is one line.
/// A write that fails (the client stopped reading past the write timeout, or left) shuts the
/// connection down both ways, so a half-written line is never followed by more.
#[derive(Debug, Clone)]
struct SharedOut(Arc<Mutex<UnixStream>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = s.write_all(buf) {
            let _ = s.shutdown(Shutdown::Both);
            return Err(e);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).flush()
    }
}

/// A socket client's lines, with `watch` carried out here (it concerns this connection only).
struct Client<S> {
    lines: S,
    controls: Arc<Controls>,
    out: SharedOut,
    /// The connection, to lift the read timeout once the client watches (it may stay quiet).
    stream: UnixStream,
    /// Set once the `ok watching` reply is out: the watcher sends nothing before it.
    armed: Arc<AtomicBool>,
    /// The watcher thread and its watcher slot (given back once the thread is joined).
    watcher: Option<(std::thread::JoinHandle<()>, Slot)>,
    done: Arc<AtomicBool>,
    /// Watching clients of this socket (at most [`MAX_WATCHERS`], so slots stay for commands).
    watchers: Arc<AtomicUsize>,
}

impl<S> Client<S> {
    /// Starts the watcher: every decision numbered above the latest now, once armed.
    fn watch(&mut self) -> Result<(), String> {
        let slot = Slot::try_take(&self.watchers, MAX_WATCHERS).ok_or_else(|| format!("{MAX_WATCHERS} clients are watching already"))?;
        let mut after = self.controls.heard_seq();
        let (mut out, controls, done, armed) = (self.out.clone(), self.controls.clone(), self.done.clone(), self.armed.clone());
        let spawned = std::thread::Builder::new().name("control-watch".into()).spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let got = controls.heard_since(after, Duration::from_millis(200));
                if !armed.load(Ordering::SeqCst) {
                    continue;
                }
                let mut lines = String::new();
                if got.dropped > 0 {
                    lines += &format!("heard-dropped {}\n", got.dropped);
                }
                for (n, text) in &got.decisions {
                    lines += &format!("heard {text:?}\n");
                    after = *n;
                }
                if !lines.is_empty() && out.write_all(lines.as_bytes()).is_err() {
                    return;
                }
            }
        });
        let t = spawned.map_err(|e| format!("cannot start a watcher thread: {e}"))?;
        self.watcher = Some((t, slot));
        // A watcher may stay quiet for as long as it likes.
        let _ = self.stream.set_read_timeout(None);
        Ok(())
    }
}

impl<S: InstructionSource> InstructionSource for Client<S> {
    fn describe(&self) -> String {
        self.lines.describe()
    }
    fn next(&mut self) -> Option<Heard> {
        match self.lines.next()? {
            Heard::Command(Command::Watch) => Some(Heard::Local(match self.watcher.is_some() {
                true => "ok watching".into(),
                false => match self.watch() {
                    Ok(()) => "ok watching: each speech decision follows as a `heard \"…\"` line".into(),
                    Err(e) => format!("error: {e}"),
                },
            })),
            other => Some(other),
        }
    }
    fn reply(&mut self, text: &str) {
        self.lines.reply(text);
        // Decisions made meanwhile are held until the `ok watching` reply is out.
        if self.watcher.is_some() {
            self.armed.store(true, Ordering::SeqCst);
        }
    }
}

/// One socket client as an instruction source: its lines in, a reply line back for each, and
/// once it asks to `watch`, every speech decision as it is made.
fn serve_client(stream: UnixStream, controls: &Arc<Controls>, watchers: &Arc<AtomicUsize>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    // A client that stops reading is cut off (its writes fail) rather than stalling anyone.
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let out = SharedOut(Arc::new(Mutex::new(stream.try_clone()?)));
    let lines = Lines::new("socket client", BufReader::new(stream.try_clone()?), out.clone(), BadLine::Close);
    let done = Arc::new(AtomicBool::new(false));
    let armed = Arc::new(AtomicBool::new(false));
    let mut client = Client { lines, controls: controls.clone(), out, stream, armed, watcher: None, done: done.clone(), watchers: watchers.clone() };
    crate::instruction::drive(&mut client, controls);
    done.store(true, Ordering::SeqCst);
    if let Some((w, _slot)) = client.watcher.take() {
        let _ = w.join();
    }
    Ok(())
}

/// Reads control commands from standard input, one per line, replies on standard error: the
/// keyboard as an instruction source (`i put the red block left`) and for `n` / `r` / `q` while
/// recording. The same validation as the socket (1 KiB lines, UTF-8). The thread ends with stdin.
pub fn spawn_stdin(controls: Arc<Controls>) {
    let _ = crate::instruction::spawn(Box::new(Lines::stdin()), controls);
}

/// A running control socket; dropping it stops it and removes the socket file.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlSocket {
    /// Listens at `path`. A leftover socket file nobody answers on is replaced; a live one (another
    /// run) or a file that is not a socket is an error, and nothing is removed.
    pub fn bind(path: &Path, controls: Arc<Controls>) -> Result<Self, String> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(format!("{}: exists and is not a socket; not replacing it", path.display()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(format!("{}: another lapa-edge is listening there", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| format!("{}: cannot remove the stale socket: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
        listener.set_nonblocking(true).map_err(|e| format!("{}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let clients = Arc::new(AtomicUsize::new(0));
        let watchers = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("control-socket".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let Some(slot) = Slot::try_take(&clients, MAX_CLIENTS) else {
                                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                                let _ = stream.write_all(format!("error: {MAX_CLIENTS} control clients are connected already; closing\n").as_bytes());
                                continue;
                            };
                            let (c, w) = (controls.clone(), watchers.clone());
                            // One thread per client: a client that never sends does not block others.
                            // (The slot is given back when the thread ends, a panic included,
                            // or at once if it cannot start.)
                            let _ = std::thread::Builder::new().name("control-client".into()).spawn(move || {
                                let _slot = slot;
                                let _ = serve_client(stream, &c, &w);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
            .map_err(|e| format!("cannot start the control socket thread: {e}"))?;
        Ok(Self { path: path.to_path_buf(), stop, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};

    fn ask(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &[u8]) -> String {
        stream.write_all(line).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        reply
    }

    #[test]
    fn commands_change_the_controls_and_bad_lines_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.sock");
        let controls = Controls::new("push the red block to the left").unwrap();
        let sock = ControlSocket::bind(&path, controls.clone()).unwrap();
        assert!(ControlSocket::bind(&path, controls.clone()).unwrap_err().contains("another lapa-edge"));
        let mut s = UnixStream::connect(&path).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(
            ask(&mut s, &mut r, b"instruction put the blue cube in the top left corner\n"),
            "ok instruction \"put the blue cube in the top left corner\"\n"
        );
        assert_eq!(controls.instruction(), (1, "put the blue cube in the top left corner".to_string()));
        assert!(ask(&mut s, &mut r, b"instruction   \n").starts_with("error: the instruction is empty"));
        assert!(ask(&mut s, &mut r, b"instruction a\x07b\n").contains("control character"));
        assert!(ask(&mut s, &mut r, b"dance\n").contains("unknown command \"dance\""));
        assert_eq!(controls.instruction().0, 1, "refused lines changed nothing");
        assert_eq!(ask(&mut s, &mut r, b"stop\n"), "ok e-stop engaged\n");
        assert!(controls.estopped());
        assert_eq!(ask(&mut s, &mut r, b"pause\n"), "ok paused\n");
        assert!(ask(&mut s, &mut r, b"status\n").contains("estop true paused true"));
        ask(&mut s, &mut r, b"release\n");
        ask(&mut s, &mut r, b"resume\n");
        assert!(!controls.estopped() && !controls.paused());
        // Not UTF-8, and an endless line: refused, connection closed.
        assert!(ask(&mut s, &mut r, b"instruction \xff\xfe\n").contains("not UTF-8"));
        let mut s2 = UnixStream::connect(&path).unwrap();
        let mut r2 = BufReader::new(s2.try_clone().unwrap());
        assert!(ask(&mut s2, &mut r2, &[b'x'; 4000]).contains("longer than 1024"));
        assert_eq!(controls.instruction().0, 1);
        let mut rest = String::new();
        assert!(matches!(r2.read_line(&mut rest), Ok(0) | Err(_)), "closed: {rest:?}");
        let mut s3 = UnixStream::connect(&path).unwrap();
        let mut r3 = BufReader::new(s3.try_clone().unwrap());
        // `watch`: this client is sent each decision after it asked, in order; the others are not.
        controls.set_heard("before the watch");
        s3.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(ask(&mut s3, &mut r3, b"watch\n").starts_with("ok watching"));
        controls.set_heard("speech: instruction \"stack the red cube\" (grammar, fit 0.91)");
        controls.set_heard("speech: heard \"stop\" → e-stop");
        let mut pushed = String::new();
        r3.read_line(&mut pushed).unwrap();
        r3.read_line(&mut pushed).unwrap();
        assert_eq!(pushed, "heard \"speech: instruction \\\"stack the red cube\\\" (grammar, fit 0.91)\"\nheard \"speech: heard \\\"stop\\\" → e-stop\"\n");
        assert!(ask(&mut s3, &mut r3, b"watch please\n").contains("takes no argument"));
        let mut s4 = UnixStream::connect(&path).unwrap();
        s4.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r4 = BufReader::new(s4.try_clone().unwrap());
        assert!(ask(&mut s4, &mut r4, b"status\n").contains("heard \"speech: heard"), "status shows the latest");
        controls.set_heard("third");
        assert!(ask(&mut s4, &mut r4, b"status\n").starts_with("ok instruction"), "a client that did not watch gets replies only");
        pushed.clear();
        r3.read_line(&mut pushed).unwrap();
        assert_eq!(pushed, "heard \"third\"\n");
        // A watcher more than HEARD_KEPT behind is told how many it missed.
        let since = controls.heard_since(0, Duration::ZERO);
        assert_eq!((since.decisions.len(), since.dropped), (4, 0));
        for k in 0..crate::runtime::HEARD_KEPT + 3 {
            controls.set_heard(&format!("d{k}"));
        }
        let since = controls.heard_since(4, Duration::ZERO);
        assert_eq!((since.decisions.len(), since.dropped, since.decisions[0].1.as_str()), (crate::runtime::HEARD_KEPT, 3, "d3"));
        // The socket watcher got the burst as it could: every decision sent or counted as dropped,
        // in order, the last one last.
        let (mut sent, mut dropped, mut last, mut prev) = (0u64, 0u64, String::new(), -1i64);
        while last != "heard \"d66\"\n" {
            last.clear();
            r3.read_line(&mut last).unwrap();
            match last.strip_prefix("heard-dropped ") {
                Some(n) => dropped += n.trim().parse::<u64>().unwrap(),
                None => {
                    let k: i64 = last.strip_prefix("heard \"d").and_then(|r| r.strip_suffix("\"\n")).unwrap().parse().unwrap();
                    assert!(k > prev, "in order: d{k} after d{prev}");
                    prev = k;
                    sent += 1;
                }
            }
        }
        assert_eq!(sent + dropped, crate::runtime::HEARD_KEPT as u64 + 3);
        // At most MAX_WATCHERS watch (s3 is one); the rest of the slots stay for commands.
        let mut others: Vec<(UnixStream, BufReader<UnixStream>)> = (1..MAX_WATCHERS)
            .map(|_| {
                let mut c = UnixStream::connect(&path).unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                assert!(ask(&mut c, &mut r, b"watch\n").starts_with("ok watching"));
                (c, r)
            })
            .collect();
        let mut s5 = UnixStream::connect(&path).unwrap();
        let mut r5 = BufReader::new(s5.try_clone().unwrap());
        assert!(ask(&mut s5, &mut r5, b"watch\n").contains("clients are watching already"));
        assert!(ask(&mut s5, &mut r5, b"status\n").starts_with("ok instruction"), "a refused watcher still takes commands");
        others.clear();
        drop((s5, r5));
        // (Their server threads end within one 200 ms watch poll and give their slots back.)
        std::thread::sleep(Duration::from_millis(800));
        // Clients beyond the cap are told so and closed; the others carry on.
        let extra: Vec<UnixStream> = (0..MAX_CLIENTS).map(|_| UnixStream::connect(&path).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        let over_stream = UnixStream::connect(&path).unwrap();
        over_stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut over = BufReader::new(over_stream);
        let mut refused = String::new();
        over.read_line(&mut refused).unwrap();
        assert!(refused.contains("control clients are connected already"), "{refused:?}");
        drop(extra);
        assert_eq!(ask(&mut s3, &mut r3, b"quit\n"), "ok quitting\n");
        assert!(controls.quitting());
        drop(sock);
        assert!(!path.exists(), "the socket file is removed");
        // A stale socket file is replaced; a regular file is not touched.
        std::fs::write(&path, b"precious").unwrap();
        assert!(ControlSocket::bind(&path, controls).unwrap_err().contains("not a socket"));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
