//! Atomic file writes, the one implementation every lapa crate uses: write a hidden temporary
//! sibling, fsync it, rename it over the target, fsync the folder. A reader (or a crash) sees the
//! old file or the complete new one, never a torn one; nothing already written is lost.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O failure and the file or folder it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError { path: path.to_path_buf(), source }
}

/// The temporary sibling `atomic_write` uses for `path` (hidden, tagged with the process id).
fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically, creating missing parent folders.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let tmp = tmp_sibling(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(at(&tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(at(path)(e));
    }
    sync_dir(dir);
    Ok(())
}

/// Writes `bytes` to a new file at `path` and fsyncs it (no rename: for files inside a staging
/// folder that is itself renamed into place, as bundles are).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    (|| {
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    })()
    .map_err(at(path))
}

/// Makes the entries of `dir` (files created or renamed in it) durable. Not every platform can
/// open a folder, so best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() -> TestResult {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("sub/a.json");
        atomic_write(&p, b"first version, longer")?;
        atomic_write(&p, b"second")?;
        assert_eq!(std::fs::read(&p)?, b"second");
        let left = std::fs::read_dir(dir.path().join("sub"))?.count();
        assert_eq!(left, 1, "temporary file left behind");
        Ok(())
    }

    #[test]
    fn failure_names_the_path_and_keeps_the_old_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        // The target is a folder: the rename must fail, the folder must survive, no temp left.
        let p = dir.path().join("taken");
        std::fs::create_dir(&p)?;
        std::fs::write(p.join("keep"), b"x")?;
        let Err(e) = atomic_write(&p, b"new") else { return Err("writing over a folder succeeded".into()) };
        assert!(e.to_string().contains("taken"), "{e}");
        assert_eq!(std::fs::read(p.join("keep"))?, b"x");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1, "temporary file left behind");
        Ok(())
    }
}
