//! `lapa flash`: put a cross-built `lapa-edge` and a model bundle on a board over SSH.
//!
//! The board keeps one folder (`--dir`, default `~/lapa`):
//!
//! ```text
//! lapa/
//!   keys/<id>.pub          public keys whose bundles the board runs (`--install-key`, once)
//!   releases/<id>/         one flash: lapa-edge, bundle/, board/<profile>.toml, release.json
//!   current -> releases/…  what runs (the systemd unit starts current/lapa-edge)
//!   previous -> releases/… what `lapa flash --rollback` goes back to
//!   .staging-<id>/         a flash on its way in (an interrupted one is removed by the next)
//! ```
//!
//! A flash uploads into a staging folder, has the *board's* copy of the new binary check the
//! uploaded bundle (signature against `keys/`, every part's SHA-256, the policy built from it)
//! and its own SHA-256, and only then renames the staging folder into `releases/` and switches
//! `previous` and `current` with `rename(2)` (atomic: a reader sees the old link or the new one,
//! never neither). An interruption at any point before the switch leaves `current` as it was.
//!
//! Transport: the system's OpenSSH client (`ssh`, with the user's keys, agent and config), one
//! connection per step, the files as one tar stream into `tar` on the board. The board needs a
//! POSIX shell, GNU coreutils (`mv -T`, `sha256sum`, `readlink`), util-linux `flock` and tar: Raspberry Pi OS,
//! Ubuntu and JetPack have them.

use anyhow::{Context, Result, anyhow, bail};
use lapa_model::bundle::{Bundle, MANIFEST, SIGNATURE};
use lapa_model::signing::{PublicKey, Trust, Verified};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to reach the board: arguments for the system's `ssh`.
#[derive(Debug, Clone, Default)]
pub struct SshTarget {
    /// `user@host` or `host` (an alias from the ssh config works).
    pub host: String,
    pub port: Option<u16>,
    /// Private key file (`ssh -i`).
    pub identity: Option<PathBuf>,
    /// ssh config file (`ssh -F`; `none` ignores the user's).
    pub config: Option<String>,
    /// Extra `-o` options (`UserKnownHostsFile=…`).
    pub options: Vec<String>,
}

impl SshTarget {
    /// Checks the fields: a host that ssh would read as an option, or an option that would
    /// run a local command, is refused before anything starts.
    pub fn validate(&self) -> Result<()> {
        let h = &self.host;
        // Letters, digits and the few characters of user@host, IPv6 and aliases: nothing a shell
        // or ssh's own %-expansion (older OpenSSH expands %h into ProxyCommand) would read.
        if h.is_empty() || h.starts_with('-') || !h.chars().all(|c| c.is_ascii_alphanumeric() || "._-@:[]".contains(c)) {
            bail!("--host {h:?}: expected user@host or host (letters, digits and . _ - @ : [ ] only, not starting with '-')");
        }
        let host_part = h.rsplit('@').next().unwrap_or_default();
        if host_part.is_empty() {
            bail!("--host {h:?}: no host after '@'");
        }
        if self.port == Some(0) {
            bail!("--port 0: expected 1..=65535");
        }
        for o in &self.options {
            let key = o.split(['=', ' ']).next().unwrap_or_default().to_ascii_lowercase();
            if o.chars().any(char::is_control) || key.is_empty() {
                bail!("--ssh-option {o:?}: expected Key=value");
            }
            // These run commands on this machine; a flash has no use for them.
            if [
                "localcommand",
                "permitlocalcommand",
                "proxycommand",
                "knownhostscommand",
                "pkcs11provider",
                "securitykeyprovider",
                "forwardagent",
                "remotecommand",
            ]
            .contains(&key.as_str())
            {
                bail!("--ssh-option {o:?}: {key} runs local code or exposes your agent; put it in your ssh config (--ssh-config) if you need it");
            }
        }
        Ok(())
    }

    fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        // ssh keeps the first value it sees of an option: the user's come first.
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i).arg("-o").arg("IdentitiesOnly=yes");
        }
        // Never ask for a password or a host-key confirmation on a prompt no one sees.
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]);
        c.arg("--").arg(&self.host).arg(remote);
        c
    }

    /// Runs `script` with the board's `sh`; its stdout, or an error with its stderr.
    pub fn run(&self, what: &str, script: &str) -> Result<String> {
        let out = self
            .command(&format!("sh -c {}", sh_quote(script)))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow!("running ssh ({e}): is OpenSSH's client installed?"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code().map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
            // ssh itself exits 255 when it cannot connect or log in.
            let hint = if out.status.code() == Some(255) {
                " (ssh could not connect or log in: check --host, --port, --identity and the board's host key)"
            } else {
                ""
            };
            bail!("{what} on {}: failed with {code}{hint}: {}", self.host, err.trim());
        }
        String::from_utf8(out.stdout).map_err(|e| anyhow!("{what} on {}: output not UTF-8: {e}", self.host))
    }
}

/// The board folder's lock for one flash or rollback: `flock` on `DIR/.flash.lock`, held by a
/// process on the board for as long as this value's ssh session lives. When the workstation's
/// process ends in any way (done, error, killed), the session closes and the board lets go, so a
/// killed flash never leaves a stale lock; a second flash meanwhile waits up to 5 s, then is
/// refused.
struct BoardLock {
    child: std::process::Child,
}

impl BoardLock {
    fn take(ssh: &SshTarget, dir: &str) -> Result<Self> {
        let script = format!(
            "mkdir -p -- {d} && cd -- {d} || exit 1; command -v flock >/dev/null || {{ echo 'the board has no flock (util-linux)' >&2; exit 1; }}; \
             flock -w 5 .flash.lock sh -c 'echo locked; exec cat >/dev/null' || {{ echo 'another lapa flash is running on this board (it holds .flash.lock; a killed one lets go within seconds)' >&2; exit 9; }}",
            d = sh_quote(dir)
        );
        let mut child = ssh
            .command(&format!("sh -c {}", sh_quote(&script)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow!("running ssh ({e}): is OpenSSH's client installed?"))?;
        let mut line = String::new();
        {
            use std::io::BufRead;
            let out = child.stdout.as_mut().ok_or_else(|| anyhow!("ssh: no stdout pipe"))?;
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "locked" {
            let status = child.wait().context("waiting for ssh")?;
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            let hint =
                if status.code() == Some(255) { " (ssh could not connect or log in: check --host, --port, --identity and the board's host key)" } else { "" };
            bail!("locking the board folder on {}: {}{hint}", ssh.host, err.trim());
        }
        Ok(Self { child })
    }
}

impl Drop for BoardLock {
    fn drop(&mut self) {
        // Closing stdin ends `cat` on the board, which releases the lock.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Quotes `s` for a POSIX shell: one word, nothing expanded.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What to flash.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// Board profile: a built-in name or a `.toml` path (uploaded beside the binary).
    pub board: String,
    pub bundle: PathBuf,
    /// The board's `lapa-edge` (cross-built for the profile's target).
    pub binary: PathBuf,
    /// The folder on the board (relative paths are under the login's home).
    pub dir: String,
    /// Public keys to install on the board before the check (once per workstation key).
    pub install_keys: Vec<PathBuf>,
    /// Development: the board checks the bundle with `--allow-unsigned` (and the unit runs so).
    pub allow_unsigned: bool,
    /// Install a systemd unit that runs `current` at boot.
    pub systemd: Option<SystemdOptions>,
    /// Print no progress bar.
    pub quiet: bool,
}

/// The systemd unit `--systemd` installs.
#[derive(Debug, Clone, Default)]
pub struct SystemdOptions {
    /// Where the unit goes; default /etc/systemd/system for root, else ~/.config/systemd/user,
    /// and then it is enabled and (re)started. With a folder given, only the file is written.
    pub unit_dir: Option<String>,
    /// The instruction the service starts with (change it on the control socket).
    pub instruction: String,
}

/// Checks an instruction for the unit: what `lapa-edge run --instruction` takes.
pub fn check_instruction(i: &str) -> Result<()> {
    if i.trim().is_empty() || i.len() > 512 || i.chars().any(char::is_control) {
        bail!("--instruction {i:?}: expected 1..=512 bytes of text without control characters");
    }
    Ok(())
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct FlashReport {
    /// The board folder, absolute.
    pub root: String,
    pub release: String,
    pub previous: Option<String>,
    /// The board's `lapa-edge verify` line.
    pub verified: String,
    pub bytes: u64,
    pub unit: Option<String>,
    pub notes: Vec<String>,
}

/// The architecture an ELF file is built for (`x86_64`, `aarch64`, `arm`, `riscv64`).
pub fn elf_arch(path: &Path) -> Result<&'static str> {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).with_context(|| format!("--binary {}", path.display()))?;
    f.read_exact(&mut head).map_err(|_| anyhow!("--binary {}: too short to be a program", path.display()))?;
    if head[..4] != *b"\x7fELF" {
        bail!("--binary {}: not an ELF program (a Linux executable)", path.display());
    }
    let machine = if head[5] == 2 { u16::from_be_bytes([head[18], head[19]]) } else { u16::from_le_bytes([head[18], head[19]]) };
    Ok(match machine {
        62 => "x86_64",
        183 => "aarch64",
        40 => "arm",
        243 => "riscv64",
        other => bail!("--binary {}: ELF machine {other}, which no board profile targets", path.display()),
    })
}

/// The architecture of a target triple or of `uname -m` in the same words as [`elf_arch`].
pub fn arch_word(s: &str) -> &str {
    let first = s.split('-').next().unwrap_or(s);
    match first {
        "arm64" => "aarch64",
        a if a.starts_with("arm") => "arm",
        "amd64" => "x86_64",
        a => a,
    }
}

/// Where `cargo build --release --target TRIPLE -p lapa-edge` puts the board binary.
pub fn default_binary(triple: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let cross = target.join(triple).join("release/lapa-edge");
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    if !cross.exists() && triple == host && target.join("release/lapa-edge").exists() {
        return target.join("release/lapa-edge");
    }
    cross
}

/// Checks a `--dir` value: a path the board's shell gets quoted, without control characters.
fn check_dir(dir: &str) -> Result<()> {
    if dir.is_empty() || dir.chars().any(char::is_control) || dir.split('/').any(|c| c == "..") {
        bail!("--dir {dir:?}: expected a folder path without '..' or control characters");
    }
    Ok(())
}

/// Reads `key=value` lines a board script printed.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).filter(|v| !v.is_empty())
}

/// Counts bytes into a progress bar (and the total, for the report).
struct Counting<W> {
    inner: W,
    bar: indicatif::ProgressBar,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A regular file's tar header: `len` bytes, `mode`, stamped now.
fn tar_header(len: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(mode);
    h.set_mtime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

fn tar_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, path: &Path, mode: u32) -> Result<()> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let len = f.metadata().with_context(|| path.display().to_string())?.len();
    tar.append_data(&mut tar_header(len, mode), name, &mut f).with_context(|| format!("sending {}", path.display()))?;
    Ok(())
}

fn tar_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    tar.append_data(&mut tar_header(bytes.len() as u64, mode), name, bytes).with_context(|| format!("sending {name}"))?;
    Ok(())
}

/// Flashes `opts.binary` and `opts.bundle` to the board at `ssh`; see the module docs.
pub fn flash(ssh: &SshTarget, opts: &FlashOptions) -> Result<FlashReport> {
    ssh.validate()?;
    check_dir(&opts.dir)?;
    if let Some(sd) = &opts.systemd {
        check_instruction(&sd.instruction)?;
    }
    let (board, board_file) = lapa_boards::profile::load_board(&opts.board).with_context(|| format!("--board {}", opts.board))?;
    if board.name.is_empty() || !board.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("--board {}: name {:?}: expected letters, digits, '_' and '-'", opts.board, board.name);
    }
    let builtin = board_file.starts_with("<built-in>");

