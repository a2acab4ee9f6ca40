//! Instruction sources: where a running loop's instructions and commands come from.
//!
//! An [`InstructionSource`] hears commands — typed lines on the terminal, lines on the control
//! socket, a script (and, in the speech issue, recognised utterances) — and [`drive`] applies
//! each to the shared [`Controls`] and hands the reply back to the source (the socket's client
//! reads it, the terminal prints it). Every command is parsed and validated the same way
//! whatever its source ([`Command::parse`]); a refused one changes nothing.

use std::io::{BufRead, Read, Write};
use std::sync::Arc;

use crate::runtime::{Controls, EpisodeCommand};

/// Longest command line accepted, bytes.
pub const MAX_LINE: u64 = 1024;

/// The help line sent for an unknown command.
pub const COMMANDS: &str = "instruction TEXT | pause | resume | stop | release | quit | next | rerecord | status | watch";

/// One command for a running loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Replace the instruction (validated when applied; queued chunks are dropped).
    Instruction(String),
    Pause,
    Resume,
    /// Engage the e-stop (hold or torque off, as the run was started).
    Stop,
    Release,
    /// End the run (teleop: save the current episode, then end).
    Quit,
    /// Teleop: save the current episode and start the next.
    Next,
    /// Teleop: throw the current episode away and record it again.
    Rerecord,
    Status,
    /// Control socket: send this client a `heard "…"` line for each speech decision as it is made.
    Watch,
}

impl Command {
    /// Parses one line: a command word (`instruction`/`i`, `pause`, `resume`, `stop`/`estop`,
    /// `release`, `quit`/`q`, `next`/`n`, `rerecord`/`r`, `status`, `watch`) and, for an instruction, its text.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let bare = |c: Command| if rest.trim().is_empty() { Ok(c) } else { Err(format!("{cmd:?} takes no argument (got {:?})", rest.trim())) };
        match cmd {
            "instruction" | "i" => Ok(Command::Instruction(rest.to_string())),
            "pause" => bare(Command::Pause),
            "resume" => bare(Command::Resume),
            "stop" | "estop" => bare(Command::Stop),
            "release" => bare(Command::Release),
            "quit" | "q" => bare(Command::Quit),
            "next" | "n" => bare(Command::Next),
            "rerecord" | "r" => bare(Command::Rerecord),
            "status" => bare(Command::Status),
            "watch" => bare(Command::Watch),
            "" => Err(format!("empty line; commands: {COMMANDS}")),
            other => Err(format!("unknown command {other:?}; commands: {COMMANDS}")),
        }
    }
}

/// Applies `cmd` to the controls; the reply (`ok …` or `error: …`).
pub fn apply(controls: &Controls, cmd: &Command) -> String {
    match cmd {
        Command::Instruction(text) => match controls.set_instruction(text) {
            Ok(()) => format!("ok instruction {:?}", controls.instruction().1),
            Err(e) => format!("error: {e}"),
        },
        Command::Pause => {
            controls.set_paused(true);
            "ok paused".into()
        }
        Command::Resume => {
            controls.set_paused(false);
            "ok resumed".into()
        }
        Command::Stop => {
            controls.estop();
            "ok e-stop engaged".into()
        }
        Command::Release => {
            controls.release_estop();
            "ok e-stop released".into()
        }
        Command::Quit => {
            controls.quit();
            "ok quitting".into()
        }
        Command::Next => {
            controls.request_episode(EpisodeCommand::Next);
            "ok next episode".into()
        }
        Command::Rerecord => {
            controls.request_episode(EpisodeCommand::Rerecord);
            "ok re-recording the episode".into()
        }
        Command::Status => {
            let heard = controls.heard();
            let heard = if heard.is_empty() { String::new() } else { format!(" heard {heard:?}") };
            format!("ok instruction {:?} estop {} paused {}{heard}", controls.instruction().1, controls.estopped(), controls.paused())
        }
        // A source that can watch (a socket client) answers it itself, as `Heard::Local`.
        Command::Watch => "error: `watch` is a control-socket command (on the terminal, speech echoes on stderr)".into(),
    }
}

