//! Which sysctls a case may write: only knobs of its own network namespace, so a
//! case can never change the kernel for the cases after it.

/// Prefixes of the per-namespace knobs. A case's sysctls are written from inside
/// its fresh network namespace, where `/proc/sys/net` shows that namespace's
/// knobs only (a global one under these prefixes, e.g. `net.core.rmem_max` or
/// `net.ipv4.tcp_mem`, is absent there: its write is recorded as ENOENT).
pub const PER_NETNS_PREFIXES: &[&str] = &[
    "net.ipv4.",
    "net.ipv6.",
    "net.core.",
    "net.unix.",
    "net.mptcp.",
    "net.sctp.",
    "net.netfilter.",
];

/// Ok when a case may write `name`; else why not, for `check`.
pub fn writable(name: &str) -> Result<(), String> {
    if PER_NETNS_PREFIXES
        .iter()
        .any(|p| name.len() > p.len() && name.starts_with(p))
    {
        return Ok(());
    }
    Err(format!(
        "sysctl {} does not belong to the case's network namespace: writing it \
         would change the kernel for every later case. Only these may be written: {}",
        super::fields::quoted(name),
        PER_NETNS_PREFIXES
            .iter()
            .map(|p| format!("{p}*"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::writable;

    #[test]
    fn only_namespace_knobs() {
        for ok in [
            "net.ipv4.tcp_migrate_req",
            "net.ipv4.ip_local_port_range",
            "net.ipv6.bindv6only",
            "net.core.somaxconn",
            "net.unix.max_dgram_qlen",
        ] {
            assert_eq!(writable(ok), Ok(()), "{ok}");
        }
        for bad in [
            "kernel.panic",
            "vm.overcommit_memory",
            "user.max_net_namespaces",
            "fs.file-max",
            "net.ipv4.",
            "net.bridge.bridge-nf-call-iptables",
        ] {
            assert!(writable(bad).is_err(), "{bad}");
        }
    }
}
