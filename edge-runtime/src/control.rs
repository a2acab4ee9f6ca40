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
//!
//! `echo stop | socat - UNIX-CONNECT:/tmp/lapa-edge.sock` stops the arm from another shell.
//! Every line is validated before it changes anything; a line longer than 1 KiB or not UTF-8 is
//! refused and the connection closed.

use crate::instruction::{BadLine, Lines};
pub use crate::instruction::{COMMANDS, MAX_LINE};
use crate::runtime::Controls;
use std::io::BufReader;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One socket client as an instruction source: its lines in, a reply line back for each.
fn serve_client(stream: UnixStream, controls: &Controls) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let out = stream.try_clone()?;
    crate::instruction::drive(&mut Lines::new("socket client", BufReader::new(stream), out, BadLine::Close), controls);
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
