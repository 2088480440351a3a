//! BPF sk_lookup: a BPF_PROG_TYPE_SK_LOOKUP program attached to the case's network
//! namespace (BPF_LINK_CREATE on the namespace fd) that hands every lookup for one
//! local port to a socket kept in a SOCKMAP, with bpf_sk_assign() (selftests/bpf
//! prog_tests/sk_lookup.c, progs/test_sk_lookup.c: `select_sock_a`, `redir_port`).
//!
//! Hand-assembled like `ebpf.rs` (no clang, no libbpf):
//!
//! ```text
//!       r6 = r1                                 ; ctx (struct bpf_sk_lookup)
//!       [r2 = ctx->local_port; if r2 != PORT goto pass]
//!       r2 = ctx->protocol; if r2 != PROTO goto pass
//!       *(u32 *)(r10 - 4) = 0
//!       r1 = MAP; r2 = r10; r2 += -4
//!       call bpf_map_lookup_elem                ; a referenced socket or NULL
//!       if r0 == 0 goto pass
//!       r7 = r0
//!       r1 = r6; r2 = r7; r3 = FLAGS
//!       call bpf_sk_assign                      ; [BPF_SK_LOOKUP_F_NO_REUSEPORT]
//!       r8 = r0
//!       r1 = r7; call bpf_sk_release
//!       if r8 != 0 goto drop                    ; as the selftest: a failed assign drops
//! pass: r0 = SK_PASS; exit
//! drop: r0 = SK_DROP; exit
//! ```
//!
//! SK_PASS with a socket assigned delivers to that socket, after the reuseport
//! selection of its group unless BPF_SK_LOOKUP_F_NO_REUSEPORT is given; SK_PASS
//! without one goes on with the regular lookup.
//!
//! Kernel support: the program type, BPF_LINK_CREATE on a netns and sockmap lookups
//! from it came in 5.9 ("bpf: Introduce SK_LOOKUP program type with a dedicated attach
//! point", "inet: Run SK_LOOKUP BPF program on socket lookup"). The link lives as long
//! as its fd: the case's end detaches it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use socket2::Socket;

use super::ebpf::{self, insn, Attr, Insn};
use super::ebpf::{
    ADD64_IMM, BPF_PSEUDO_MAP_FD, CALL, EXIT, JNE_IMM, LD_IMM64, MOV64_IMM, MOV64_REG, R0, R1, R10,
    R2, R3, R6, ST_W_IMM,
};

// bpf(2) commands and types (include/uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_SOCKMAP: u32 = 15;
const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
const BPF_SK_LOOKUP: u32 = 36;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_SK_RELEASE: i32 = 86;
const BPF_FUNC_SK_ASSIGN: i32 = 124;
/// bpf_sk_assign() flag: deliver to the socket itself, skipping its group's selection.
const BPF_SK_LOOKUP_F_NO_REUSEPORT: i32 = 1 << 1;

const SK_DROP: i32 = 0;
const SK_PASS: i32 = 1;

// struct bpf_sk_lookup offsets (stable since 5.9).
const CTX_PROTOCOL: i16 = 12;
const CTX_LOCAL_PORT: i16 = 60; // host byte order

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const R7: u8 = 7;
const R8: u8 = 8;

/// What the program matches and how it assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// IPPROTO_TCP or IPPROTO_UDP: lookups of the other protocol pass untouched.
    pub protocol: i32,
    /// Only lookups for this local port (host order); None: every lookup.
    pub port: Option<u16>,
    /// BPF_SK_LOOKUP_F_NO_REUSEPORT: the picked socket itself, not its group's choice.
    pub no_reuseport: bool,
}

/// A loaded sk_lookup program and its one-slot SOCKMAP.
#[derive(Debug)]
pub struct SkLookup {
    map: OwnedFd,
    prog: OwnedFd,
}

/// The attachment to the namespace; dropping it (the case's end) detaches it.
#[derive(Debug)]
pub struct Link {
    _fd: OwnedFd,
}

impl SkLookup {
    pub fn load(redirect: Redirect) -> io::Result<SkLookup> {
        let map = create_sockmap()?;
        let code = program(map.as_raw_fd(), redirect);
        let prog = ebpf::load(
            BPF_PROG_TYPE_SK_LOOKUP,
            BPF_SK_LOOKUP,
            "sm_sk_lookup",
            &code,
        )?;
        Ok(SkLookup { map, prog })
    }

    /// Puts the socket the program assigns into slot 0 (value = its fd as u64).
    pub fn set_target(&self, socket: &Socket) -> io::Result<()> {
        ebpf::put_socket(&self.map, 0, socket)
    }

    /// BPF_LINK_CREATE with the calling thread's network namespace as the target.
    pub fn attach_to_netns(&self) -> io::Result<Link> {
        let netns = std::fs::File::open("/proc/thread-self/ns/net")?;
        let mut attr = Attr::zeroed();
        attr.put_u32(0, self.prog.as_raw_fd() as u32); // link_create.prog_fd
        attr.put_u32(4, netns.as_raw_fd() as u32); // link_create.target_fd
        attr.put_u32(8, BPF_SK_LOOKUP); // link_create.attach_type
        let fd = ebpf::bpf(BPF_LINK_CREATE, &mut attr)?;
        Ok(Link {
            _fd: ebpf::owned(fd),
        })
    }
}

