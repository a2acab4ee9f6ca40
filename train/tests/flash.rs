//! `lapa flash` end to end against a real OpenSSH server on loopback (its own host key and port,
//! key-only auth): flash, run the flashed binary there with --sim, tamper and see it refused,
//! roll back, a wrong-key bundle refused by the board, and a flash cut off midway (the network
//! stalls, the workstation's processes are killed) leaving the board on its working release.
//!
//! Needs Debian's openssh-server and openssh-client; scripts/test.sh installs them and sets
//! LAPA_REQUIRE_SSHD=1, so CI never skips. Elsewhere the test says it skipped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapa_model::bins::QuantileBins;
use lapa_model::policy::ActionSpec;
use lapa_model::signing::SecretKey;
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig, VlaConfig, export};

const SSHD: &str = "/usr/sbin/sshd";

fn sh(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn keygen(path: &Path) {
    let out = sh(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "lapa-test", "-f"]).arg(path));
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Sshd(Child);
impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test board: an sshd on loopback that lets in the current user with one key.
struct Board {
    _sshd: Sshd,
    port: u16,
    user: String,
    key: PathBuf,
    known_hosts: PathBuf,
    dir: PathBuf,
}

impl Board {
    fn start(tmp: &Path) -> Self {
        let etc = tmp.join("sshd");
        std::fs::create_dir_all(&etc).expect("mkdir");
        keygen(&etc.join("host_ed25519"));
        let key = tmp.join("client_ed25519");
        keygen(&key);
        std::fs::copy(key.with_extension("pub"), etc.join("authorized_keys")).expect("authorized_keys");
        let host_pub = std::fs::read_to_string(etc.join("host_ed25519.pub")).expect("host key");
        let known_hosts = tmp.join("known_hosts");
        // One alias for the board whichever port (direct or through the stalling proxy) is used.
        std::fs::write(&known_hosts, format!("lapa-test-board {}\n", host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" "))).expect("kh");
        let user = String::from_utf8(sh(Command::new("id").arg("-un")).stdout).expect("user").trim().to_string();
        let port = free_port();
        let cfg = etc.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nMaxStartups 50\n",
                hk = etc.join("host_ed25519").display(),
                ak = etc.join("authorized_keys").display(),
                pid = etc.join("sshd.pid").display(),
            ),
        )
        .expect("sshd_config");
        // sshd as root wants its privilege-separation folder.
        if sh(Command::new("id").arg("-u")).stdout.starts_with(b"0") {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let log = std::fs::File::create(etc.join("sshd.log")).expect("log");
        let child = Command::new(SSHD).arg("-D").arg("-e").arg("-f").arg(&cfg).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("sshd");
        let sshd = Sshd(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(15), "sshd did not listen: {}", std::fs::read_to_string(etc.join("sshd.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = tmp.join("board/lapa");
        Self { _sshd: sshd, port, user, key, known_hosts, dir }
    }

    fn ssh_args(&self, port: u16) -> Vec<String> {
        vec![
            "--host".into(),
            format!("{}@127.0.0.1", self.user),
            "--port".into(),
            port.to_string(),
            "-i".into(),
            self.key.display().to_string(),
            "--ssh-config".into(),
            "none".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "HostKeyAlias=lapa-test-board".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ]
    }

    /// Runs a command on the board through ssh.
    fn exec(&self, cmd: &str) -> Output {
        sh(Command::new("ssh")
            .args(["-F", "none", "-p", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "HostKeyAlias=lapa-test-board", "-o"])
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(cmd))
    }

    fn link(&self, name: &str) -> Option<PathBuf> {
        std::fs::read_link(self.dir.join(name)).ok()
    }

    fn staging(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".staging-"))).collect()
            })
            .unwrap_or_default()
    }

    /// `lapa-edge run --sim` with the board's current release, over ssh.
    fn run_current(&self) -> Output {
        let d = self.dir.display();
        self.exec(&format!("{d}/current/lapa-edge run --sim --bundle {d}/current/bundle --key-dir {d}/keys --max-seconds 1 --rate 30 --quiet"))
    }
}

