//! Cameras: V4L2 format negotiation on an enumeration modelled on a Logitech C920's
//! `v4l2-ctl --list-formats-ext` listing (abridged), MJPEG and YUYV frames decoded and checked
//! against ffmpeg's own conversion of the same bytes, crop/resize, and the recorded-frame source.
//! The frames are ffmpeg's `testsrc2` pattern encoded the way a UVC camera sends them (4:2:2
//! baseline JPEG with the Huffman tables left out; packed YUYV), and one 4:4:4 JPEG.

use lapa_edge::camera::{Camera, CameraError, CameraSpec, FileCamera, decode_mjpeg, yuyv_to_rgb, yuyv_to_rgb_strided};
use lapa_edge::v4l2::{Offer, PixelFormat, Want, negotiate};
use std::path::Path;
use std::process::Command;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn c920() -> Vec<Offer> {
    serde_json::from_str(&std::fs::read_to_string(data("c920_formats.json")).expect("fixture")).expect("json")
}

/// ffmpeg's RGB of a frame file (`-f rawvideo -pix_fmt yuyv422` for raw input).
fn ffmpeg_rgb(input: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg").args(["-v", "error"]).args(input).args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]).output().expect("ffmpeg runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Mean and 99th percentile of the absolute channel differences.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let mut d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64;
    d.sort_unstable();
    (mean, d[d.len() * 99 / 100])
}