/// What a source heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Command(Command),
    /// Something that is not a command (unparseable, not UTF-8, too long): the reason, which
    /// is replied; nothing changes.
    Refused(String),
    /// A command the source carried out itself (a socket client's `watch`): the reply.
    Local(String),
}

/// A source of commands for a running loop. Implementations block in [`Self::next`] on their
/// own thread ([`spawn`]).
pub trait InstructionSource: Send {
    /// What it is, for logs (`"stdin"`, `"socket client"`, `"script"`).
    fn describe(&self) -> String;
    /// The next thing heard; `None` when the source has ended (stdin closed, client gone).
    fn next(&mut self) -> Option<Heard>;
    /// The reply to what was heard last.
    fn reply(&mut self, text: &str);
}

/// The one consumer: applies everything `source` hears until it ends or the run quits.
pub fn drive(source: &mut dyn InstructionSource, controls: &Controls) {
    while let Some(heard) = source.next() {
        let reply = match heard {
            Heard::Command(c) => apply(controls, &c),
            Heard::Refused(why) => format!("error: {why}"),
            Heard::Local(reply) => reply,
        };
        source.reply(&reply);
    }
}

/// Runs [`drive`] on a thread of its own.
pub fn spawn(mut source: Box<dyn InstructionSource>, controls: Arc<Controls>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("commands-{}", source.describe());
    std::thread::Builder::new().name(name.chars().take(15).collect()).spawn(move || drive(source.as_mut(), &controls))
}

/// What a line source does with a line that is too long or not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    /// Refuse it and carry on with the next line (the terminal).
    Skip,
    /// Refuse it and end the source (a socket client: the connection is closed).
    Close,
}

/// Commands one per line from a reader, replies one per line to a writer: the terminal
/// (stdin / stderr) and each control-socket client. Lines are at most [`MAX_LINE`] bytes of UTF-8.
pub struct Lines<R, W> {
    name: String,
    reader: R,
    replies: W,
    bad: BadLine,
    closing: bool,
}

impl<R, W> std::fmt::Debug for Lines<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").field("name", &self.name).field("bad", &self.bad).finish_non_exhaustive()
    }
}

impl<R: BufRead + Send, W: Write + Send> Lines<R, W> {
    pub fn new(name: impl Into<String>, reader: R, replies: W, bad: BadLine) -> Self {
        Self { name: name.into(), reader, replies, bad, closing: false }
    }
}

impl Lines<std::io::BufReader<std::io::Stdin>, std::io::Stderr> {
    /// The terminal: typed lines, replies on stderr.
    pub fn stdin() -> Self {
        Self::new("stdin", std::io::BufReader::new(std::io::stdin()), std::io::stderr(), BadLine::Skip)
    }
}

impl<R: BufRead + Send, W: Write + Send> InstructionSource for Lines<R, W> {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn next(&mut self) -> Option<Heard> {
        if self.closing {
            return None;
        }
        let mut buf = Vec::new();
        let n = match (&mut self.reader).take(MAX_LINE + 1).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let refuse = |this: &mut Self, why: String| match this.bad {
            BadLine::Close => {
                this.closing = true;
                Some(Heard::Refused(format!("{why}; closing")))
            }
            BadLine::Skip => Some(Heard::Refused(format!("{why}; ignored"))),
        };
        if buf.last() != Some(&b'\n') && n as u64 > MAX_LINE {
            if self.bad == BadLine::Skip {
                // The rest of the long line, however long, is not a command either.
                loop {
                    let mut rest = Vec::new();
                    match (&mut self.reader).take(64 << 10).read_until(b'\n', &mut rest) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if rest.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
            }
            return refuse(self, format!("line longer than {MAX_LINE} bytes"));
        }
        match std::str::from_utf8(&buf) {
            Ok(line) => Some(match Command::parse(line) {
                Ok(c) => Heard::Command(c),
                Err(e) => Heard::Refused(e),
            }),
            Err(_) => refuse(self, "the line is not UTF-8".into()),
        }
    }

