//! eBPF steering of a reuseport group: a BPF_PROG_TYPE_SK_REUSEPORT program choosing a
//! socket from a REUSEPORT_SOCKARRAY map (selftests/bpf select_reuseport).
//!
//! The program is hand-assembled (no libbpf, no clang) and loaded with the raw `bpf(2)`
//! syscall. It stores a constant key (chosen at load time) on its stack and calls
//! `bpf_sk_select_reuseport(ctx, map, &key, 0)`:
//!
//! ```text
//! r6 = r1                       ; ctx
//! *(u32 *)(r10 - 4) = KEY
//! r1 = r6
//! r2 = MAP                      ; ld_imm64, src_reg = BPF_PSEUDO_MAP_FD
//! r3 = r10; r3 += -4
//! r4 = 0
//! call bpf_sk_select_reuseport  ; helper 82
//! [OnMiss::Drop: if r0 != 0 goto drop]
//! r0 = 1 (SK_PASS); exit
//! drop: r0 = 0 (SK_DROP); exit
//! ```
//!
//! SK_PASS with no socket selected (the helper failed, e.g. ENOENT for an empty or
//! out-of-range slot) makes the kernel fall back to its hash; SK_DROP drops the packet
//! (UDP) or the SYN (TCP).
//!
//! Kernel support: the program type, the map type and the helper all came in 4.19
//! (commit 2dbb9b9e6df6); the helper is not GPL-only. Creating the map and loading the
//! program needs CAP_SYS_ADMIN (before 5.8) or CAP_BPF + CAP_NET_ADMIN.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::Socket;

// bpf(2) commands (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;

const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
/// expected_attach_type for SK_REUSEPORT; 0 is also what pre-5.8 kernels require.
const BPF_SK_REUSEPORT_SELECT: u32 = 0;
pub(super) const BPF_PSEUDO_MAP_FD: u8 = 1;
pub(super) const BPF_FUNC_SK_SELECT_REUSEPORT: i32 = 82;
const BPF_ANY: u64 = 0;

pub(super) const SK_DROP: i32 = 0;
pub(super) const SK_PASS: i32 = 1;

// From include/uapi/asm-generic/socket.h (x86 uses the generic values).
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;

/// Size of the verifier log buffer handed to BPF_PROG_LOAD.
const LOG_SIZE: usize = 64 * 1024;

/// What the program returns when the helper fails (no socket in the slot, index out
/// of range, socket from another group...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMiss {
    /// SK_PASS: the kernel falls back to hashing over the group.
    Pass,
    /// SK_DROP: the packet (or SYN) is dropped.
    Drop,
}

/// A loaded SK_REUSEPORT program and its REUSEPORT_SOCKARRAY map. Dropping it closes
/// both fds; a program already attached to a group stays there (the kernel holds its
/// own references on the program and, through it, on the map).
#[derive(Debug)]
pub struct ReuseportEbpf {
    map: OwnedFd,
    prog: OwnedFd,
}

impl ReuseportEbpf {
    /// Creates the map (max_entries = slots, key u32, value u64) and loads the program selecting `key`.
    pub fn load(slots: u32, key: u32, on_miss: OnMiss) -> io::Result<ReuseportEbpf> {
        ReuseportEbpf::load_with(slots, BPF_SK_REUSEPORT_SELECT, |map| {
            program(map, key, on_miss)
        })
    }

    /// Creates the map and loads the program `code(map_fd)` with `expected_attach_type`.
    pub(super) fn load_with(
        slots: u32,
        expected_attach_type: u32,
        code: impl FnOnce(RawFd) -> Vec<Insn>,
    ) -> io::Result<ReuseportEbpf> {
        let map = create_map(slots)?;
        let code = code(map.as_raw_fd());
        let prog = load(
            BPF_PROG_TYPE_SK_REUSEPORT,
            expected_attach_type,
            "sm_reuseport",
            &code,
        )?;
        Ok(ReuseportEbpf { map, prog })
    }

    /// Puts a socket (a bound SO_REUSEPORT socket) into slot `index` (BPF_MAP_UPDATE_ELEM, value = the socket fd as u64).
    pub fn set_slot(&self, index: u32, socket: &Socket) -> io::Result<()> {
        put_socket(&self.map, index, socket)
    }

    /// SO_ATTACH_REUSEPORT_EBPF on a member of the group.
    pub fn attach(&self, socket: &Socket) -> io::Result<()> {
        let fd: libc::c_int = self.prog.as_raw_fd();
        super::sockopt::set(socket, libc::SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &fd)
    }
}

/// The errno name (`EPERM`) of an error from this module or the socket table.
pub fn error_name(err: &io::Error) -> String {
    errno_of(err).map_or_else(|| crate::errno::of_io(err), crate::errno::name)
}

