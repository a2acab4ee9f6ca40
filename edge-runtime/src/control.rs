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
//! | `watch` | from now on, also a `heard "…"` line each time speech decides something, before it is acted on |
//!
//! `echo stop | socat - UNIX-CONNECT:/tmp/lapa-edge.sock` stops the arm from another shell.
//! Every line is validated before it changes anything; a line longer than 1 KiB or not UTF-8 is
//! refused and the connection closed.

use crate::instruction::{BadLine, Command, Heard, InstructionSource, Lines};
pub use crate::instruction::{COMMANDS, MAX_LINE};
use crate::runtime::Controls;
use std::io::{BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A client's writing half, shared by its replies and its watcher; one `write` is one line.
#[derive(Debug, Clone)]
struct SharedOut(Arc<Mutex<UnixStream>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).flush()
    }
}

/// Not watching (see [`Client::watch_from`]).
const NOT_WATCHING: u64 = u64::MAX;

/// A socket client's lines, with `watch` carried out here (it concerns this connection only).
struct Client<S> {
    lines: S,
    controls: Arc<Controls>,
    /// The speech publication count the client has been sent up to ([`NOT_WATCHING`] until it
    /// asks): what came after `watch` is sent, nothing from before.
    watch_from: Arc<AtomicU64>,
}

impl<S: InstructionSource> InstructionSource for Client<S> {
    fn describe(&self) -> String {
        self.lines.describe()
    }
    fn next(&mut self) -> Option<Heard> {
        match self.lines.next()? {
            Heard::Command(Command::Watch) => {
                self.watch_from.store(self.controls.heard_update().0, Ordering::SeqCst);
                Some(Heard::Local("ok watching: each speech decision follows as a `heard \"…\"` line".into()))
            }
            other => Some(other),
        }
    }
    fn reply(&mut self, text: &str) {
        self.lines.reply(text);
    }
}

/// One socket client as an instruction source: its lines in, a reply line back for each, and
/// once it asks to `watch`, what speech hears.
fn serve_client(stream: UnixStream, controls: &Arc<Controls>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    // A client that stops reading cannot stall the watcher (or the speech thread) for long.
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let out = SharedOut(Arc::new(Mutex::new(stream.try_clone()?)));
    let watch_from = Arc::new(AtomicU64::new(NOT_WATCHING));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (mut out, watch_from, done, controls) = (out.clone(), watch_from.clone(), done.clone(), controls.clone());
        std::thread::Builder::new().name("control-watch".into()).spawn(move || {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let from = watch_from.load(Ordering::SeqCst);
                if from == NOT_WATCHING {
                    continue;
                }
                // The latest decision (two within one 20 ms poll: the later one).
                let (seq, text) = controls.heard_update();
                if seq > from
                    && watch_from.compare_exchange(from, seq, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                    && out.write_all(format!("heard {text:?}\n").as_bytes()).is_err()
                {
                    return;
                }
            }
        })?
    };
    let lines = Lines::new("socket client", BufReader::new(stream), out, BadLine::Close);
    let mut client = Client { lines, controls: controls.clone(), watch_from };
    crate::instruction::drive(&mut client, controls);
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
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
        let thread = std::thread::Builder::new()
            .name("control-socket".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let c = controls.clone();
                            let _ = stream.set_nonblocking(false);
                            // One thread per client: a client that never sends does not block others.
                            let _ = std::thread::Builder::new().name("control-client".into()).spawn(move || {
                                let _ = serve_client(stream, &c);
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
        // `watch`: this client is sent what speech decides; the others are not.
        s3.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(ask(&mut s3, &mut r3, b"watch\n").starts_with("ok watching"));
        controls.set_heard("speech: instruction \"stack the red cube\" (grammar, fit 0.91)");
        let mut pushed = String::new();
        r3.read_line(&mut pushed).unwrap();
        assert_eq!(pushed, "heard \"speech: instruction \\\"stack the red cube\\\" (grammar, fit 0.91)\"\n");
        let mut s4 = UnixStream::connect(&path).unwrap();
        s4.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r4 = BufReader::new(s4.try_clone().unwrap());
        assert!(ask(&mut s4, &mut r4, b"status\n").starts_with("ok instruction"));
        controls.set_heard("speech: heard \"stop\" → e-stop");
        r3.read_line(&mut pushed).unwrap();
        assert!(pushed.ends_with("heard \"speech: heard \\\"stop\\\" → e-stop\"\n"), "{pushed:?}");
        assert!(ask(&mut s4, &mut r4, b"status\n").starts_with("ok instruction"), "a client that did not watch gets replies only");
        assert!(ask(&mut s3, &mut r3, b"watch please\n").contains("takes no argument"));
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
