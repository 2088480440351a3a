//! An SK_REUSEPORT program loaded with expected_attach_type
//! BPF_SK_REUSEPORT_SELECT_OR_MIGRATE (5.14): besides choosing a listener for a new
//! SYN, the kernel calls it when a request or a child must leave a closed listener
//! (at close, when a request's SYN-ACK timer fires, when its final ACK arrives), with
//! `ctx->migrating_sk` set. It answers by selecting a socket from the sockarray, by
//! SK_PASS without a selection (the kernel then picks by hash) or by SK_DROP (no
//! migration: the request or child is dropped). Written after the kernel's selftest
//! (bpf/progs/test_migrate_reuseport.c) and hand-assembled like `ebpf.rs`.
//!
//! Each migration is counted in an array map by where it happened, as the selftest
//! counts: the migrating socket's state and `ctx->len` (no packet: the SYN-ACK timer).
//!
//! ```text
//!         r6 = ctx; r7 = ctx->migrating_sk
//!         if r7 == 0 goto new_syn
//!         key = where (ESTABLISHED: close, SYN_RECV: close_fastopen,
//!               NEW_SYN_RECV: len == 0 ? synack : ack, else other)
//!         counters[key] += 1 (atomic)
//!         [migrate to slot K: bpf_sk_select_reuseport(ctx, sockarray, &K, 0)]
//!         return SK_PASS (or SK_DROP when migrations are refused)
//! new_syn: [select slot S as ebpf.rs does] or return SK_PASS (hash)
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::ebpf::{
    self, Attr, Insn, OnMiss, ReuseportEbpf, ADD64_IMM, BPF_FUNC_SK_SELECT_REUSEPORT,
    BPF_PSEUDO_MAP_FD, CALL, EXIT, JNE_IMM, LD_IMM64, MOV64_IMM, MOV64_REG, R0, R1, R10, R2, R3,
    R4, R6, SK_DROP, SK_PASS, ST_W_IMM,
};
use super::packet_drop::{
    Asm, Label, BPF_FUNC_MAP_LOOKUP_ELEM, BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_TYPE_ARRAY,
    JA, JEQ_IMM, LDX_DW, LDX_W, R7, XADD_DW,
};

/// enum bpf_attach_type (include/uapi/linux/bpf.h): BPF_SK_REUSEPORT_SELECT is 39.
const BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;

// struct sk_reuseport_md: `len` and `migrating_sk` (a __bpf_md_ptr, 8 bytes).
const MD_LEN: i16 = 16;
const MD_MIGRATING_SK: i16 = 48;
// struct bpf_sock: `state`.
const BPF_SOCK_STATE: i16 = 72;
// enum in include/uapi/linux/bpf.h (BPF_TCP_*), the same numbers as TCP_*.
const BPF_TCP_ESTABLISHED: i32 = 1;
const BPF_TCP_SYN_RECV: i32 = 3;
const BPF_TCP_NEW_SYN_RECV: i32 = 12;

/// Where a migration happened: the counter slots, in map order, and their names.
pub const PLACES: [&str; 5] = ["close", "close_fastopen", "synack", "ack", "other"];

/// What the program does with a socket that must migrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MigrateTo {
    /// Select this sockarray slot.
    Slot(u32),
    /// SK_PASS without a selection: the kernel picks a listener by hash.
    Hash,
    /// SK_DROP: the request or child is not migrated.
    Drop,
}

/// A SELECT_OR_MIGRATE program, its sockarray and its migration counters.
#[derive(Debug)]
pub struct MigratingEbpf {
    inner: ReuseportEbpf,
    counters: OwnedFd,
}

impl MigratingEbpf {
    /// Loads the program: new SYNs go to slot `select` (or by hash when None, `on_miss`
    /// as in `ebpf.rs`), migrating sockets as `migrate` says.
    pub fn load(
        slots: u32,
        select: Option<(u32, OnMiss)>,
        migrate: MigrateTo,
    ) -> io::Result<MigratingEbpf> {
        let counters = create_counters()?;
        let counters_fd = counters.as_raw_fd();
        let inner = ReuseportEbpf::load_with(slots, BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, |map| {
            program(map, counters_fd, select, migrate)
        })?;
        Ok(MigratingEbpf { inner, counters })
    }

    /// The program and its sockarray (slots, attach), as for `attach_ebpf`.
    pub fn program(&self) -> &ReuseportEbpf {
        &self.inner
    }

    /// How many migrations the program saw at each place of `PLACES`.
    pub fn counts(&self) -> io::Result<[u64; 5]> {
        let mut out = [0u64; 5];
        for (key, slot) in out.iter_mut().enumerate() {
            let key = key as u32;
            let mut attr = Attr::zeroed();
            attr.put_u32(0, self.counters.as_raw_fd() as u32); // map_fd
            attr.put_u64(8, &key as *const u32 as u64); // key
            attr.put_u64(16, slot as *mut u64 as u64); // value
            ebpf::bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
        }
        Ok(out)
    }
}

fn create_counters() -> io::Result<OwnedFd> {
    let mut attr = Attr::zeroed();
    attr.put_u32(0, BPF_MAP_TYPE_ARRAY); // map_type
    attr.put_u32(4, 4); // key_size
    attr.put_u32(8, 8); // value_size: u64 migrations
    attr.put_u32(12, PLACES.len() as u32); // max_entries
    attr.put_name(28, "sm_migrations");
    ebpf::bpf(BPF_MAP_CREATE, &mut attr).map(ebpf::owned)
}

