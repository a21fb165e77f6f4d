//! `sotto service install|uninstall|status [dictate|agent] [ARGS…]`: sotto as a service that is
//! simply there after login.
//!
//! - Linux: a systemd user unit, `$XDG_CONFIG_HOME/systemd/user/sotto-JOB.service`
//!   (`~/.config/…`), enabled and started with `systemctl --user`; its output goes to the
//!   journal (`journalctl --user -u sotto-JOB`).
//! - macOS: a launchd agent, `~/Library/LaunchAgents/org.sotto.JOB.plist`, loaded with
//!   `launchctl bootstrap gui/UID`; output to `~/Library/Logs/sotto/JOB.log`. (Written here;
//!   not run here: this code was built and tested on Linux, where the plist is only parsed.)
//!
//! The unit and the plist are made by pure functions ([`systemd_unit`], [`launchd_plist`]),
//! tested on every platform.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Job {
    Dictate,
    Agent,
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Dictate => "dictate",
            Job::Agent => "agent",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no home or config directory to put the service in (set HOME)")]
    NoHome,
    #[error("cannot find this program's own path")]
    NoExe(#[source] std::io::Error),
}

/// One argument as systemd's ExecStart reads it: double-quoted, with `\`, `"` escaped and the
/// specifier `%` and variable `$` signs doubled.
fn systemd_quote(arg: &str) -> String {
    let mut q = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '%' => q.push_str("%%"),
            '$' => q.push_str("$$"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The systemd user unit running `exe JOB ARGS…`.
pub fn systemd_unit(exe: &Path, job: Job, args: &[String]) -> String {
    let mut exec = vec![systemd_quote(&exe.display().to_string()), job.name().into()];
    exec.extend(args.iter().map(|a| systemd_quote(a)));
    format!(
        "# Written by `sotto service install {job}`; `sotto service uninstall {job}` removes it.\n\
         [Unit]\n\
         Description=sotto {job}: local voice with open models\n\
         After=sound.target pipewire-pulse.service pulseaudio.service\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=3\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        job = job.name(),
        exec = exec.join(" "),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The launchd agent running `exe JOB ARGS…` at login, kept alive, logging to `log`.
pub fn launchd_plist(exe: &Path, job: Job, args: &[String], log: &Path) -> String {
    let mut program = vec![exe.display().to_string(), job.name().to_string()];
    program.extend(args.iter().cloned());
    let items: String = program
        .iter()
        .map(|a| format!("        <string>{}</string>\n", xml_escape(a)))
        .collect();
    let log = xml_escape(&log.display().to_string());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{label}</string>
    <key>ProgramArguments</key>
    <array>
{items}    </array>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ProcessType</key>
    <string>Interactive</string>
    <key>StandardOutPath</key>
    <string>{log}</string>
    <key>StandardErrorPath</key>
    <string>{log}</string>
</dict>
</plist>
"#,
        label = label(job),
    )
}

pub fn label(job: Job) -> String {
    format!("org.sotto.{}", job.name())
}

/// Where the service file goes on this platform, and where its log is.
pub fn paths(job: Job) -> Result<(PathBuf, Option<PathBuf>), ServiceError> {
    if cfg!(target_os = "macos") {
        let home = dirs::home_dir().ok_or(ServiceError::NoHome)?;
        Ok((
            home.join("Library/LaunchAgents")
                .join(format!("{}.plist", label(job))),
            Some(
                home.join("Library/Logs/sotto")
                    .join(format!("{}.log", job.name())),
            ),
        ))
    } else {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| dirs::home_dir().map(|h| h.join(".config")))
            .ok_or(ServiceError::NoHome)?;
        Ok((
            config
                .join("systemd/user")
                .join(format!("sotto-{}.service", job.name())),
            None,
        ))
    }
}

/// What running a service manager command said.
fn manager(program: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

/// Writes the service file; with `start`, enables and starts it. Returns the file written and
/// what the service manager said (a failure to start is reported, not an error: the file is
/// in place and the message says how to start it).
pub fn install(job: Job, args: &[String], start: bool) -> Result<(PathBuf, String), ServiceError> {
    let exe = std::env::current_exe().map_err(ServiceError::NoExe)?;
    let (path, log) = paths(job)?;
    let text = match &log {
        Some(log) => launchd_plist(&exe, job, args, log),
        None => systemd_unit(&exe, job, args),
    };
    let write = |p: &Path, source| ServiceError::Write {
        path: p.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write(dir, e))?;
    }
    if let Some(dir) = log.as_deref().and_then(Path::parent) {
        std::fs::create_dir_all(dir).map_err(|e| write(dir, e))?;
    }
    std::fs::write(&path, text).map_err(|e| write(&path, e))?;
    if !start {
        return Ok((path, "written, not started (--no-start)".into()));
    }
    let said = if cfg!(target_os = "macos") {
        let domain = format!("gui/{}", unsafe { libc::getuid() });
        let p = path.display().to_string();
        let _ = manager("launchctl", &["bootout", &domain, &p]);
        manager("launchctl", &["bootstrap", &domain, &p]).map(|_| "loaded with launchctl".into())
    } else {
        let unit = format!("sotto-{}.service", job.name());
        manager("systemctl", &["--user", "daemon-reload"])
            .and_then(|_| manager("systemctl", &["--user", "enable", "--now", &unit]))
            .map(|_| format!("enabled and started; logs: journalctl --user -u {unit}"))
    };
    Ok((
        path,
        said.unwrap_or_else(|e| format!("written; not started: {e}")),
    ))
}

/// Stops and removes the service; true if there was one.
pub fn uninstall(job: Job) -> Result<bool, ServiceError> {
    let (path, _) = paths(job)?;
    if !path.exists() {
        return Ok(false);
    }
    if cfg!(target_os = "macos") {
        let domain = format!("gui/{}", unsafe { libc::getuid() });
        let _ = manager(
            "launchctl",
            &["bootout", &domain, &path.display().to_string()],
        );
    } else {
        let unit = format!("sotto-{}.service", job.name());
        let _ = manager("systemctl", &["--user", "disable", "--now", &unit]);
    }
    std::fs::remove_file(&path).map_err(|source| ServiceError::Remove {
        path: path.clone(),
        source,
    })?;
    if !cfg!(target_os = "macos") {
        let _ = manager("systemctl", &["--user", "daemon-reload"]);
    }
    Ok(true)
}

/// Whether it is installed and runs, and the last lines of its log.
pub fn status(job: Job) -> Result<String, ServiceError> {
    let (path, log) = paths(job)?;
    if !path.exists() {
        return Ok(format!(
            "sotto {} is not installed as a service ({} does not exist)",
            job.name(),
            path.display()
        ));
    }
    let mut out = format!("installed: {}\n", path.display());
    if cfg!(target_os = "macos") {
        let domain = format!("gui/{}/{}", unsafe { libc::getuid() }, label(job));
        match manager("launchctl", &["print", &domain]) {
            Ok(s) => {
                let state = s.lines().find(|l| l.trim_start().starts_with("state ="));
                out.push_str(&format!("{}\n", state.unwrap_or("loaded").trim()));
            }
            Err(_) => out.push_str("not loaded\n"),
        }
        if let Some(log) = log {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("last lines of {}:\n", log.display()));
            for l in &lines[lines.len().saturating_sub(10)..] {
                out.push_str(&format!("  {l}\n"));
            }
        }
    } else {
        let unit = format!("sotto-{}.service", job.name());
        let active = manager("systemctl", &["--user", "is-active", &unit])
            .unwrap_or_else(|e| e.lines().next().unwrap_or("unknown").to_string());
        out.push_str(&format!("systemd: {}\n", active.trim()));
        match manager(
            "journalctl",
            &["--user", "-u", &unit, "-n", "10", "--no-pager", "-o", "cat"],
        ) {
            Ok(log) if !log.trim().is_empty() => {
                out.push_str("last lines:\n");
                for l in log.lines() {
                    out.push_str(&format!("  {l}\n"));
                }
            }
            _ => out.push_str("no log lines (journalctl --user -u sotto-…)\n"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_quotes_every_argument_for_systemd() {
        let unit = systemd_unit(
            Path::new("/opt/sotto bin/sotto"),
            Job::Dictate,
            &[
                "--output".into(),
                "/home/a/100% \"notes\".txt".into(),
                "$HOME".into(),
            ],
        );
        assert!(
            unit.contains(
                "ExecStart=\"/opt/sotto bin/sotto\" dictate \"--output\" \
                 \"/home/a/100%% \\\"notes\\\".txt\" \"$$HOME\""
            ),
            "{unit}"
        );
        assert!(unit.contains("WantedBy=default.target"));
    }
}