/// A TCP relay to the board's sshd that stops forwarding the client's bytes after `limit` on
/// one connection (a link that goes dead mid-upload) until `release` is set.
struct StallingProxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl StallingProxy {
    fn start(target: u16, limit: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stalled = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (s, r) = (stalled.clone(), release.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
                let (mut c_read, mut s_write) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || {
                    let sent = AtomicU64::new(0);
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                            s.store(true, Ordering::SeqCst);
                            while !r.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            // The link is gone: both ends see it drop.
                            let _ = s_write.shutdown(std::net::Shutdown::Both);
                            let _ = c_read.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { port, stalled, release }
    }
}

fn tiny_bundle(tmp: &Path, name: &str, key: Option<&SecretKey>) -> PathBuf {
    let model_dir = tmp.join(format!("runs/{name}/model"));
    let names: Vec<String> = lapa_boards::SO101.names().iter().map(|s| s.to_string()).collect();
    let units = vec!["deg".to_string(); 5].into_iter().chain(["%".to_string()]).collect();
    let line: Vec<f32> = (0..200).map(|i| i as f32 - 100.0).collect();
    let edges = vec![QuantileBins::fit(&line, 16).expect("bins"); 6];
    let head = HeadConfig::Action(ActionHeadConfig { spec: ActionSpec { names, units, fps: 10.0, chunk: 3 }, target: ActionTarget::Absolute, bins: 16, edges });
    let cfg = VlaConfig::tiny(head);
    let device = lapa_model::device("cpu").expect("cpu");
    let model = cfg.init(&device).expect("init");
    lapa_model::save_vla(&model_dir, &cfg, &model).expect("save");
    let out = tmp.join(format!("bundles/{name}"));
    export::write_bundle(&model_dir, tmp, &out, name, key).expect("export");
    out
}

/// The lapa-edge binary to flash: the one `cargo test --workspace` built beside `lapa`, or
/// built now.
fn edge_binary() -> PathBuf {
    let beside = Path::new(env!("CARGO_BIN_EXE_lapa")).with_file_name("lapa-edge");
    if !beside.exists() {
        let out = sh(Command::new(env!("CARGO")).args(["build", "--locked", "-p", "lapa-edge", "--bin", "lapa-edge"]));
        assert!(out.status.success(), "building lapa-edge: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(beside.exists(), "no lapa-edge at {}", beside.display());
    beside
}

fn lapa(args: &[String]) -> Output {
    sh(Command::new(env!("CARGO_BIN_EXE_lapa")).args(args))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn flash_run_tamper_rollback_and_interrupt_against_a_real_sshd() {
    if !Path::new(SSHD).exists() || sh(Command::new("sh").args(["-c", "command -v ssh ssh-keygen"])).status.code() != Some(0) {
        assert!(
            std::env::var_os("LAPA_REQUIRE_SSHD").is_none(),
            "LAPA_REQUIRE_SSHD is set but {SSHD} or ssh is missing (Debian: openssh-server openssh-client)"
        );
        eprintln!("SKIPPED: {SSHD} or the ssh client is missing (Debian: apt install openssh-server openssh-client)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let board = Board::start(tmp.path());
    let edge = edge_binary();
    let key = SecretKey::from_seed([11; 32], "test workstation");
    let pub_key = key.write_pair(&tmp.path().join("keys/lapa")).expect("keys");
    let first = tiny_bundle(tmp.path(), "first", Some(&key));
    let second = tiny_bundle(tmp.path(), "second", Some(&key));
    let flash = |port: u16, bundle: &Path, extra: &[&str]| {
        let mut args: Vec<String> =
            vec!["flash".into(), "--board".into(), "x86_64_dev".into(), "--binary".into(), edge.display().to_string(), "--quiet".into()];
        args.extend(board.ssh_args(port));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(bundle.display().to_string());
        args
    };

    // A first flash: the key goes in, the board checks the bundle, `current` points at it,
    // and a unit file runs it.
    let units = tmp.path().join("board/units");
    let out = lapa(&flash(
        board.port,
        &first,
        &[
            "--install-key",
            pub_key.to_str().expect("utf-8"),
            "--systemd",
            "--unit-dir",
            units.to_str().expect("utf-8"),
            "--instruction",
            "point at the red cube",
        ],
    ));
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("installed key") && t.contains("board check: ok: bundle first") && t.contains("signed by key"), "{t}");
    let rel1 = board.link("current").expect("current link");
    assert!(rel1.starts_with("releases"), "{}", rel1.display());
    assert!(board.link("previous").is_none());
    assert!(board.dir.join(&rel1).join("release.json").is_file());
    let unit = std::fs::read_to_string(units.join("lapa-edge.service")).expect("unit");
    assert!(unit.contains(&format!("ExecStart=\"{}/current/run.sh\" --socket", board.dir.display())), "{unit}");
    assert!(unit.contains("--instruction \"point at the red cube\""), "{unit}");
    // The release's launcher names its own binary, bundle, profile and keys; it parses as sh.
    let run_sh = std::fs::read_to_string(board.dir.join(&rel1).join("run.sh")).expect("run.sh");
    assert!(run_sh.contains("run --board 'x86_64_dev' --bundle \"$here/bundle\" --key-dir") && !run_sh.contains("--allow-unsigned"), "{run_sh}");
    assert!(sh(Command::new("sh").arg("-n").arg(board.dir.join(&rel1).join("run.sh"))).status.success());

    // The flashed binary runs the flashed bundle there.
    let run = board.run_current();
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("policy: burn first"), "{}", text(&run));

    // A second flash keeps the first as `previous`; status shows both.
    let out = lapa(&flash(board.port, &second, &[]));
    assert!(out.status.success(), "{}", text(&out));
    let rel2 = board.link("current").expect("current");
    assert_ne!(rel1, rel2);
    assert_eq!(board.link("previous"), Some(rel1.clone()));
    let mut st = vec!["flash".to_string(), "--status".into()];
    st.extend(board.ssh_args(board.port));
    let out = lapa(&st);
    assert!(out.status.success() && text(&out).contains("\"bundle\": \"second\"") && text(&out).contains("\"bundle\": \"first\""), "{}", text(&out));

    // Tampered on the board: the runtime refuses it.
    let weights = std::fs::read_dir(board.dir.join(&rel2).join("bundle"))
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a part");
    let mut bytes = std::fs::read(&weights).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&weights, &bytes).expect("write");
    let run = board.run_current();
    assert!(!run.status.success() && text(&run).contains("does not match the manifest"), "{}", text(&run));

    // Rollback: back to the first release, which runs; rolling back again would go to the
    // tampered one, which fails its check, so nothing changes.
    let mut rb = vec!["flash".to_string(), "--rollback".into()];
    rb.extend(board.ssh_args(board.port));
    let out = lapa(&rb);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(board.link("current"), Some(rel1.clone()));
    assert_eq!(board.link("previous"), Some(rel2.clone()));
    assert!(board.run_current().status.success());
    let out = lapa(&rb);
    assert!(!out.status.success() && text(&out).contains("no longer verifies"), "{}", text(&out));
    assert_eq!(board.link("current"), Some(rel1.clone()));

    // A bundle signed by a key the board does not have: the board refuses it, nothing moves.
    let stranger = SecretKey::from_seed([12; 32], "someone else");
    let foreign = tiny_bundle(tmp.path(), "foreign", Some(&stranger));
    let out = lapa(&flash(board.port, &foreign, &[]));
    assert!(!out.status.success() && text(&out).contains("does not trust") && text(&out).contains("current is unchanged"), "{}", text(&out));
    assert_eq!(board.link("current"), Some(rel1.clone()));
    assert!(board.staging().is_empty(), "a refused flash cleans up");
    // An unsigned bundle is refused on the workstation, before the board is touched.
    let unsigned = tiny_bundle(tmp.path(), "unsigned", None);
    let out = lapa(&flash(board.port, &unsigned, &[]));
    assert!(!out.status.success() && text(&out).contains("--allow-unsigned"), "{}", text(&out));
    // Hostile arguments are refused before ssh runs.
    let pwned = tmp.path().join("pwned");
    for hostile in [format!("-oProxyCommand=touch {}", pwned.display()), format!("a;touch {}", pwned.display()), "pi@h%h".to_string()] {
        let mut bad = flash(board.port, &first, &[]);
        let h = bad.iter().position(|a| a == "--host").expect("host");
        bad[h] = format!("--host={hostile}");
        bad.remove(h + 1);
        let out = lapa(&bad);
        assert!(!out.status.success() && text(&out).contains("expected user@host"), "{hostile}: {}", text(&out));
    }
    assert!(!pwned.exists());

    // Interrupted midway: the link stalls after 4 MB of the upload, and the workstation's
    // flash (with its ssh) is killed. The board stays on its working release.
    let limit = (std::fs::metadata(&edge).expect("binary").len() / 2).min(4 << 20);
    let proxy = StallingProxy::start(board.port, limit);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lapa"))
        .args(flash(proxy.port, &second, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("flash");
    let t0 = Instant::now();
    while !proxy.stalled.load(Ordering::SeqCst) || board.staging().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "the upload never stalled");
        assert!(child.try_wait().expect("wait").is_none(), "the flash ended before the stall");
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it holds the board, a second flash is refused and changes nothing.
    let out = lapa(&flash(board.port, &first, &[]));
    assert!(!out.status.success() && text(&out).contains("another lapa flash is running"), "{}", text(&out));
    assert_eq!(board.staging().len(), 1, "the running flash's upload is left alone");
    let pgid = child.id();
    assert!(sh(Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")])).status.success());
    let _ = child.wait();
    proxy.release.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(board.link("current"), Some(rel1.clone()), "an interrupted flash never switches");
    assert_eq!(board.staging().len(), 1, "the half upload is in its staging folder");
    assert!(board.run_current().status.success(), "the board still runs its release");
    // The next flash clears the half upload away and lands.
    let out = lapa(&flash(board.port, &second, &[]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("left by an interrupted flash"), "{}", text(&out));
    assert!(board.staging().is_empty());
    assert_ne!(board.link("current"), Some(rel1.clone()));
    assert_eq!(board.link("previous"), Some(rel1));
    assert!(board.run_current().status.success());
    // Only current and previous are kept (the tampered release was pruned).
    let kept = std::fs::read_dir(board.dir.join("releases")).expect("releases").count();
    assert_eq!(kept, 2, "releases kept");
    assert!(!board.dir.join(&rel2).exists());
}