/// `r0 = bpf_sk_select_reuseport(ctx = r6, sockarray, &key, 0)`, the key stored at r10-4.
fn select_slot(a: &mut Asm, sockarray: RawFd, key: u32) {
    a.op(ST_W_IMM, R10, 0, -4, key as i32);
    a.op(MOV64_REG, R1, R6, 0, 0);
    a.op(LD_IMM64, R2, BPF_PSEUDO_MAP_FD, 0, sockarray);
    a.op(0, 0, 0, 0, 0);
    a.op(MOV64_REG, R3, R10, 0, 0);
    a.op(ADD64_IMM, R3, 0, 0, -4);
    a.op(MOV64_IMM, R4, 0, 0, 0);
    a.op(CALL, 0, 0, 0, BPF_FUNC_SK_SELECT_REUSEPORT);
}

fn ret(a: &mut Asm, value: i32) {
    a.op(MOV64_IMM, R0, 0, 0, value);
    a.op(EXIT, 0, 0, 0, 0);
}

/// Stores counter slot `place` at r10-8 and jumps to `count`.
fn place(a: &mut Asm, place: i32, count: Label) {
    a.op(ST_W_IMM, R10, 0, -8, place);
    a.jump(JA, 0, 0, 0, count);
}

fn program(
    sockarray: RawFd,
    counters: RawFd,
    select: Option<(u32, OnMiss)>,
    migrate: MigrateTo,
) -> Vec<Insn> {
    let mut a = Asm::default();
    let (new_syn, count, verdict) = (a.label(), a.label(), a.label());
    let (not_est, not_synrecv, at_ack) = (a.label(), a.label(), a.label());
    a.op(MOV64_REG, R6, R1, 0, 0);
    a.op(LDX_DW, R7, R6, MD_MIGRATING_SK, 0);
    a.jump(JEQ_IMM, R7, 0, 0, new_syn);

    // Which counter: by the migrating socket's state, and for a request by whether
    // a packet (the final ACK) is in hand.
    a.op(LDX_W, R2, R7, BPF_SOCK_STATE, 0);
    a.op(LDX_W, R3, R6, MD_LEN, 0);
    a.jump(JNE_IMM, R2, 0, BPF_TCP_ESTABLISHED, not_est);
    place(&mut a, 0, count);
    a.here(not_est);
    a.jump(JNE_IMM, R2, 0, BPF_TCP_SYN_RECV, not_synrecv);
    place(&mut a, 1, count);
    a.here(not_synrecv);
    let other = a.label();
    a.jump(JNE_IMM, R2, 0, BPF_TCP_NEW_SYN_RECV, other);
    a.jump(JNE_IMM, R3, 0, 0, at_ack);
    place(&mut a, 2, count);
    a.here(at_ack);
    place(&mut a, 3, count);
    a.here(other);
    a.op(ST_W_IMM, R10, 0, -8, 4);

    a.here(count);
    a.op(LD_IMM64, R1, BPF_PSEUDO_MAP_FD, 0, counters);
    a.op(0, 0, 0, 0, 0);
    a.op(MOV64_REG, R2, R10, 0, 0);
    a.op(ADD64_IMM, R2, 0, 0, -8);
    a.op(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM);
    a.jump(JEQ_IMM, R0, 0, 0, verdict);
    a.op(MOV64_IMM, R1, 0, 0, 1);
    a.op(XADD_DW, R0, R1, 0, 0);

    a.here(verdict);
    match migrate {
        MigrateTo::Drop => ret(&mut a, SK_DROP),
        MigrateTo::Hash => ret(&mut a, SK_PASS),
        MigrateTo::Slot(key) => {
            // A failed selection (empty slot) falls back to the hash, as in the selftest.
            select_slot(&mut a, sockarray, key);
            ret(&mut a, SK_PASS);
        }
    }

    a.here(new_syn);
    match select {
        None => ret(&mut a, SK_PASS),
        Some((key, on_miss)) => {
            select_slot(&mut a, sockarray, key);
            if on_miss == OnMiss::Drop {
                let drop = a.label();
                a.jump(JNE_IMM, R0, 0, 0, drop);
                ret(&mut a, SK_PASS);
                a.here(drop);
                ret(&mut a, SK_DROP);
            } else {
                ret(&mut a, SK_PASS);
            }
        }
    }
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program as the kernel's verifier sees it, for every kind of answer; on a
    /// kernel before 5.14 (no SELECT_OR_MIGRATE) or without CAP_BPF there is nothing
    /// to check. The host running the tests is 5.14+ in CI.
    #[test]
    fn the_verifier_accepts_every_variant() {
        let mut loaded = 0;
        for select in [None, Some((0, OnMiss::Pass)), Some((1, OnMiss::Drop))] {
            for migrate in [MigrateTo::Slot(2), MigrateTo::Hash, MigrateTo::Drop] {
                match MigratingEbpf::load(3, select, migrate) {
                    Ok(p) => {
                        assert_eq!(p.counts().unwrap(), [0; 5]);
                        loaded += 1;
                    }
                    Err(e) if matches!(ebpf::errno_of(&e), Some(libc::EPERM)) => return,
                    Err(e) => panic!("{select:?} {migrate:?}: {e}"),
                }
            }
        }
        assert_eq!(loaded, 9);
    }

    /// Jumps land inside the program and the migrating branch reads ctx->migrating_sk.
    #[test]
    fn reads_migrating_sk_first() {
        let code = program(5, 6, None, MigrateTo::Slot(1));
        assert_eq!((code[1].code, code[1].off), (LDX_DW, MD_MIGRATING_SK));
        for (i, op) in code.iter().enumerate() {
            if op.code & 0x07 == 0x05 && op.code != CALL && op.code != EXIT {
                let target = i as isize + 1 + op.off as isize;
                assert!(
                    target > i as isize && (target as usize) < code.len(),
                    "{i}: {op:?}"
                );
            }
        }
    }
}
