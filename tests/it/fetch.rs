//! scripts/fetch_models.py: verified, idempotent, self-repairing downloads from PyPI.
//!
//! Uses the smallest pinned wheel (silero-vad, 11 MB) in a scratch models directory.

use std::path::Path;
use std::process::Command;

use crate::util::*;

fn fetch(models: &Path) -> std::process::Output {
    require_tool("python3");
    Command::new("python3")
        .arg(repo().join("scripts/fetch_models.py"))
        .arg("--models")
        .arg(models)
        .args(["--set", "test"])
        .output()
        .expect("python3 runs")
}

fn licence_pin() -> sotto::models::Pin {
    sotto::models::pins()
        .into_iter()
        .find(|p| p.dest == "silero-vad/LICENSE")
        .expect("silero LICENSE is pinned")
}

fn write_pins(models: &Path, pin: &sotto::models::Pin, sha256: &str) {
    std::fs::create_dir_all(models).unwrap();
    let line = format!(
        "test\t{}\t{}\t{}\t{}\t{}\t{sha256}\n",
        pin.package, pin.version, pin.member, pin.dest, pin.bytes
    );
    std::fs::write(models.join("pins.tsv"), line).unwrap();
}

fn no_partial_files(dir: &Path) {
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.ends_with(".partial"),
            "half file left behind: {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn fetch_verifies_skips_repairs_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let pin = licence_pin();
    write_pins(&models, &pin, &pin.sha256);
    let file = models.join(&pin.dest);

    let out = fetch(&models);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sotto::models::sha256_file(&file).unwrap(), pin.sha256);
    assert!(
        stdout(&out).contains("fetched  silero-vad/LICENSE"),
        "{}",
        stdout(&out)
    );
    no_partial_files(&models);

    // Re-running skips what verifies.
    let out = fetch(&models);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("ok       silero-vad/LICENSE"),
        "{}",
        stdout(&out)
    );

    // A corrupted file is detected and fetched again.
    std::fs::write(&file, "tampered").unwrap();
    let out = fetch(&models);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("mismatch silero-vad/LICENSE"),
        "{}",
        stdout(&out)
    );
    assert_eq!(sotto::models::sha256_file(&file).unwrap(), pin.sha256);

    // Bytes that do not match the pin are refused, and nothing is left under the real name.
    std::fs::remove_file(&file).unwrap();
    write_pins(&models, &pin, &"0".repeat(64));
    let out = fetch(&models);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match its sha256 pin"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists());
    no_partial_files(&models);
}
