//! Every kind of broken dataset gives a clear error naming the file (and field), never a panic.

use arrow_array::RecordBatch;
use lapa_dataset::{Dataset, DatasetError, VideoCodec};
use lapa_sim::Embodiment;
use lapa_tests::record;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One pristine dataset, copied for each test to break in its own way.
fn pristine() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("arm");
        record(&root, Embodiment::Arm, 3, VideoCodec::default_av1());
        (dir, root)
    })
    .1
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

fn broken(f: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ds");
    copy_dir(pristine(), &root);
    f(&root);
    (dir, root)
}

/// Loads metadata and every episode with video; returns the first error.
fn load_all(root: &Path) -> Result<(), DatasetError> {
    let ds = Dataset::open(root)?;
    for k in 0..ds.episodes.len() {
        ds.episode(k, true)?;
    }
    Ok(())
}

fn expect_err(root: &Path, names: &str) -> DatasetError {
    let err = load_all(root).expect_err("broken dataset must not load");
    let msg = err.to_string();
    assert!(msg.contains(names), "error {msg:?} should name {names:?}");
    err
}

const VIDEO: &str = "videos/observation.images.front/chunk-000/file-000.mp4";
const DATA: &str = "data/chunk-000/file-000.parquet";

#[test]
fn pristine_dataset_loads() {
    load_all(pristine()).expect("pristine dataset loads");
}

#[test]
fn missing_meta_files() {
    for rel in ["meta/info.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet", DATA] {
        let (_d, root) = broken(|r| std::fs::remove_file(r.join(rel)).expect("rm"));
        let err = expect_err(&root, rel.rsplit('/').next().unwrap_or(rel));
        assert!(matches!(err, DatasetError::MissingFile { .. }), "{rel}: {err:?}");
    }
}

#[test]
fn invalid_info_json() {
    let (_d, root) = broken(|r| std::fs::write(r.join("meta/info.json"), b"{\"codebase_version\": \"v3.0\", ").expect("write"));
    assert!(matches!(expect_err(&root, "info.json"), DatasetError::Json { .. }));
    let (_d, root) = broken(|r| {
        edit_info(r, |v| {
            v.as_object_mut().map(|o| o.remove("fps"));
        })
    });
    let err = expect_err(&root, "info.json");
    assert!(err.to_string().contains("fps"), "{err}");
}

fn edit_info(root: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = root.join("meta/info.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).expect("ser")).expect("write");
}

#[test]
fn wrong_codebase_version() {
    let (_d, root) = broken(|r| edit_info(r, |v| v["codebase_version"] = "v1.6".into()));
    let err = expect_err(&root, "info.json");
    assert!(matches!(err, DatasetError::UnsupportedVersion { ref found, .. } if found == "v1.6"), "{err:?}");
}

fn drop_column(path: &Path, column: &str) {
    let file = std::fs::File::open(path).expect("open");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    let schema = batches[0].schema();
    let keep: Vec<usize> = (0..schema.fields().len()).filter(|&i| schema.field(i).name() != column).collect();
    let projected: Vec<RecordBatch> = batches.iter().map(|b| b.project(&keep).expect("project")).collect();
    let out = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(out, projected[0].schema(), None).expect("writer");
    for b in &projected {
        w.write(b).expect("write");
    }
    w.close().expect("close");
}

#[test]
fn missing_columns() {
    for (rel, column) in [
        (DATA, "action"),
        (DATA, "timestamp"),
        ("meta/episodes/chunk-000/file-000.parquet", "videos/observation.images.front/from_timestamp"),
        ("meta/tasks.parquet", "task_index"),
    ] {
        let (_d, root) = broken(|r| drop_column(&r.join(rel), column));
        let err = expect_err(&root, rel.rsplit('/').next().unwrap_or(rel));
        assert!(matches!(err, DatasetError::MissingColumn { column: ref c, .. } if c == column), "{rel}/{column}: {err:?}");
    }
}

#[test]
fn truncated_mp4() {
    let (_d, root) = broken(|r| {
        let p = r.join(VIDEO);
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    });
    let err = expect_err(&root, "file-000.mp4");
    assert!(matches!(err, DatasetError::Video { .. } | DatasetError::FrameCountMismatch { .. }), "{err:?}");
}

#[test]
fn corrupt_mp4() {
    let (_d, root) = broken(|r| std::fs::write(r.join(VIDEO), vec![0x5Au8; 4096]).expect("write"));
    let err = expect_err(&root, "file-000.mp4");
    assert!(matches!(err, DatasetError::Video { .. }), "{err:?}");
}

#[test]
fn frame_count_mismatch() {
    // Replace the video by a valid but shorter one: the last episode runs out of frames.
    let (_d, root) = broken(|r| {
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(r.join(VIDEO))
            .status()
            .expect("ffmpeg");
        assert!(status.success());
    });
    let err = expect_err(&root, "file-000.mp4");
    assert!(matches!(err, DatasetError::FrameCountMismatch { .. }), "{err:?}");
}

#[test]
fn wrong_image_size() {
    let (_d, root) = broken(|r| edit_info(r, |v| v["features"]["observation.images.front"]["shape"] = serde_json::json!([48, 48, 3])));
    let err = expect_err(&root, "file-000.mp4");
    assert!(err.to_string().contains("64×64") && err.to_string().contains("48×48"), "{err}");
}

#[test]
fn missing_episode_is_an_error() {
    let ds = Dataset::open(pristine()).expect("open");
    let err = ds.episode(99, false).expect_err("no such episode");
    assert!(matches!(err, DatasetError::NoSuchEpisode { episode: 99, total: 3 }));
}