    // Everything that can be checked here is, before the board is touched.
    if !opts.binary.is_file() {
        bail!(
            "--binary {}: no such file; build the board binary first: cargo build --release --locked -p lapa-edge --target {} (scripts/cross-check.sh sets up the aarch64 toolchain), or pass --binary",
            opts.binary.display(),
            board.target
        );
    }
    let bin_arch = elf_arch(&opts.binary)?;
    if bin_arch != arch_word(&board.target) {
        bail!("--binary {} is built for {bin_arch}, but board {} runs {} ({})", opts.binary.display(), board.name, arch_word(&board.target), board.target);
    }
    let mut keys = Vec::new();
    for k in &opts.install_keys {
        keys.push(PublicKey::read(k).with_context(|| format!("--install-key {}", k.display()))?);
    }
    // The bundle's parts and hashes; its signature against the keys being installed, if any
    // (the board decides with its own keys below).
    let local_trust = Trust { keys: keys.clone(), allow_unsigned: keys.is_empty() || opts.allow_unsigned };
    let bundle = Bundle::open(&opts.bundle, &local_trust).with_context(|| format!("bundle {}", opts.bundle.display()))?;
    if let Verified::Unchecked { reason } = &bundle.verified
        && !opts.allow_unsigned
        && !bundle.root.join(SIGNATURE).exists()
    {
        bail!(
            "bundle {}: {reason}; the board refuses unsigned bundles: sign it (`lapa export --sign-key`) or pass --allow-unsigned (development)",
            opts.bundle.display()
        );
    }
    let bin_sha = lapa_model::bundle::sha256_file(&opts.binary)?;
    let manifest_sha = lapa_model::bundle::sha256_file(&bundle.root.join(MANIFEST))?;
    // Milliseconds first, so releases sort by time; the manifest's hash names what it holds.
    let release = format!(
        "{}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()),
        manifest_sha.get(..12).unwrap_or(&manifest_sha)
    );
    let mut notes = Vec::new();
    let _lock = BoardLock::take(ssh, &opts.dir)?;

