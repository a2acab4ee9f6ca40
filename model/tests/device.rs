//! `--device` lists come from the command line: every malformed entry is an error naming it,
//! never a panic, and a well-formed list gives one device per entry.

use lapa_model::{available_devices, devices};

#[test]
fn device_lists_are_parsed_entry_by_entry() {
    assert_eq!(devices("cpu").expect("cpu").len(), 1);
    assert_eq!(devices("cpu, cpu").expect("two replicas").len(), 2);
    assert!(available_devices().contains(&"cpu"));
}

#[test]
fn hostile_device_lists_are_named_errors() {
    let long = vec!["cpu"; 65].join(",");
    let cases: [(&str, &str); 10] = [
        ("", "empty entry"),
        (",", "empty entry"),
        ("cpu,,cpu", "empty entry"),
        ("cpu,", "empty entry"),
        (&long, "at most 64"),
        ("tpu", "unknown device"),
        ("CPU", "unknown device"),
        ("cuda:x", "cuda:N"),
        ("cuda:-1", "cuda:N"),
        ("cuda:99999999999999999999999", "cuda:N"),
    ];
    for (list, want) in cases {
        let err = devices(list).err().unwrap_or_else(|| panic!("{list:?} was accepted"));
        let msg = err.to_string();
        assert!(msg.contains(want), "{list:?}: {msg}");
        assert!(msg.starts_with("device "), "{list:?}: the message names the entry: {msg}");
    }
    // A GPU name in a CPU-only build says which feature to rebuild with.
    if !available_devices().contains(&"wgpu") {
        let Err(e) = devices("cpu,wgpu") else { panic!("wgpu accepted in a build without it") };
        let msg = e.to_string();
        assert!(msg.contains("--features wgpu") && msg.contains("\"wgpu\""), "{msg}");
    }
    if !available_devices().contains(&"cuda") {
        let Err(e) = devices("cuda:1") else { panic!("cuda accepted in a build without it") };
        let msg = e.to_string();
        assert!(msg.contains("--features cuda"), "{msg}");
    }
}
