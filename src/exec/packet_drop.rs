//! Packet control: an XDP program on the case namespace's `lo` that drops the packets
//! matching a small filter (family, protocol, TCP flags, port, how many), counting
//! them in a BPF array map, until a later step detaches it. This is how the kernel's
//! own selftest (bpf/prog_tests/migrate_reuseport.c) holds requests in SYN_RECV: it
//! drops the final ACK of the handshake on `lo`.
//!
//! The program is hand-assembled like `ebpf.rs` (no clang, no libbpf) and attached in
//! generic (SKB) mode with netlink's IFLA_XDP, which every kernel since 4.12 has; on
//! `lo` every packet is received, so "to the port" and "from the port" both show up.
//!
//! ```text
//!         r2 = ctx->data; r3 = ctx->data_end
//!         ethernet header in bounds?  h_proto IPv4 -> v4, IPv6 -> v6, else pass
//! v4:     IPv4 (IHL 5) + L4 header in bounds; protocol; [pure ACK: no payload]
//!         port; TCP flags                                        -> match
//! v6:     IPv6 (next header = L4) + L4 header in bounds; the same checks
//! match:  counter = map[0]; [counter >= limit -> pass]; counter += 1 (atomic); XDP_DROP
//! pass:   XDP_PASS
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::ebpf::{self, insn, Attr, Insn};
use super::ebpf::{
    ADD64_IMM, BPF_PSEUDO_MAP_FD, CALL, EXIT, JNE_IMM, LD_IMM64, MOV64_IMM, MOV64_REG, R0, R1, R10,
    R2, R3, R4, R6, ST_W_IMM,
};
use crate::case::{Family, PacketFilter, PortSide, Proto, TcpFlags};

pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub(super) const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_XDP: u32 = 6;
pub(super) const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;

// Opcodes beyond those ebpf.rs needs (include/uapi/linux/bpf.h, bpf_common.h).
pub(super) const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const LDX_H: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
const LDX_B: u8 = 0x71; // BPF_LDX | BPF_MEM | BPF_B
pub(super) const LDX_DW: u8 = 0x79; // BPF_LDX | BPF_MEM | BPF_DW
pub(super) const XADD_DW: u8 = 0xdb; // BPF_STX | BPF_XADD | BPF_DW (atomic add)
const AND64_IMM: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_IMM: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const LSH64_IMM: u8 = 0x67; // BPF_ALU64 | BPF_LSH | BPF_K
const TO_BE: u8 = 0xdc; // BPF_ALU | BPF_END | BPF_TO_BE
pub(super) const JA: u8 = 0x05; // BPF_JMP | BPF_JA
pub(super) const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_IMM: u8 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JGT_REG: u8 = 0x2d; // BPF_JMP | BPF_JGT | BPF_X
const JNE_REG: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const R5: u8 = 5;
pub(super) const R7: u8 = 7;

const ETH_HLEN: i32 = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_SCTP: i32 = 132;

/// A drop filter attached to `lo`: its program and counter map. Dropping it detaches.
pub struct Dropper {
    ifindex: u32,
    map: OwnedFd,
    // Kept open while attached (the kernel holds its own reference as well).
    _prog: OwnedFd,
    attached: bool,
}