#[test]
fn negotiation_takes_the_request_when_offered() {
    let c = negotiate(&c920(), &Want { format: PixelFormat::Mjpeg, width: 640, height: 480, fps: 30 }).expect("choice");
    assert_eq!((c.format, c.width, c.height, c.fps), (PixelFormat::Mjpeg, 640, 480, 30));
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn negotiation_switches_to_mjpeg_when_yuyv_cannot_keep_the_rate() {
    let c = negotiate(&c920(), &Want { format: PixelFormat::Yuyv, width: 1280, height: 720, fps: 30 }).expect("choice");
    assert_eq!((c.format, c.width, c.height, c.fps), (PixelFormat::Mjpeg, 1280, 720, 30));
    assert!(c.notes[0].contains("MJPEG instead of YUYV") && c.notes[0].contains("only 10 fps"), "{:?}", c.notes);
    // Where YUYV keeps the rate, it stays.
    let c = negotiate(&c920(), &Want { format: PixelFormat::Yuyv, width: 640, height: 480, fps: 30 }).expect("choice");
    assert_eq!(c.format, PixelFormat::Yuyv);
}

#[test]
fn negotiation_covers_an_unoffered_size_and_rate() {
    // 224×224: the smallest size that covers it is 320×240; 25 fps is not offered, 24 is.
    let c = negotiate(&c920(), &Want { format: PixelFormat::Mjpeg, width: 224, height: 224, fps: 25 }).expect("choice");
    assert_eq!((c.width, c.height, c.fps), (320, 240, 24));
    assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    // Larger than anything: the largest.
    let c = negotiate(&c920(), &Want { format: PixelFormat::Mjpeg, width: 4000, height: 3000, fps: 30 }).expect("choice");
    assert_eq!((c.width, c.height), (1920, 1080));
    // A device that lists no rates: the request's.
    let bare = vec![Offer { fourcc: "YUYV".into(), width: 640, height: 480, fps: vec![] }];
    let c = negotiate(&bare, &Want { format: PixelFormat::Mjpeg, width: 640, height: 480, fps: 30 }).expect("choice");
    assert_eq!((c.format, c.fps), (PixelFormat::Yuyv, 30));
    assert!(c.notes[0].contains("no MJPEG offered"), "{:?}", c.notes);
}

#[test]
fn a_camera_with_neither_format_is_refused_by_name() {
    let h264 = vec![
        Offer { fourcc: "H264".into(), width: 1920, height: 1080, fps: vec![30] },
        Offer { fourcc: "GREY".into(), width: 640, height: 480, fps: vec![30] },
    ];
    let e = negotiate(&h264, &Want { format: PixelFormat::Mjpeg, width: 640, height: 480, fps: 30 }).expect_err("nothing usable");
    assert!(e.contains("H264, GREY"), "{e}");
    assert!(negotiate(&[], &Want { format: PixelFormat::Mjpeg, width: 640, height: 480, fps: 30 }).expect_err("empty").contains("nothing"));
}

#[test]
fn mjpeg_frames_decode_like_ffmpeg_with_and_without_huffman_tables() {
    let reference = ffmpeg_rgb(&["-i", data("cam_160x120.jpg").to_str().expect("utf-8")]);
    for name in ["cam_160x120.jpg", "cam_160x120_nodht.jpg"] {
        let bytes = std::fs::read(data(name)).expect("frame");
        let (w, h, rgb) = decode_mjpeg(&bytes).expect(name);
        assert_eq!((w, h), (160, 120));
        let (mean, max) = diff(&rgb, &reference);
        // 4:2:2 chroma is upsampled differently by the two decoders: on this pattern's sharp
        // colour edges 1% of values differ by up to ~60 (a 4:4:4 frame below agrees exactly).
        assert!(mean < 4.0 && max < 72, "{name}: mean {mean:.2}, p99 {max} against ffmpeg");
    }
    let p444 = data("cam_160x120_444.jpg");
    let (_, _, rgb) = decode_mjpeg(&std::fs::read(&p444).expect("frame")).expect("4:4:4 decodes");
    let (mean, p99) = diff(&rgb, &ffmpeg_rgb(&["-i", p444.to_str().expect("utf-8")]));
    assert!(mean < 0.2 && p99 <= 1, "4:4:4: mean {mean:.2}, p99 {p99} against ffmpeg");
    // Truncated and garbage frames are errors, not panics.
    let bytes = std::fs::read(data("cam_160x120.jpg")).expect("frame");
    for bad in [&bytes[..40], &b"not a jpeg at all"[..], &[][..]] {
        assert!(matches!(decode_mjpeg(bad), Err(CameraError::Frame(_))));
    }
}

#[test]
fn yuyv_frames_convert_like_ffmpeg() {
    let raw = std::fs::read(data("cam_160x120.yuyv")).expect("frame");
    let ours = yuyv_to_rgb(160, 120, &raw).expect("converts");
    let p = data("cam_160x120.yuyv");
    let reference = ffmpeg_rgb(&["-f", "rawvideo", "-pix_fmt", "yuyv422", "-s", "160x120", "-i", p.to_str().expect("utf-8")]);
    let (mean, max) = diff(&ours, &reference);
    assert!(mean < 1.5 && max <= 3, "mean {mean:.2}, p99 {max} against ffmpeg");
    // Rows padded to 336 bytes (a driver's bytesperline) convert to the same pixels.
    let padded: Vec<u8> = raw.chunks_exact(320).flat_map(|row| row.iter().copied().chain([0x55u8; 16])).collect();
    assert_eq!(yuyv_to_rgb_strided(160, 120, 336, &padded).expect("strided"), ours);
    assert!(yuyv_to_rgb_strided(160, 120, 300, &raw).is_err(), "a stride shorter than a row");
    assert!(yuyv_to_rgb_strided(160, 120, 336, &raw).is_err(), "too few bytes for the stride");
    assert!(yuyv_to_rgb_strided(160, usize::MAX, usize::MAX, &raw).is_err(), "sizes that overflow");
    assert!(yuyv_to_rgb(160, 120, &raw[..100]).is_err(), "short frame");
    assert!(yuyv_to_rgb(161, 120, &raw).is_err(), "odd width");
}

#[test]
fn crop_and_resize_to_the_model_input() {
    // A 4×2 frame, left half black, right half white; centre crop to square takes the middle 2×2.
    let mut rgb = vec![0u8; 4 * 2 * 3];
    for y in 0..2 {
        for x in 2..4 {
            for c in 0..3 {
                rgb[(y * 4 + x) * 3 + c] = 255;
            }
        }
    }
    let spec = CameraSpec { width: 2, height: 2, crop: None };
    assert_eq!(spec.crop_box(4, 2), (1, 0, 2, 2));
    let out = spec.apply(4, 2, &rgb).expect("applies");
    assert_eq!(out, vec![0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]);
    // Down to 1×1: the mean of the box.
    let out = CameraSpec { width: 1, height: 1, crop: None }.apply(4, 2, &rgb).expect("applies");
    assert_eq!(out.len(), 3);
    assert!(out[0].abs_diff(128) <= 1, "{out:?}");
    // An explicit crop of the right half.
    let right = CameraSpec { width: 1, height: 1, crop: Some([0.5, 0.0, 0.5, 1.0]) };
    assert_eq!(right.apply(4, 2, &rgb).expect("applies"), vec![255, 255, 255]);
    // A 160×120 camera frame to 64×64 (a centre crop of 120×120): averaging keeps the crop's
    // mean colour.
    let (w, h, big) = decode_mjpeg(&std::fs::read(data("cam_160x120.jpg")).expect("frame")).expect("decodes");
    let small = CameraSpec { width: 64, height: 64, crop: None }.apply(w, h, &big).expect("applies");
    let mean = |px: &mut dyn Iterator<Item = u8>| {
        let v: Vec<f64> = px.map(f64::from).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let crop_mean = mean(&mut (0..120).flat_map(|y| big[(y * 160 + 20) * 3..(y * 160 + 140) * 3].to_vec()));
    let small_mean = mean(&mut small.iter().copied());
    assert!((crop_mean - small_mean).abs() < 2.0, "{crop_mean} vs {small_mean}");
    // Near 1:1 (65 → 64 columns) a box filter barely blurs: a vertical edge stays sharp.
    let (w65, h65) = (65usize, 4usize);
    let edge: Vec<u8> = (0..h65).flat_map(|_| (0..w65).flat_map(|x| if x < 32 { [0u8; 3] } else { [255u8; 3] })).collect();
    let out = CameraSpec { width: 64, height: 4, crop: Some([0.0, 0.0, 1.0, 1.0]) }.apply(w65, h65, &edge).expect("applies");
    let row: Vec<u8> = (0..64).map(|x| out[x * 3]).collect();
    assert!(row[..31].iter().all(|&v| v == 0) && row[33..].iter().all(|&v| v == 255), "{row:?}");
    // Down on one axis, up on the other (8×2 → 4×4): means per column pair, rows repeated.
    let stripes: Vec<u8> = (0..2).flat_map(|_| (0..8).flat_map(|x| [(x * 30) as u8; 3])).collect();
    let out = CameraSpec { width: 4, height: 4, crop: Some([0.0, 0.0, 1.0, 1.0]) }.apply(8, 2, &stripes).expect("applies");
    assert_eq!((0..4).map(|x| out[x * 3]).collect::<Vec<_>>(), vec![15, 75, 135, 195]);
    assert_eq!(out[..12], out[36..48], "rows of a vertical upscale of a uniform column match");
    // Bad specs and frames.
    assert!(CameraSpec { width: 64, height: 64, crop: Some([0.6, 0.0, 0.6, 1.0]) }.validate().is_err());
    assert!(CameraSpec { width: 0, height: 64, crop: None }.validate().is_err());
    assert!(CameraSpec { width: 64, height: 64, crop: Some([f32::NAN, 0.0, 0.5, 0.5]) }.validate().is_err());
    assert!(spec.apply(4, 2, &rgb[..5]).is_err());
}

#[test]
fn the_file_camera_plays_a_folder_and_a_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("dir");
    std::fs::copy(data("cam_160x120.jpg"), frames.join("000.jpg")).expect("copy");
    let (w, h, rgb) = decode_mjpeg(&std::fs::read(data("cam_160x120.jpg")).expect("frame")).expect("decodes");
    lapa_dataset::png_io::write_png(&frames.join("001.png"), w, h, &rgb).expect("png");
    std::fs::write(frames.join("notes.txt"), "ignored").expect("txt");
    let mut cam = FileCamera::open(&frames, false).expect("opens");
    assert_eq!(cam.len(), 2);
    let a = cam.capture().expect("first");
    let b = cam.capture().expect("second");
    assert_eq!((a.seq, b.seq, a.width, b.height), (1, 2, 160, 120));
    assert_eq!(a.rgb, b.rgb, "the PNG holds the JPEG's decoded pixels");
    assert!(matches!(cam.capture(), Err(CameraError::Closed)));
    let mut looped = FileCamera::open(&frames, true).expect("opens");
    for _ in 0..5 {
        looped.capture().expect("loops");
    }
    // A video file, decoded with ffmpeg.
    let video = dir.path().join("clip.mp4");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10", "-frames:v", "7", "-pix_fmt", "yuv420p"])
        .arg(&video)
        .status()
        .expect("ffmpeg");
    assert!(ok.success());
    let mut cam = FileCamera::open(&video, false).expect("video opens");
    assert_eq!(cam.len(), 7);
    assert_eq!(cam.capture().expect("frame").width, 96);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("dir");
    let e = FileCamera::open(&empty, false).expect_err("no frames").to_string();
    assert!(e.contains("no .png, .jpg"), "{e}");
    std::fs::write(frames.join("002.jpg"), b"broken").expect("write");
    let e = FileCamera::open(&frames, false).expect_err("broken frame").to_string();
    assert!(e.contains("002.jpg"), "{e}");
}

#[test]
fn a_stepwise_device_is_negotiated_on_its_steps() {
    use lapa_edge::v4l2::{Range, interval_fps, stepwise_rates, stepwise_sizes};
    // A UVC-style stepwise range: 160..1280 wide in steps of 16, 120..960 high in steps of 8.
    let (w, h) = (Range { min: 160, max: 1280, step: 16 }, Range { min: 120, max: 960, step: 8 });
    // 250×250 fits up onto the steps: 256 (160 + 6·16) × 256 (120 + 17·8).
    assert_eq!(stepwise_sizes(w, h, (250, 250)), vec![(160, 120), (256, 256), (1280, 960)]);
    // Outside the range: clamped to it (and not listed twice).
    assert_eq!(stepwise_sizes(w, h, (4000, 4000)), vec![(160, 120), (1280, 960)]);
    assert_eq!(stepwise_sizes(w, h, (10, 10)), vec![(160, 120), (1280, 960)]);
    // Continuous (step 1 or 0): the request itself.
    let c = Range { min: 64, max: 2048, step: 1 };
    assert_eq!(stepwise_sizes(c, c, (300, 200))[1], (300, 200));
    assert_eq!(stepwise_sizes(Range { step: 0, ..c }, c, (300, 200))[1], (300, 200));
    // A last step that would pass the maximum stops at it; a reversed range does not panic.
    assert_eq!(stepwise_sizes(Range { min: 100, max: 250, step: 100 }, Range { min: 100, max: 250, step: 100 }, (240, 240))[1], (250, 250));
    assert_eq!(
        stepwise_sizes(Range { min: 500, max: 100, step: 7 }, Range { min: u32::MAX - 1, max: u32::MAX, step: u32::MAX }, (0, u32::MAX))[0],
        (500, u32::MAX - 1)
    );

    // Intervals: 1/30 s .. 1/5 s. A rate between is taken as asked, outside it the range's ends.
    assert_eq!(stepwise_rates((1, 30), (1, 5), 24), vec![5, 24, 30]);
    assert_eq!(stepwise_rates((1, 30), (1, 5), 60), vec![5, 30]);
    assert_eq!(stepwise_rates((1, 30), (0, 5), 24), Vec::<u32>::new(), "a zero interval is not trusted");
    assert_eq!((interval_fps((333_333, 10_000_000)), interval_fps((0, 1)), interval_fps((1, 100_000))), (Some(30), None, None));

    // Through negotiation: the stepwise sizes become offers like listed ones.
    let offers: Vec<Offer> = stepwise_sizes(w, h, (250, 250))
        .into_iter()
        .map(|(width, height)| Offer { fourcc: "MJPG".into(), width, height, fps: stepwise_rates((1, 30), (1, 5), 25) })
        .collect();
    let c = negotiate(&offers, &Want { format: PixelFormat::Mjpeg, width: 250, height: 250, fps: 25 }).expect("choice");
    assert_eq!((c.width, c.height, c.fps), (256, 256, 25), "{:?}", c.notes);
}