/// A loaded program put to work, as `attach_ebpf` and `attach_migrate` observe it:
/// `.load` ok; `.fill`, the sockets named `sockarray` put in the slots in order (the
/// first failing slot's errno, or ok); the attach to `sock`'s group under the key.
pub fn fill_and_attach(
    program: &ReuseportEbpf,
    table: &super::sockets::Table,
    step: &super::StepCtx,
    sockarray: &[String],
    sock: &str,
) -> Vec<(String, serde_json::Value)> {
    let fill = sockarray
        .iter()
        .enumerate()
        .map(|(i, name)| table.with(name, |s| program.set_slot(i as u32, s)))
        .find_map(Result::err)
        .map_or_else(|| "ok".to_string(), |e| error_name(&e));
    let attach = table
        .with(sock, |s| program.attach(s))
        .map_or_else(|e| error_name(&e), |()| "ok".to_string());
    vec![
        (step.at(".load"), "ok".into()),
        (step.at(".fill"), fill.into()),
        (step.key.to_string(), attach.into()),
    ]
}

/// The errno of an error from this module. Errors from BPF_PROG_LOAD carry the
/// verifier log, so their `raw_os_error()` is None; this finds the errno in both cases.
pub fn errno_of(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<ProgLoadError>())
            .map(|e| e.errno)
    })
}

/// BPF_PROG_LOAD failed: the errno and what the verifier said.
#[derive(Debug)]
pub struct ProgLoadError {
    pub errno: i32,
    pub log: String,
}

impl fmt::Display for ProgLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BPF_PROG_LOAD: {}",
            io::Error::from_raw_os_error(self.errno)
        )?;
        let log = self.log.trim_end();
        if log.is_empty() {
            write!(f, " (no verifier log)")
        } else {
            write!(f, "; verifier log:\n{log}")
        }
    }
}

impl std::error::Error for ProgLoadError {}

/// A zeroed `union bpf_attr`: 128 bytes is more than any kernel's BPF_MAP_CREATE,
/// BPF_MAP_UPDATE_ELEM or BPF_PROG_LOAD part, and kernels accept a larger attr as long
/// as the bytes they do not know are zero.
#[repr(C, align(8))]
pub(super) struct Attr([u8; 128]);

impl Attr {
    pub(super) fn zeroed() -> Attr {
        Attr([0; 128])
    }
    pub(super) fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }
    pub(super) fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }
    pub(super) fn put_name(&mut self, offset: usize, name: &str) {
        let bytes = &name.as_bytes()[..name.len().min(15)]; // BPF_OBJ_NAME_LEN 16, NUL-terminated
        self.0[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

pub(super) fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable 128-byte buffer for the call; every pointer
    // stored in it points at memory the caller keeps alive across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr as *mut libc::c_void,
            std::mem::size_of::<Attr>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

pub(super) fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn create_map(slots: u32) -> io::Result<OwnedFd> {
    create_socket_map(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, slots, "sm_sockarray")
}

/// A map of sockets indexed by u32 (a reuseport sockarray, a sockmap). Values are
/// written as u64 fds: accepted for both types, and lookups from user space then
/// return the socket cookie.
pub(super) fn create_socket_map(map_type: u32, slots: u32, name: &str) -> io::Result<OwnedFd> {
    let mut attr = Attr::zeroed();
    attr.put_u32(0, map_type); // map_type
    attr.put_u32(4, 4); // key_size: u32 index
    attr.put_u32(8, 8); // value_size: u64 socket fd
    attr.put_u32(12, slots); // max_entries
    attr.put_name(28, name); // map_name (4.15+)
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Puts `socket` into slot `index` of a socket map (BPF_MAP_UPDATE_ELEM, value = its
/// fd as u64).
pub(super) fn put_socket(map: &OwnedFd, index: u32, socket: &Socket) -> io::Result<()> {
    let key: u32 = index;
    let value: u64 = socket.as_raw_fd() as u64;
    let mut attr = Attr::zeroed();
    attr.put_u32(0, map.as_raw_fd() as u32); // map_fd
    attr.put_u64(8, &key as *const u32 as u64); // key
    attr.put_u64(16, &value as *const u64 as u64); // value
    attr.put_u64(24, BPF_ANY); // flags
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    Ok(())
}

#[cfg(test)]
fn load_program(code: &[Insn]) -> io::Result<OwnedFd> {
    load(
        BPF_PROG_TYPE_SK_REUSEPORT,
        BPF_SK_REUSEPORT_SELECT,
        "sm_reuseport",
        code,
    )
}

/// BPF_PROG_LOAD of a GPL program; a rejection carries the verifier log.
pub(super) fn load(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    code: &[Insn],
) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; LOG_SIZE];
    let mut attr = Attr::zeroed();
    attr.put_u32(0, prog_type); // prog_type
    attr.put_u32(4, code.len() as u32); // insn_cnt
    attr.put_u64(8, code.as_ptr() as u64); // insns
    attr.put_u64(16, license.as_ptr() as u64); // license
    attr.put_u32(24, 1); // log_level
    attr.put_u32(28, LOG_SIZE as u32); // log_size
    attr.put_u64(32, log.as_mut_ptr() as u64); // log_buf
    attr.put_name(48, name); // prog_name (4.15+)
    attr.put_u32(68, expected_attach_type); // expected_attach_type
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(err) => {
            let errno = err.raw_os_error().unwrap_or(libc::EIO);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).into_owned();
            Err(io::Error::new(err.kind(), ProgLoadError { errno, log }))
        }
    }
}

