//! `sotto service`: the systemd user unit it writes is one systemd accepts, the launchd plist
//! parses as a property list, and uninstall removes what install wrote.

use std::path::Path;
use std::process::Command;

use crate::util::*;

fn systemd_verify(unit: &Path) -> Option<std::process::Output> {
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
    {
        Ok(out) => Some(out),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "systemd-analyze is missing in CI: scripts/setup installs systemd"
            );
            eprintln!("skipped: no systemd-analyze here (the unit is only checked by text)");
            None
        }
    }
}

#[test]
fn install_writes_a_unit_systemd_accepts_and_uninstall_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let service = |args: &[&str]| {
        run(sotto_in(dir.path())
            .env("XDG_CONFIG_HOME", &xdg)
            .arg("service")
            .args(args))
    };
    let out = service(&[
        "install",
        "dictate",
        "--no-start",
        "--",
        "--ptt-key",
        "F9",
        "--output",
        "/tmp/my 100% notes.txt",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = xdg.join("systemd/user/sotto-dictate.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let exe = env!("CARGO_BIN_EXE_sotto");
    assert!(
        text.contains(&format!(
            "ExecStart=\"{exe}\" dictate \"--ptt-key\" \"F9\" \"--output\" \"/tmp/my 100%% notes.txt\""
        )),
        "{text}"
    );
    if let Some(v) = systemd_verify(&unit) {
        assert!(
            v.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        // The check can fail: a unit with a relative program is refused.
        let bad = dir.path().join("bad.service");
        std::fs::write(&bad, text.replace(&format!("\"{exe}\""), "sotto")).unwrap();
        let v = systemd_verify(&bad).unwrap();
        assert!(!v.status.success(), "a relative ExecStart is refused");
    }
    let status = service(&["status", "dictate"]);
    assert!(
        stdout(&status).contains(&unit.display().to_string()),
        "{}",
        stdout(&status)
    );
    let out = service(&["uninstall", "dictate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!unit.exists());
    let status = service(&["status", "dictate"]);
    assert!(
        stdout(&status).contains("not installed"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn the_launchd_agent_is_a_property_list_that_runs_the_job_at_login() {
    let text = sotto::service::launchd_plist(
        Path::new("/Applications/sotto & co/sotto"),
        sotto::service::Job::Agent,
        &["--barge-in".into(), "<weird>".into()],
        Path::new("/Users/a/Library/Logs/sotto/agent.log"),
    );
    let v: plist::Value = plist::from_bytes(text.as_bytes()).expect("a valid plist");
    let d = v.as_dictionary().unwrap();
    assert_eq!(d["Label"].as_string(), Some("org.sotto.agent"));
    let args: Vec<&str> = d["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_string().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "/Applications/sotto & co/sotto",
            "agent",
            "--barge-in",
            "<weird>"
        ]
    );
    assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
    assert_eq!(
        d["StandardErrorPath"].as_string(),
        Some("/Users/a/Library/Logs/sotto/agent.log")
    );
}
