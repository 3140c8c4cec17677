//! A network namespace joined to the host by a veth pair, whose link can go down: a
//! process inside is partitioned from everything on the host.

use crate::env::run_checked;

/// The namespace's name.
pub(crate) const NAMESPACE: &str = "idempipe-chaos";
/// The host's end of the pair, and its address (where PostgreSQL and the API answer).
const HOST_LINK: &str = "ipchaos-h";
/// The host end's address.
pub(crate) const HOST_ADDR: &str = "10.231.0.1";
const INNER_LINK: &str = "ipchaos-n";

/// The namespace; removed when dropped.
#[derive(Debug)]
pub(crate) struct Netns;

impl Netns {
    /// Creates the namespace and the veth pair, both ends up (needs root).
    pub(crate) async fn create() -> anyhow::Result<Self> {
        remove();
        let ns = Self;
        let host_cidr = format!("{HOST_ADDR}/24");
        for args in [
            vec!["netns", "add", NAMESPACE],
            vec![
                "link", "add", HOST_LINK, "type", "veth", "peer", "name", INNER_LINK,
            ],
            vec!["link", "set", INNER_LINK, "netns", NAMESPACE],
            vec!["addr", "add", &host_cidr, "dev", HOST_LINK],
            vec!["link", "set", HOST_LINK, "up"],
            vec![
                "netns",
                "exec",
                NAMESPACE,
                "ip",
                "addr",
                "add",
                "10.231.0.2/24",
                "dev",
                INNER_LINK,
            ],
            vec![
                "netns", "exec", NAMESPACE, "ip", "link", "set", INNER_LINK, "up",
            ],
            vec!["netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up"],
        ] {
            run_checked("ip", &args).await?;
        }
        Ok(ns)
    }

    /// Takes the link down (partition) or up (heal).
    pub(crate) async fn set_link(&self, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        run_checked("ip", &["link", "set", HOST_LINK, state])
            .await
            .map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove();
    }
}

/// Removes the namespace and the pair, if they exist.
fn remove() {
    for args in [["link", "del", HOST_LINK], ["netns", "del", NAMESPACE]] {
        let _ = std::process::Command::new("ip").args(args).output();
    }
}
