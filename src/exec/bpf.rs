//! Classic BPF steering of a reuseport group (SO_ATTACH_REUSEPORT_CBPF) and detaching
//! it (SO_DETACH_REUSEPORT_BPF). The programs are built in; cases name them.

use std::io;

use socket2::Socket;

use super::sockopt;
use crate::case::CbpfProgram;

// From include/uapi/asm-generic/socket.h (x86 uses the generic values).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

fn insn(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The instructions of a program; each leaves a socket index in A and returns it.
pub fn instructions(program: CbpfProgram) -> Vec<libc::sock_filter> {
    let ld_w_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret_a = libc::BPF_RET | libc::BPF_A;
    match program {
        // A = the CPU the packet is being processed on (an ancillary load).
        CbpfProgram::Cpu => vec![
            insn(ld_w_abs, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32),
            insn(ret_a, 0),
        ],
        // A = first payload word (network order), A %= n.
        CbpfProgram::Modulo(n) => vec![
            insn(ld_w_abs, 0),
            insn(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, n),
            insn(ret_a, 0),
        ],
        CbpfProgram::Constant(n) => vec![insn(libc::BPF_RET | libc::BPF_K, n)],
    }
}

pub fn attach(socket: &Socket, program: CbpfProgram) -> io::Result<()> {
    let mut code = instructions(program);
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_mut_ptr(),
    };
    // The kernel copies the program during the call, while `code` is alive.
    sockopt::set(socket, libc::SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog)
}

pub fn detach(socket: &Socket) -> io::Result<()> {
    // An int value, which the kernel ignores.
    sockopt::set(
        socket,
        libc::SOL_SOCKET,
        SO_DETACH_REUSEPORT_BPF,
        &0 as &libc::c_int,
    )
}