/// `struct bpf_insn`: opcode, dst_reg:4 / src_reg:4, off, imm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Insn {
    pub(super) code: u8,
    pub(super) regs: u8,
    pub(super) off: i16,
    pub(super) imm: i32,
}

pub(super) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    // The bitfields dst_reg:4, src_reg:4 are allocated from the low bits on
    // little-endian targets and from the high bits on big-endian ones.
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | (dst & 0xf)
    } else {
        (dst << 4) | (src & 0xf)
    };
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
pub(super) const MOV64_REG: u8 = 0x07 | 0xb0 | 0x08; // BPF_ALU64 | BPF_MOV | BPF_X
pub(super) const MOV64_IMM: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
pub(super) const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
pub(super) const ST_W_IMM: u8 = 0x02 | 0x60; // BPF_ST | BPF_MEM | BPF_W
pub(super) const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_DW | BPF_IMM
pub(super) const CALL: u8 = 0x05 | 0x80; // BPF_JMP | BPF_CALL
pub(super) const JNE_IMM: u8 = 0x05 | 0x50; // BPF_JMP | BPF_JNE | BPF_K
pub(super) const EXIT: u8 = 0x05 | 0x90; // BPF_JMP | BPF_EXIT

pub(super) const R0: u8 = 0;
pub(super) const R1: u8 = 1;
pub(super) const R2: u8 = 2;
pub(super) const R3: u8 = 3;
pub(super) const R4: u8 = 4;
pub(super) const R6: u8 = 6;
pub(super) const R10: u8 = 10;

/// The program selecting slot `key` of the map `map_fd`.
fn program(map_fd: RawFd, key: u32, on_miss: OnMiss) -> Vec<Insn> {
    let mut code = vec![
        insn(MOV64_REG, R6, R1, 0, 0),
        insn(ST_W_IMM, R10, 0, -4, key as i32),
        insn(MOV64_REG, R1, R6, 0, 0),
        insn(LD_IMM64, R2, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0), // second half of ld_imm64: the upper 32 bits
        insn(MOV64_REG, R3, R10, 0, 0),
        insn(ADD64_IMM, R3, 0, 0, -4),
        insn(MOV64_IMM, R4, 0, 0, 0),
        insn(CALL, 0, 0, 0, BPF_FUNC_SK_SELECT_REUSEPORT),
    ];
    if on_miss == OnMiss::Drop {
        code.push(insn(JNE_IMM, R0, 0, 2, 0)); // skip the SK_PASS exit
    }
    code.push(insn(MOV64_IMM, R0, 0, 0, SK_PASS));
    code.push(insn(EXIT, 0, 0, 0, 0));
    if on_miss == OnMiss::Drop {
        code.push(insn(MOV64_IMM, R0, 0, 0, SK_DROP));
        code.push(insn(EXIT, 0, 0, 0, 0));
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel_macros() {
        let code = program(7, 1, OnMiss::Pass);
        assert_eq!(code.len(), 11);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // BPF_MOV64_REG(BPF_REG_6, BPF_REG_1) = bf 16 00 00 00 00 00 00
        assert_eq!((code[0].code, code[0].regs), (0xbf, 0x16));
        // BPF_LD_MAP_FD(BPF_REG_2, 7) = 18 12 00 00 07 00 00 00, 00 ...
        assert_eq!(
            code[3],
            Insn {
                code: 0x18,
                regs: 0x12,
                off: 0,
                imm: 7
            }
        );
        assert_eq!(
            code[8],
            Insn {
                code: 0x85,
                regs: 0,
                off: 0,
                imm: 82
            }
        );
        assert_eq!(program(7, 1, OnMiss::Drop).len(), 14);
    }

    /// Needs CAP_BPF/CAP_SYS_ADMIN; without them (EPERM) there is nothing to check.
    #[test]
    fn verifier_log_explains_a_rejected_program() {
        // `exit` without setting r0.
        let err = load_program(&[insn(EXIT, 0, 0, 0, 0)]).unwrap_err();
        if errno_of(&err) == Some(libc::EPERM) {
            return;
        }
        assert_eq!(errno_of(&err), Some(libc::EACCES), "{err}");
        assert!(err.to_string().contains("R0 !read_ok"), "{err}");
    }
}