    // 1. Probe: the folder (absolute), the machine, what runs now; an interrupted flash's
    //    staging folder goes.
    let probe = ssh.run(
        "preparing the board folder",
        &format!(
            "set -e; mkdir -p -- {d}; cd -- {d}; mkdir -p releases keys; printf 'root=%s\\n' \"$(pwd -P)\"; printf 'arch=%s\\n' \"$(uname -m)\"; \
             printf 'uid=%s\\n' \"$(id -u)\"; printf 'current=%s\\n' \"$(readlink current || true)\"; \
             for s in .staging-*; do if [ -e \"$s\" ]; then rm -rf -- \"$s\"; printf 'stale=%s\\n' \"$s\"; fi; done; \
             for t in mv sha256sum tar readlink; do command -v \"$t\" >/dev/null || printf 'missing=%s\\n' \"$t\"; done",
            d = sh_quote(&opts.dir)
        ),
    )?;
    let root = field(&probe, "root").ok_or_else(|| anyhow!("the board did not say where {} is: {probe}", opts.dir))?.to_string();
    if !root.starts_with('/') || root.chars().any(char::is_control) || root.contains("..") {
        bail!("the board folder resolved to {root:?}: expected an absolute path without control characters");
    }
    if let Some(m) = field(&probe, "missing") {
        bail!("the board has no `{m}` (lapa flash needs a POSIX shell with coreutils and tar)");
    }
    let remote_arch = field(&probe, "arch").unwrap_or_default();
    if arch_word(remote_arch) != bin_arch {
        bail!("the board is {remote_arch}, but --binary {} is built for {bin_arch}", opts.binary.display());
    }
    let uid = field(&probe, "uid").unwrap_or_default().to_string();
    for l in probe.lines().filter_map(|l| l.strip_prefix("stale=")) {
        notes.push(format!("removed {l}, left by an interrupted flash"));
    }
    let r = sh_quote(&root);
    let staging = format!(".staging-{release}");

