//! Network devices for a case: a dummy device or a veth pair created in the case's
//! network namespace over rtnetlink, brought up and given addresses (IPv6 ones with
//! IFA_F_NODAD, so they are usable at once instead of after duplicate detection).
//!
//! The messages come from `netlink-packet-route` (the rust-netlink crates `rtnetlink`
//! and `iproute2`-like tools build on), sent over a plain synchronous `netlink-sys`
//! socket: no async runtime, and nested attributes (IFLA_LINKINFO, VETH_INFO_PEER)
//! are built by the crate, not by hand. veth and dummy are modules in Debian's cloud
//! kernels: a case needing them declares `requires: [{module: veth}]` (or dummy).

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::{Deserialize, Serialize};

/// An address with its prefix length, as `ip addr add 10.0.1.1/24` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// What kind of device a `link` step creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    Dummy,
    /// A veth pair; the peer end is named `peer` and stays in the same namespace.
    Veth {
        peer: String,
        peer_addrs: Vec<IfAddr>,
    },
}

/// A device to create, bring up and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub name: String,
    pub kind: LinkKind,
    pub addrs: Vec<IfAddr>,
}

impl LinkSpec {
    /// The module the kernel needs for this kind of device (Debian builds both as modules).
    pub fn module(&self) -> &'static str {
        match self.kind {
            LinkKind::Dummy => "dummy",
            LinkKind::Veth { .. } => "veth",
        }
    }
}

/// Creates the device(s), brings them up and adds the addresses. The first failing
/// request's errno is the error (EOPNOTSUPP when the kind's module is not loaded).
pub fn create(spec: &LinkSpec) -> io::Result<()> {
    let nl = Rtnl::open()?;
    let mut info = vec![LinkInfo::Kind(match spec.kind {
        LinkKind::Dummy => InfoKind::Dummy,
        LinkKind::Veth { .. } => InfoKind::Veth,
    })];
    if let LinkKind::Veth { peer, .. } = &spec.kind {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.clone()));
        info.push(LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))));
    }
    let mut new = LinkMessage::default();
    new.attributes
        .push(LinkAttribute::IfName(spec.name.clone()));
    new.attributes.push(LinkAttribute::LinkInfo(info));
    nl.request(RouteNetlinkMessage::NewLink(new), NLM_F_CREATE | NLM_F_EXCL)?;

    configure(&nl, &spec.name, &spec.addrs)?;
    if let LinkKind::Veth { peer, peer_addrs } = &spec.kind {
        configure(&nl, peer, peer_addrs)?;
    }
    Ok(())
}

/// Brings `name` up and gives it `addrs`.
fn configure(nl: &Rtnl, name: &str, addrs: &[IfAddr]) -> io::Result<()> {
    let index = if_index(name)?;
    let mut up = LinkMessage::default();
    up.header.index = index;
    up.header.flags = LinkFlags::Up;
    up.header.change_mask = LinkFlags::Up;
    nl.request(RouteNetlinkMessage::SetLink(up), 0)?;
    for a in addrs {
        nl.request(
            RouteNetlinkMessage::NewAddress(address(index, a)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
    }
    Ok(())
}

/// RTM_NEWADDR for `a` on `index`: IFA_LOCAL and IFA_ADDRESS as `ip addr add` sends
/// them, and IFA_F_NODAD so that an IPv6 address is not "tentative" for a second.
fn address(index: u32, a: &IfAddr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = a.prefix;
    msg.header.family = match a.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    if a.addr.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(a.addr));
    }
    msg.attributes.push(AddressAttribute::Address(a.addr));
    if a.addr.is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    msg
}

fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated name; the lookup uses this thread's namespace.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
struct Rtnl {
    socket: Socket,
}

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket })
    }

    /// Sends one request with NLM_F_ACK and waits for its acknowledgement.
    fn request(&self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut reply = vec![0u8; 8192];
        let n = self.socket.recv(&mut &mut reply[..], 0)?;
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
        match parsed.payload {
            NetlinkPayload::Error(err) if err.code.is_some() => Err(err.to_io()),
            NetlinkPayload::Error(_) => Ok(()),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink: expected an acknowledgement, got {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 address carries IFA_F_NODAD; an IPv4 one IFA_LOCAL and no flags.
    #[test]
    fn addresses_are_encoded_as_ip_addr_add_does() {
        let v6 = address(
            3,
            &IfAddr {
                addr: "fd00::1".parse().unwrap(),
                prefix: 64,
            },
        );
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert_eq!(v6.header.prefix_len, 64);
        assert!(v6
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let v4 = address(
            3,
            &IfAddr {
                addr: "10.0.1.1".parse().unwrap(),
                prefix: 24,
            },
        );
        assert!(v4
            .attributes
            .contains(&AddressAttribute::Local("10.0.1.1".parse().unwrap())));
        assert!(!v4
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Flags(_))));
    }

    /// A real veth pair in a fresh namespace (root only; this host has veth built in
    /// or loaded): both ends exist, are up and hold their addresses afterwards.
    #[test]
    fn creates_a_veth_pair_in_a_namespace() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let result = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let spec = LinkSpec {
                name: "sm0".into(),
                kind: LinkKind::Veth {
                    peer: "sm1".into(),
                    peer_addrs: vec![IfAddr {
                        addr: "fd00:1::2".parse().unwrap(),
                        prefix: 64,
                    }],
                },
                addrs: vec![IfAddr {
                    addr: "10.9.0.1".parse().unwrap(),
                    prefix: 24,
                }],
            };
            create(&spec)?;
            // The addresses are usable at once: binding them succeeds (an IPv6 one
            // still tentative would fail with EADDRNOTAVAIL).
            std::net::TcpListener::bind("10.9.0.1:0")?;
            std::net::TcpListener::bind("[fd00:1::2]:0")?;
            // The same name again is EEXIST, as NLM_F_EXCL asks.
            match create(&spec) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                Err(e) => Err(e),
                Ok(()) => Err(io::Error::other(
                    "a second device of the same name was created",
                )),
            }
        })
        .join()
        .unwrap();
        if let Err(e) = &result {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return; // no veth on this host
            }
        }
        result.unwrap();
    }
}