    fn reply(&mut self, text: &str) {
        // One write per line: a socket client's watcher writes its lines between them.
        let _ = self.replies.write_all(format!("{text}\n").as_bytes());
        let _ = self.replies.flush();
    }
}

/// A fixed list of commands, in order (scripted runs and tests); the replies are kept.
#[derive(Debug, Clone, Default)]
pub struct Script {
    commands: std::collections::VecDeque<Heard>,
    pub replies: Vec<String>,
}

impl Script {
    /// Parses each line as a command; a line that does not parse is heard (and refused) in turn.
    pub fn new<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let commands = lines
            .into_iter()
            .map(|l| match Command::parse(l) {
                Ok(c) => Heard::Command(c),
                Err(e) => Heard::Refused(e),
            })
            .collect();
        Self { commands, replies: Vec::new() }
    }
}

impl InstructionSource for Script {
    fn describe(&self) -> String {
        "script".into()
    }

    fn next(&mut self) -> Option<Heard> {
        self.commands.pop_front()
    }

    fn reply(&mut self, text: &str) {
        self.replies.push(text.to_string());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_by_name_and_refuse_stray_arguments() {
        assert_eq!(Command::parse("  i put the red block left \n"), Ok(Command::Instruction("put the red block left".into())));
        assert_eq!(Command::parse("stop"), Ok(Command::Stop));
        assert_eq!(Command::parse("q"), Ok(Command::Quit));
        assert!(Command::parse("stop now").unwrap_err().contains("takes no argument"));
        assert!(Command::parse("dance").unwrap_err().contains("unknown command \"dance\""));
        assert!(Command::parse("   ").unwrap_err().contains("empty line"));
    }

    #[test]
    fn the_one_consumer_applies_any_source_and_refused_lines_change_nothing() {
        let controls = Controls::new("push the red block").unwrap();
        let mut script = Script::new(["instruction stack the blue cube", "instruction  ", "pause", "frobnicate", "status"]);
        drive(&mut script, &controls);
        assert_eq!(controls.instruction(), (1, "stack the blue cube".to_string()));
        assert!(controls.paused());
        assert_eq!(script.replies.len(), 5);
        assert!(script.replies[1].starts_with("error: the instruction is empty"), "{:?}", script.replies);
        assert!(script.replies[3].contains("unknown command"));
        assert!(script.replies[4].contains("paused true"));

        // Lines from a reader: a long line is skipped on a terminal, and ends a socket client.
        let mut input = b"i first\n".to_vec();
        // Longer than any one skip read: its tail must not be taken for a command.
        input.extend(vec![b'x'; 3 << 20]);
        input.extend(b"quit");
        input.extend(b"\nstop\n\xff\xfe\nrelease\n");
        let mut out = Vec::new();
        drive(&mut Lines::new("test", &input[..], &mut out, BadLine::Skip), &controls);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("longer than 1024 bytes; ignored") && text.contains("not UTF-8; ignored"), "{text}");
        assert_eq!(controls.instruction().1, "first");
        assert!(!controls.estopped(), "stop, then release: both heard after the bad lines");
        assert_eq!(controls.estop_presses(), 1);
        assert!(!controls.quitting(), "the long line's tail was not heard as `quit`");
        assert_eq!(text.matches("longer than").count(), 1, "one refusal for one long line: {text}");
        let mut out = Vec::new();
        drive(&mut Lines::new("client", &input[..], &mut out, BadLine::Close), &controls);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("closing\n"), "{text}");
        assert_eq!(controls.estop_presses(), 1, "nothing after the long line was heard");
    }
}