    // 2. Keys, then the files as one tar stream into the staging folder.
    for k in &keys {
        let file = format!("keys/{}.pub", k.id());
        ssh.run(
            "installing a public key",
            &format!(
                "set -e; cd -- {r}; umask 022; printf '%s' {text} > {tmp}; mv -f -- {tmp} {file}",
                text = sh_quote(&k.to_text()),
                tmp = sh_quote(&format!("{file}.tmp")),
                file = sh_quote(&file)
            ),
        )?;
        notes.push(format!("installed key {} ({}) in {root}/keys", k.id(), k.comment));
    }
    let mut files: Vec<(String, PathBuf, u32)> = vec![("lapa-edge".into(), opts.binary.clone(), 0o755)];
    files.push((format!("bundle/{MANIFEST}"), bundle.root.join(MANIFEST), 0o644));
    if bundle.root.join(SIGNATURE).is_file() {
        files.push((format!("bundle/{SIGNATURE}"), bundle.root.join(SIGNATURE), 0o644));
    }
    for name in bundle.manifest.parts.keys() {
        files.push((format!("bundle/{name}"), bundle.root.join(name), 0o644));
    }
    if !builtin {
        files.push((format!("board/{}.toml", board.name), board_file.clone(), 0o644));
    }
    // The release's own launchers: what it runs and how it is checked travel with it, so a
    // rollback or a unit never pairs a binary with another release's profile or trust.
    let here = "$(cd -- \"$(dirname -- \"$0\")\" && pwd -P)";
    let board_arg_sh = if builtin { sh_quote(&board.name) } else { format!("\"$here/board/{}.toml\"", board.name) };
    let trust = format!("--key-dir {}{}", sh_quote(&format!("{root}/keys")), if opts.allow_unsigned { " --allow-unsigned" } else { "" });
    let run_sh = format!(
        "#!/bin/sh\n# Written by `lapa flash`: runs this release (its lapa-edge, bundle and board profile).\nhere={here}\nexec \"$here/lapa-edge\" run --board {board_arg_sh} --bundle \"$here/bundle\" {trust} \"$@\"\n"
    );
    let verify_sh = format!(
        "#!/bin/sh\n# Written by `lapa flash`: checks this release's bundle as its run.sh would load it.\nhere={here}\nexec \"$here/lapa-edge\" verify --bundle \"$here/bundle\" --board {board_arg_sh} {trust} \"$@\"\n"
    );
    let info = serde_json::json!({
        "release": release,
        "bundle": bundle.manifest.name,
        "manifest_sha256": manifest_sha,
        "lapa_edge_sha256": bin_sha,
        "board": board.name,
        "flashed_by": format!("lapa {}", env!("CARGO_PKG_VERSION")),
        "flashed_at_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    let info_bytes = serde_json::to_vec_pretty(&info)?;
    let mut total: u64 = (info_bytes.len() + run_sh.len() + verify_sh.len()) as u64;
    for (_, p, _) in &files {
        total += std::fs::metadata(p).with_context(|| p.display().to_string())?.len();
    }
    let bar = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("upload {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let mut child = ssh
        .command(&format!("sh -c {}", sh_quote(&format!("set -e; cd -- {r}; mkdir -- {s}; tar -xof - -C {s}; sync", s = sh_quote(&staging)))))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("running ssh ({e}): is OpenSSH's client installed?"))?;
    // stderr is drained on a thread, so a chatty board can never block the upload.
    let mut err_pipe = child.stderr.take().ok_or_else(|| anyhow!("ssh: no stderr pipe"))?;
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let stdin = child.stdin.take().ok_or_else(|| anyhow!("ssh: no stdin pipe"))?;
    let sent = (|| -> Result<u64> {
        let mut tar = tar::Builder::new(Counting { inner: std::io::BufWriter::with_capacity(1 << 16, stdin), bar: bar.clone(), bytes: 0 });
        for (name, path, mode) in &files {
            tar_file(&mut tar, name, path, *mode)?;
        }
        tar_bytes(&mut tar, "release.json", &info_bytes, 0o644)?;
        tar_bytes(&mut tar, "run.sh", run_sh.as_bytes(), 0o755)?;
        tar_bytes(&mut tar, "verify.sh", verify_sh.as_bytes(), 0o755)?;
        let mut w = tar.into_inner().context("finishing the upload")?;
        w.flush().context("finishing the upload")?;
        Ok(w.bytes)
    })();
    bar.finish_and_clear();
    let status = child.wait().context("waiting for ssh")?;
    let err = err_thread.join().unwrap_or_default();
    let cleanup = |ssh: &SshTarget| {
        let _ = ssh.run("removing the staging folder", &format!("cd -- {r} && rm -rf -- {}", sh_quote(&staging)));
    };
    let sent = match (sent, status.success()) {
        (Ok(n), true) => n,
        (sent, _) => {
            cleanup(ssh);
            let why = sent.err().map_or_else(String::new, |e| format!("{e:#}; "));
            bail!("uploading to {}:{root}/{staging} failed: {why}{}", ssh.host, err.trim());
        }
    };

    // 3. The board checks what arrived, with the binary that will run it.
    let check = ssh.run(
        "checking the upload on the board",
        &format!(
            "cd -- {r} || exit 1; s={s}; \
             got=$(sha256sum \"$s/lapa-edge\" | cut -d' ' -f1); [ \"$got\" = {bin_sha} ] || {{ echo \"lapa-edge arrived damaged (SHA-256 $got)\" >&2; exit 1; }}; \
             got=$(sha256sum \"$s/bundle/{MANIFEST}\" | cut -d' ' -f1); [ \"$got\" = {manifest_sha} ] || {{ echo \"{MANIFEST} arrived damaged (SHA-256 $got)\" >&2; exit 1; }}; \
             \"$s/verify.sh\"",
            s = sh_quote(&staging),
        ),
    );
    let verified = match check {
        Ok(out) => out.trim().to_string(),
        Err(e) => {
            cleanup(ssh);
            return Err(e.context(format!("the board refused the new bundle; {root}/current is unchanged")));
        }
    };

    // 4. The switch: the release in place, then `previous`, then `current`, each a rename.
    let old = field(&probe, "current").map(str::to_string);
    let switched = ssh.run(
        "switching to the new release",
        &format!(
            "set -e; cd -- {r}; mv -T -- {s} {rel}; old=$(readlink current || true); \
             if [ -n \"$old\" ] && [ \"$old\" != {rel} ]; then ln -sfn -- \"$old\" .previous.new; mv -fT -- .previous.new previous; fi; \
             ln -sfn -- {rel} .current.new; mv -fT -- .current.new current; sync; \
             prev=$(readlink previous || true); \
             for d in releases/*; do case \"$d\" in releases/[0-9]*-[0-9a-f]*) ;; *) continue ;; esac; \
               if [ -d \"$d\" ] && ! [ \"$d\" -ef current ] && ! [ \"$d\" -ef previous ]; then rm -rf -- \"$d\"; printf 'pruned=%s\\n' \"$d\"; fi; done; \
             printf 'previous=%s\\n' \"$prev\"; {restart}",
            s = sh_quote(&staging),
            rel = sh_quote(&format!("releases/{release}")),
            restart = RESTART_SERVICE
        ),
    )?;
    for l in switched.lines().filter_map(|l| l.strip_prefix("pruned=")) {
        notes.push(format!("removed the older release {l}"));
    }
    restart_note(&switched, &mut notes);
    let previous = field(&switched, "previous").filter(|p| is_release_link(p)).map(str::to_string).or(old.filter(|p| is_release_link(p)));

    // 5. The service, if asked for.
    let unit = match &opts.systemd {
        None => None,
        Some(sd) => Some(install_unit(ssh, &root, &uid, sd, &mut notes)?),
    };
    Ok(FlashReport { root, release: format!("releases/{release}"), previous, verified, bytes: sent, unit, notes })
}

/// Restarts the lapa-edge service if one is enabled (system, else user), so the switch takes
/// effect; prints `restarted=…`. Never fails the script.
const RESTART_SERVICE: &str = "if command -v systemctl >/dev/null 2>&1; then \
     if systemctl is-enabled --quiet lapa-edge.service 2>/dev/null; then systemctl try-restart lapa-edge.service && echo restarted=system || echo restarted=failed; \
     elif systemctl --user is-enabled --quiet lapa-edge.service 2>/dev/null; then systemctl --user try-restart lapa-edge.service && echo restarted=user || echo restarted=failed; fi; fi; true";

fn restart_note(out: &str, notes: &mut Vec<String>) {
    match field(out, "restarted") {
        Some("failed") => notes.push("the lapa-edge service is enabled but did not restart: see `journalctl -u lapa-edge` on the board".into()),
        Some(kind) => notes.push(format!("restarted the {kind} lapa-edge service on the new release")),
        None => {}
    }
}

/// A `current`/`previous` link as flash writes them: `releases/<millis>-<12 hex>`.
fn is_release_link(s: &str) -> bool {
    s.strip_prefix("releases/")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(t, h)| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The systemd unit that runs `current` (written on the board, enabled and started unless a
/// folder was given).
pub fn unit_text(root: &str, instruction: &str) -> String {
    // systemd's ExecStart quoting: double quotes with \ and " escaped; % (specifiers) and $
    // (variables) doubled. WorkingDirectory takes a plain absolute path, % doubled.
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$"));
    // The release's own run.sh adds its binary, bundle, board profile and trust.
    let exec = format!(
        "{} --socket {} --max-seconds 0 --quiet --instruction {}",
        q(&format!("{root}/current/run.sh")),
        q(&format!("{root}/control.sock")),
        q(instruction)
    );
    format!(
        "# Written by `lapa flash`: runs the flashed release ({root}/current) at boot.\n\
         # Change the instruction, pause or stop on the control socket ({root}/control.sock).\n\
         [Unit]\nDescription=lapa-edge: camera -> policy -> safety filter -> arm\nAfter=network.target\n\n\
         [Service]\nWorkingDirectory={wd}\nExecStart={exec}\nRestart=on-failure\nRestartSec=2\nKillMode=mixed\n\n\
         [Install]\nWantedBy=default.target\n",
        wd = root.replace('%', "%%")
    )
}

fn install_unit(ssh: &SshTarget, root: &str, uid: &str, sd: &SystemdOptions, notes: &mut Vec<String>) -> Result<String> {
    let text = unit_text(root, &sd.instruction);
    let (dir, manage) = match &sd.unit_dir {
        Some(d) => {
            check_dir(d)?;
            (d.clone(), None)
        }
        None if uid == "0" => ("/etc/systemd/system".to_string(), Some("systemctl")),
        None => {
            notes.push("a user unit runs while you are logged in; for it to start at boot, enable lingering once: sudo loginctl enable-linger $USER".into());
            (".config/systemd/user".to_string(), Some("systemctl --user"))
        }
    };
    let path = format!("{dir}/lapa-edge.service");
    let mut script = format!(
        "set -e; mkdir -p -- {d}; printf '%s' {text} > {tmp}; mv -f -- {tmp} {p}; printf 'unit=%s\\n' \"$(cd -- {d} && pwd -P)/lapa-edge.service\"",
        d = sh_quote(&dir),
        text = sh_quote(&text),
        tmp = sh_quote(&format!("{path}.tmp")),
        p = sh_quote(&path)
    );
    if let Some(ctl) = manage {
        script.push_str(&format!(
            "; if command -v systemctl >/dev/null; then {ctl} daemon-reload && {ctl} enable lapa-edge.service && {ctl} restart lapa-edge.service && echo started=yes || echo started=no; else echo started=nosystemd; fi"
        ));
    }
    let out = ssh.run("installing the systemd unit", &script)?;
    let unit = field(&out, "unit").unwrap_or(&path).to_string();
    match field(&out, "started") {
        Some("yes") => notes.push(format!("systemd unit {unit} enabled and (re)started")),
        Some("no") => {
            notes.push(format!("systemd unit {unit} written, but systemctl failed to enable or start it: see `journalctl -u lapa-edge` on the board"))
        }
        Some(_) => notes.push(format!("systemd unit {unit} written; the board has no systemctl, so it was not enabled")),
        None => notes.push(format!("systemd unit {unit} written (not enabled: a --unit-dir was given)")),
    }
    Ok(unit)
}

/// What `rollback` switched.
#[derive(Debug, Clone)]
pub struct RollbackReport {
    pub root: String,
    pub current: String,
    pub previous: String,
    pub verified: String,
    pub notes: Vec<String>,
}

/// Switches `current` back to `previous` (and `previous` to what was current, so a second
/// rollback undoes the first), after the previous release's own binary checks its bundle.
pub fn rollback(ssh: &SshTarget, dir: &str) -> Result<RollbackReport> {
    ssh.validate()?;
    check_dir(dir)?;
    let _lock = BoardLock::take(ssh, dir)?;
    let out = ssh.run(
        "rolling back",
        &format!(
            "cd -- {d} || exit 1; root=$(pwd -P); cur=$(readlink current) || {{ echo \"$root has no current release: nothing was flashed here\" >&2; exit 3; }}; \
             prev=$(readlink previous) || {{ echo \"$root has no previous release to roll back to\" >&2; exit 3; }}; \
             case \"$prev\" in releases/[0-9]*-[0-9a-f]*) ;; *) echo \"$root/previous points to $prev, which lapa flash did not write\" >&2; exit 3 ;; esac; \
             [ -x \"$prev/verify.sh\" ] || {{ echo \"$root/previous ($prev) is gone or incomplete\" >&2; exit 3; }}; \
             if [ \"$prev\" -ef \"$cur\" ]; then echo \"previous and current are the same release ($cur): nothing to roll back to\" >&2; exit 3; fi; \
             v=$(\"$prev/verify.sh\") || {{ echo \"the previous release no longer verifies; current is unchanged\" >&2; exit 4; }}; \
             ln -sfn -- \"$cur\" .previous.new; ln -sfn -- \"$prev\" .current.new; mv -fT -- .current.new current; mv -fT -- .previous.new previous; sync; \
             printf 'root=%s\\ncurrent=%s\\nprevious=%s\\n' \"$root\" \"$prev\" \"$cur\"; printf 'verified=%s\\n' \"$v\" | head -n 1; {restart}",
            d = sh_quote(dir),
            restart = RESTART_SERVICE
        ),
    )?;
    let get = |k: &str| field(&out, k).map(str::to_string).ok_or_else(|| anyhow!("the board's rollback did not report {k}: {out}"));
    let mut notes = Vec::new();
    restart_note(&out, &mut notes);
    Ok(RollbackReport { root: get("root")?, current: get("current")?, previous: get("previous")?, verified: get("verified")?, notes })
}

/// The board folder's state: current and previous releases (their release.json), keys.
pub fn status(ssh: &SshTarget, dir: &str) -> Result<String> {
    ssh.validate()?;
    check_dir(dir)?;
    ssh.run(
        "reading the board folder",
        &format!(
            "cd -- {d} 2>/dev/null || {{ echo \"{dir_shown}: no such folder on the board (nothing flashed yet)\" >&2; exit 3; }}; echo \"folder: $(pwd -P)\"; \
             for l in current previous; do t=$(readlink $l || true); if [ -n \"$t\" ]; then echo \"$l: $t\"; cat \"$t/release.json\" 2>/dev/null | sed 's/^/    /'; echo; else echo \"$l: (none)\"; fi; done; \
             echo keys:; for k in keys/*.pub; do [ -e \"$k\" ] && echo \"    $k\"; done; true",
            d = sh_quote(dir),
            dir_shown = dir.replace(['"', '\\', '$', '`'], "_")
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "it's", "a b", "$(touch /tmp/x)", "`x`", "'", "", "\\n"] {
            let out = Command::new("sh").arg("-c").arg(format!("printf '%s' {}", sh_quote(s))).output().expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn hostile_targets_are_refused() {
        let t = |host: &str, opts: &[&str]| {
            SshTarget { host: host.into(), options: opts.iter().map(|s| s.to_string()).collect(), ..SshTarget::default() }.validate()
        };
        assert!(t("pi@raspberrypi.local", &[]).is_ok());
        assert!(t("-oProxyCommand=touch /tmp/x", &[]).is_err());
        assert!(t("pi@", &[]).is_err());
        assert!(t("a b", &[]).is_err());
        assert!(t("pi@h", &["ProxyCommand=sh -c x"]).is_err());
        assert!(t("pi@h", &["proxycommand x"]).is_err());
        assert!(t("pi@h", &["LocalCommand=x"]).is_err());
        assert!(t("pi@h", &["UserKnownHostsFile=/tmp/kh"]).is_ok());
        assert!(check_dir("../etc").is_err());
        assert!(check_dir("lapa\nrm").is_err());
        assert!(check_dir("/home/pi/lapa").is_ok());
    }

    #[test]
    fn architectures_match_across_elf_triples_and_uname() {
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(elf_arch(&exe).expect("elf"), arch_word(std::env::consts::ARCH));
        assert_eq!(arch_word("aarch64-unknown-linux-gnu"), "aarch64");
        assert_eq!(arch_word("armv7l"), "arm");
        assert_eq!(arch_word("x86_64"), "x86_64");
        let tmp = tempfile::tempdir().expect("tmp");
        let f = tmp.path().join("script");
        std::fs::write(&f, "#!/bin/sh\necho a shell script, not a program\n").expect("write");
        assert!(elf_arch(&f).expect_err("not elf").to_string().contains("not an ELF"));
    }

    #[test]
    fn the_unit_quotes_paths_and_instructions() {
        let u = unit_text("/home/pi/my lapa%", "put the \"red\" cube at 100% for $5");
        assert!(u.contains("ExecStart=\"/home/pi/my lapa%%/current/run.sh\" --socket \"/home/pi/my lapa%%/control.sock\""), "{u}");
        assert!(u.contains("--instruction \"put the \\\"red\\\" cube at 100%% for $$5\""), "{u}");
        assert!(u.contains("\nWorkingDirectory=/home/pi/my lapa%%\n"), "{u}");
        assert!(u.contains("--max-seconds 0"), "{u}");
        assert!(check_instruction("").is_err() && check_instruction("a\nb").is_err() && check_instruction("pick it up").is_ok());
        assert!(is_release_link("releases/1733300000000-0123456789ab"));
        assert!(
            !is_release_link("/abs/releases/1-0123456789ab") && !is_release_link("releases/x-0123456789ab") && !is_release_link("releases/1-0123\nverified=ok")
        );
    }
}
