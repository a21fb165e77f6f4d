//! `--zeroconf NAME`: announces the server on the local network as `_wyoming._tcp`, the
//! service Home Assistant's Wyoming integration discovers (the same record the Python
//! `wyoming` servers register: instance NAME, this host's addresses, the TCP port). The
//! announcement is withdrawn when the returned value is dropped.

use anyhow::Context;

pub const SERVICE_TYPE: &str = "_wyoming._tcp.local.";

pub struct Announcement {
    daemon: mdns_sd::ServiceDaemon,
    fullname: String,
}

pub fn announce(name: &str, port: u16) -> anyhow::Result<Announcement> {
    if name.trim().is_empty() || name.len() > 63 {
        anyhow::bail!("--zeroconf {name:?}: a name of 1 to 63 bytes is needed");
    }
    let daemon = mdns_sd::ServiceDaemon::new().context("cannot start mDNS (--zeroconf)")?;
    let host = format!("{}.local.", hostname());
    let info = mdns_sd::ServiceInfo::new(SERVICE_TYPE, name, &host, "", port, None)
        .context("cannot describe the mDNS service")?
        .enable_addr_auto();
    let fullname = info.get_fullname().to_string();
    daemon
        .register(info)
        .context("cannot announce the service over mDNS")?;
    tracing::info!(
        stage = "serve",
        name,
        port,
        "announced over mDNS as {SERVICE_TYPE}"
    );
    Ok(Announcement { daemon, fullname })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "sotto".into())
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(std::time::Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}