/// One slot; u64 fd values in a sockmap need 5.7+.
fn create_sockmap() -> io::Result<OwnedFd> {
    ebpf::create_socket_map(BPF_MAP_TYPE_SOCKMAP, 1, "sm_lookup_map")
}

/// The program for `redirect`, assigning the socket in slot 0 of `map_fd`.
fn program(map_fd: RawFd, redirect: Redirect) -> Vec<Insn> {
    let mut code = vec![insn(MOV64_REG, R6, R1, 0, 0)];
    // Jumps to `pass` are patched once its index is known.
    let mut to_pass = Vec::new();
    if let Some(port) = redirect.port {
        code.push(insn(LDX_W, R2, R6, CTX_LOCAL_PORT, 0));
        to_pass.push(code.len());
        code.push(insn(JNE_IMM, R2, 0, 0, port as i32));
    }
    code.push(insn(LDX_W, R2, R6, CTX_PROTOCOL, 0));
    to_pass.push(code.len());
    code.push(insn(JNE_IMM, R2, 0, 0, redirect.protocol));
    code.extend([
        insn(ST_W_IMM, R10, 0, -4, 0),
        insn(LD_IMM64, R1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0), // second half of ld_imm64
        insn(MOV64_REG, R2, R10, 0, 0),
        insn(ADD64_IMM, R2, 0, 0, -4),
        insn(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
    ]);
    to_pass.push(code.len());
    code.push(insn(JEQ_IMM, R0, 0, 0, 0));
    let flags = if redirect.no_reuseport {
        BPF_SK_LOOKUP_F_NO_REUSEPORT
    } else {
        0
    };
    code.extend([
        insn(MOV64_REG, R7, R0, 0, 0),
        insn(MOV64_REG, R1, R6, 0, 0),
        insn(MOV64_REG, R2, R7, 0, 0),
        insn(MOV64_IMM, R3, 0, 0, flags),
        insn(CALL, 0, 0, 0, BPF_FUNC_SK_ASSIGN),
        insn(MOV64_REG, R8, R0, 0, 0),
        insn(MOV64_REG, R1, R7, 0, 0),
        insn(CALL, 0, 0, 0, BPF_FUNC_SK_RELEASE),
        insn(JNE_IMM, R8, 0, 2, 0), // to drop, past pass's two instructions
    ]);
    let pass = code.len();
    code.push(insn(MOV64_IMM, R0, 0, 0, SK_PASS));
    code.push(insn(EXIT, 0, 0, 0, 0));
    code.push(insn(MOV64_IMM, R0, 0, 0, SK_DROP));
    code.push(insn(EXIT, 0, 0, 0, 0));
    for at in to_pass {
        code[at].off = (pass - at - 1) as i16;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(port: Option<u16>, no_reuseport: bool) -> Redirect {
        Redirect {
            protocol: libc::IPPROTO_TCP,
            port,
            no_reuseport,
        }
    }

    #[test]
    fn every_jump_to_pass_lands_on_sk_pass() {
        for r in [redirect(Some(7007), false), redirect(None, true)] {
            let code = program(3, r);
            let pass = code
                .iter()
                .position(|i| i.code == MOV64_IMM && i.imm == SK_PASS)
                .unwrap();
            let jumps: Vec<usize> = code
                .iter()
                .enumerate()
                .filter(|(_, i)| i.code == JNE_IMM || i.code == JEQ_IMM)
                .map(|(at, i)| (at as i64 + 1 + i.off as i64) as usize)
                .collect();
            // Every check but the last (assign failed -> drop) goes to pass.
            let (last, to_pass) = jumps.split_last().unwrap();
            assert!(to_pass.iter().all(|&t| t == pass), "{jumps:?} pass {pass}");
            assert_eq!(code[*last].imm, SK_DROP);
            assert_eq!(code[*last + 1].code, EXIT);
        }
    }

    #[test]
    fn port_filter_and_flags_are_encoded() {
        let code = program(3, redirect(Some(7007), true));
        assert!(code.iter().any(|i| i.code == JNE_IMM && i.imm == 7007));
        assert!(code
            .iter()
            .any(|i| i.code == MOV64_IMM && i.imm == BPF_SK_LOOKUP_F_NO_REUSEPORT));
        let plain = program(3, redirect(None, false));
        assert!(!plain.iter().any(|i| i.code == JNE_IMM && i.imm == 7007));
        assert_eq!(code.len(), plain.len() + 2);
    }

    /// The verifier accepts the program (needs root and a 5.9+ kernel; else nothing to check).
    #[test]
    fn verifier_accepts_the_program() {
        for r in [redirect(Some(7007), false), redirect(None, true)] {
            match SkLookup::load(r) {
                Ok(_) => {}
                Err(e) if matches!(ebpf::errno_of(&e), Some(libc::EPERM)) => return,
                Err(e) => panic!("{e}"),
            }
        }
    }
}
