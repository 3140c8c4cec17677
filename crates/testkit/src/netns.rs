//! Hosts made of network namespaces, for tests of workers on separate machines (root
//! only, as CI runs).
//!
//! A [`Network`] is a bridge in the test's own namespace with the gateway address
//! `10.231.N.1/24`; each [`Host`] is a namespace joined to it by a veth pair, with
//! address `10.231.N.(10+i)`. Servers the hosts need listen on the gateway address
//! (or are reached through a [`Forwarder`] there). [`Host::cut_link`] takes its cable
//! out. Everything is removed on drop.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Serialises network creation within a process (subnet choice).
static CREATE: Mutex<()> = Mutex::new(());
/// Distinguishes networks of one process.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (these tests need root, as CI runs them)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A bridge with a gateway address that hosts join.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    name: String,
    octet: u8,
    hosts: AtomicU32,
}

impl Network {
    /// A new bridge on a `10.231.N.0/24` subnet no interface of this machine uses.
    pub fn create() -> Self {
        let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let name = format!("ih{:03}{n:02}", std::process::id() % 1000);
        let used = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let start = (std::process::id() * 7 + n) % 200;
        let octet = (0..200)
            .map(|i| ((start + i) % 200 + 20) as u8)
            .find(|o| !used.contains(&format!("10.231.{o}.")))
            .expect("a free 10.231.N.0/24 subnet");
        let bridge = format!("{name}b");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let network = Self {
            bridge,
            name,
            octet,
            hosts: AtomicU32::new(0),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.gateway()),
            "dev",
            &network.bridge,
        ]);
        ip(&["link", "set", &network.bridge, "up"]);
        network
    }

    /// The address of this namespace on the network, where hosts reach its servers.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.octet, 1)
    }

    /// A new host on the network.
    pub fn host(&self) -> Host {
        let i = self.hosts.fetch_add(1, Ordering::Relaxed);
        let ns = format!("{}h{i}", self.name);
        let (outer, inner) = (format!("{}r{i}", self.name), format!("{}v{i}", self.name));
        let addr = Ipv4Addr::new(10, 231, self.octet, 10 + i as u8);
        ip(&["netns", "add", &ns]);
        let host = Host {
            ns: ns.clone(),
            outer: outer.clone(),
            addr,
        };
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &ns]);
        ip(&["link", "set", &outer, "master", &self.bridge]);
        ip(&["link", "set", &outer, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        in_ns(&["addr", "add", &format!("{addr}/24"), "dev", &inner]);
        in_ns(&["link", "set", &inner, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A network namespace joined to a [`Network`]: a machine of its own as far as the
/// network goes.
#[derive(Debug)]
pub struct Host {
    ns: String,
    outer: String,
    addr: Ipv4Addr,
}

impl Host {
    /// The host's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// `program` to be run inside the host (`ip netns exec NS program`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Takes the host off the network (its veth link goes down): its packets go nowhere.
    pub fn cut_link(&self) {
        ip(&["link", "set", &self.outer, "down"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and so both ends.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer])
            .output();
    }
}

/// Forwards TCP connections from an address hosts reach to a server listening
/// elsewhere (PostgreSQL on localhost, say). Stops accepting on drop.
#[derive(Debug)]
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    /// Listens on `ip` (a free port) and forwards each connection to `target`.
    pub fn start(ip: Ipv4Addr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind the forwarder");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the forwarder's address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        std::thread::spawn(move || pipe(client, target));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Self { addr, stop }
    }

    /// The address hosts connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies bytes both ways between `client` and a new connection to `target`.
fn pipe(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut c, mut s) = (client, server);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut s, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