impl Dropper {
    /// Loads the program for `filter` (its port resolved to `port`) and attaches it to
    /// `lo` in generic XDP mode.
    pub fn attach(filter: &PacketFilter, port: Option<u16>) -> io::Result<Dropper> {
        let map = create_counter()?;
        let code = program(map.as_raw_fd(), filter, port);
        let prog = ebpf::load(BPF_PROG_TYPE_XDP, 0, "sm_drop", &code)?;
        let ifindex = loopback_index()?;
        set_xdp(ifindex, prog.as_raw_fd())?;
        Ok(Dropper {
            ifindex,
            map,
            _prog: prog,
            attached: true,
        })
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> io::Result<u64> {
        let key: u32 = 0;
        let mut value: u64 = 0;
        let mut attr = Attr::zeroed();
        attr.put_u32(0, self.map.as_raw_fd() as u32); // map_fd
        attr.put_u64(8, &key as *const u32 as u64); // key
        attr.put_u64(16, &mut value as *mut u64 as u64); // value
        ebpf::bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
        Ok(value)
    }

    /// Detaches the program: packets flow again.
    pub fn release(&mut self) -> io::Result<()> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        set_xdp(self.ifindex, -1)
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

fn loopback_index() -> io::Result<u32> {
    // SAFETY: a NUL-terminated name; the lookup uses this thread's namespace.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

fn create_counter() -> io::Result<OwnedFd> {
    let mut attr = Attr::zeroed();
    attr.put_u32(0, BPF_MAP_TYPE_ARRAY); // map_type
    attr.put_u32(4, 4); // key_size
    attr.put_u32(8, 8); // value_size: u64 packets dropped
    attr.put_u32(12, 1); // max_entries
    attr.put_name(28, "sm_dropped");
    ebpf::bpf(BPF_MAP_CREATE, &mut attr).map(ebpf::owned)
}

/// The TCP flags byte test of a filter: (flags & mask) == value, and whether the
/// segment must carry no payload.
fn flag_test(flags: TcpFlags) -> Option<(i32, i32, bool)> {
    const FIN: i32 = 0x01;
    const SYN: i32 = 0x02;
    const RST: i32 = 0x04;
    const ACK: i32 = 0x10;
    Some(match flags {
        TcpFlags::Any => return None,
        // A pure ACK: ACK alone among SYN/FIN/RST/ACK, no data (PSH is ignored).
        TcpFlags::Ack => (SYN | FIN | RST | ACK, ACK, true),
        TcpFlags::Syn => (SYN | ACK, SYN, false),
        TcpFlags::SynAck => (SYN | ACK, SYN | ACK, false),
        TcpFlags::Rst => (RST, RST, false),
        TcpFlags::Fin => (FIN, FIN, false),
    })
}

/// A 16-bit value as a `ldx h` of network-order bytes reads it on this host.
fn wire16(v: u16) -> i32 {
    u16::from_ne_bytes(v.to_be_bytes()) as i32
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Label(usize);

/// Instructions with forward jumps to labels, resolved at the end.
#[derive(Default)]
pub(super) struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    pub(super) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    pub(super) fn here(&mut self, label: Label) {
        self.labels[label.0] = Some(self.code.len());
    }
    pub(super) fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(insn(code, dst, src, off, imm));
    }
    pub(super) fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.code.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    pub(super) fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.jumps {
            let target = self.labels[label.0].expect("every label is placed");
            self.code[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.code
    }
}

/// The whole program for `filter`, counting into the array map `map_fd`.
fn program(map_fd: RawFd, filter: &PacketFilter, port: Option<u16>) -> Vec<Insn> {
    let mut a = Asm::default();
    let (pass, matched, v4, v6) = (a.label(), a.label(), a.label(), a.label());
    a.op(MOV64_REG, R6, R1, 0, 0);
    a.op(LDX_W, R2, R6, 0, 0); // data
    a.op(LDX_W, R3, R6, 4, 0); // data_end
    a.op(MOV64_REG, R4, R2, 0, 0);
    a.op(ADD64_IMM, R4, 0, 0, ETH_HLEN);
    a.jump(JGT_REG, R4, R3, 0, pass);
    a.op(LDX_H, R5, R2, 12, 0); // h_proto
    if filter.family != Some(Family::Ipv6) {
        a.jump(JEQ_IMM, R5, 0, wire16(ETH_P_IP), v4);
    }
    if filter.family != Some(Family::Ipv4) {
        a.jump(JEQ_IMM, R5, 0, wire16(ETH_P_IPV6), v6);
    }
    a.jump(JA, 0, 0, 0, pass);

    let (l4_proto, l4_len) = match filter.proto {
        // MPTCP travels as TCP segments (with an MPTCP option).
        Proto::Tcp | Proto::Mptcp => (IPPROTO_TCP, 20),
        Proto::Udp => (IPPROTO_UDP, 8),
        // The SCTP common header: ports, verification tag, checksum.
        Proto::Sctp => (IPPROTO_SCTP, 12),
    };
    let flags = match filter.proto {
        Proto::Tcp | Proto::Mptcp => flag_test(filter.tcp_flags),
        Proto::Udp | Proto::Sctp => None,
    };
    // IPv4 without options (IHL 5): what loopback TCP and UDP send. A family the
    // filter excludes gets no block (the verifier rejects unreachable code).
    if filter.family != Some(Family::Ipv6) {
        ipv4_block(&mut a, v4, l4_proto, l4_len, flags, port, filter.side, pass);
        a.jump(JA, 0, 0, 0, matched);
    }
    if filter.family != Some(Family::Ipv4) {
        ipv6_block(&mut a, v6, l4_proto, l4_len, flags, port, filter.side, pass);
    }

    a.here(matched);
    a.op(ST_W_IMM, R10, 0, -4, 0);
    a.op(LD_IMM64, R1, BPF_PSEUDO_MAP_FD, 0, map_fd);
    a.op(0, 0, 0, 0, 0);
    a.op(MOV64_REG, R2, R10, 0, 0);
    a.op(ADD64_IMM, R2, 0, 0, -4);
    a.op(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM);
    a.jump(JEQ_IMM, R0, 0, 0, pass);
    if let Some(limit) = filter.limit {
        a.op(LDX_DW, R1, R0, 0, 0);
        a.jump(JGE_IMM, R1, 0, limit as i32, pass);
    }
    a.op(MOV64_IMM, R1, 0, 0, 1);
    a.op(XADD_DW, R0, R1, 0, 0);
    a.op(MOV64_IMM, R0, 0, 0, XDP_DROP);
    a.op(EXIT, 0, 0, 0, 0);
    a.here(pass);
    a.op(MOV64_IMM, R0, 0, 0, XDP_PASS);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

#[allow(clippy::too_many_arguments)]
fn ipv4_block(
    a: &mut Asm,
    v4: Label,
    l4_proto: i32,
    l4_len: i32,
    flags: Option<(i32, i32, bool)>,
    port: Option<u16>,
    side: PortSide,
    pass: Label,
) {
    a.here(v4);
    let l4 = ETH_HLEN + 20;
    bounds(a, l4 + l4_len, pass);
    a.op(LDX_B, R5, R2, ETH_HLEN as i16, 0);
    a.jump(JNE_IMM, R5, 0, 0x45, pass);
    a.op(LDX_B, R5, R2, (ETH_HLEN + 9) as i16, 0);
    a.jump(JNE_IMM, R5, 0, l4_proto, pass);
    if flags.is_some_and(|(_, _, empty)| empty) {
        // tot_len == 20 + TCP header length: no payload
        a.op(LDX_H, R5, R2, (ETH_HLEN + 2) as i16, 0);
        a.op(TO_BE, R5, 0, 0, 16);
        tcp_header_len(a, l4);
        a.op(ADD64_IMM, R7, 0, 0, 20);
        a.jump(JNE_REG, R5, R7, 0, pass);
    }
    l4_checks(a, l4, port, side, flags, pass);
}

/// IPv6 whose next header is the L4 protocol (no extension headers); falls through
/// to the match.
#[allow(clippy::too_many_arguments)]
fn ipv6_block(
    a: &mut Asm,
    v6: Label,
    l4_proto: i32,
    l4_len: i32,
    flags: Option<(i32, i32, bool)>,
    port: Option<u16>,
    side: PortSide,
    pass: Label,
) {
    a.here(v6);
    let l4 = ETH_HLEN + 40;
    bounds(a, l4 + l4_len, pass);
    a.op(LDX_B, R5, R2, (ETH_HLEN + 6) as i16, 0); // next header
    a.jump(JNE_IMM, R5, 0, l4_proto, pass);
    if flags.is_some_and(|(_, _, empty)| empty) {
        // payload_len == TCP header length: no payload
        a.op(LDX_H, R5, R2, (ETH_HLEN + 4) as i16, 0);
        a.op(TO_BE, R5, 0, 0, 16);
        tcp_header_len(a, l4);
        a.jump(JNE_REG, R5, R7, 0, pass);
    }
    l4_checks(a, l4, port, side, flags, pass);
}

/// if data + len > data_end goto pass (the verifier then allows reads below len).
fn bounds(a: &mut Asm, len: i32, pass: Label) {
    a.op(MOV64_REG, R4, R2, 0, 0);
    a.op(ADD64_IMM, R4, 0, 0, len);
    a.jump(JGT_REG, R4, R3, 0, pass);
}

/// r7 = the TCP header's length in bytes (data offset * 4).
fn tcp_header_len(a: &mut Asm, l4: i32) {
    a.op(LDX_B, R7, R2, (l4 + 12) as i16, 0);
    a.op(RSH64_IMM, R7, 0, 0, 4);
    a.op(LSH64_IMM, R7, 0, 0, 2);
}

fn l4_checks(
    a: &mut Asm,
    l4: i32,
    port: Option<u16>,
    side: PortSide,
    flags: Option<(i32, i32, bool)>,
    pass: Label,
) {
    if let Some(port) = port {
        let at = match side {
            PortSide::Source => l4,
            PortSide::Destination => l4 + 2,
        };
        a.op(LDX_H, R5, R2, at as i16, 0);
        a.jump(JNE_IMM, R5, 0, wire16(port), pass);
    }
    if let Some((mask, value, _)) = flags {
        a.op(LDX_B, R5, R2, (l4 + 13) as i16, 0);
        a.op(AND64_IMM, R5, 0, 0, mask);
        a.jump(JNE_IMM, R5, 0, value, pass);
    }
}

/// RTM_SETLINK with IFLA_XDP {FD, FLAGS = XDP_FLAGS_SKB_MODE}; fd -1 detaches.
fn set_xdp(ifindex: u32, prog_fd: RawFd) -> io::Result<()> {
    const RTM_SETLINK: u16 = 19;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_XDP: u16 = 43;
    const NLA_F_NESTED: u16 = 0x8000;
    const IFLA_XDP_FD: u16 = 1;
    const IFLA_XDP_FLAGS: u16 = 3;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

    let mut msg: Vec<u8> = Vec::with_capacity(52);
    let attr = |msg: &mut Vec<u8>, kind: u16, len: u16| {
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
    };
    msg.extend_from_slice(&52u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_SETLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // ifi_family, pad, ifi_type
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
    attr(&mut msg, IFLA_XDP | NLA_F_NESTED, 20);
    attr(&mut msg, IFLA_XDP_FD, 8);
    msg.extend_from_slice(&prog_fd.to_ne_bytes());
    attr(&mut msg, IFLA_XDP_FLAGS, 8);
    msg.extend_from_slice(&XDP_FLAGS_SKB_MODE.to_ne_bytes());
    debug_assert_eq!(msg.len(), 52);

    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket nothing else owns.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl zeroed = the kernel (pid 0); the buffers outlive the calls.
    unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 4096];
        let n = libc::recv(
            sock.as_raw_fd(),
            reply.as_mut_ptr() as *mut libc::c_void,
            reply.len(),
            0,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink: no acknowledgement for RTM_SETLINK",
            ));
        }
        let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if error < 0 {
            return Err(io::Error::from_raw_os_error(-error));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(flags: TcpFlags, family: Option<Family>, limit: Option<u32>) -> PacketFilter {
        PacketFilter {
            proto: Proto::Tcp,
            tcp_flags: flags,
            port: None,
            side: PortSide::Destination,
            family,
            limit,
        }
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let code = program(3, &filter(TcpFlags::Ack, None, Some(5)), Some(8080));
        // The last two instructions are `pass`: r0 = XDP_PASS; exit.
        let pass = code.len() - 2;
        assert_eq!((code[pass].code, code[pass].imm), (MOV64_IMM, XDP_PASS));
        // The first bounds check jumps to pass.
        assert_eq!(code[5].code, JGT_REG);
        assert_eq!(5 + 1 + code[5].off as usize, pass);
        // The port test compares the destination port in network order.
        assert!(code
            .iter()
            .any(|i| i.code == JNE_IMM && i.imm == wire16(8080)));
        // The limit is checked before counting.
        assert!(code.iter().any(|i| i.code == JGE_IMM && i.imm == 5));
        // One family: the other's branch is not emitted.
        let v4 = program(3, &filter(TcpFlags::Any, Some(Family::Ipv4), None), None);
        assert!(!v4.iter().any(|i| i.imm == wire16(ETH_P_IPV6)));
        assert!(v4.len() < code.len());
    }

    /// Needs CAP_BPF/CAP_SYS_ADMIN; without them (EPERM) there is nothing to check.
    #[test]
    fn the_verifier_accepts_every_filter() {
        let map = match create_counter() {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("map: {e}"),
        };
        for flags in [
            TcpFlags::Any,
            TcpFlags::Ack,
            TcpFlags::Syn,
            TcpFlags::SynAck,
            TcpFlags::Rst,
            TcpFlags::Fin,
        ] {
            for family in [None, Some(Family::Ipv4), Some(Family::Ipv6)] {
                let f = filter(flags, family, Some(3));
                let code = program(map.as_raw_fd(), &f, Some(80));
                if let Err(e) = ebpf::load(BPF_PROG_TYPE_XDP, 0, "sm_drop", &code) {
                    panic!("{flags:?} {family:?}: {e}");
                }
            }
        }
        let udp = PacketFilter {
            proto: Proto::Udp,
            ..filter(TcpFlags::Any, None, None)
        };
        let code = program(map.as_raw_fd(), &udp, Some(53));
        ebpf::load(BPF_PROG_TYPE_XDP, 0, "sm_drop", &code).unwrap();
    }
}
