//! Kernel versions and the conditions cases put on them (`">= 5.14, < 6.2"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// major.minor.patch of a kernel; missing parts count as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Reads the leading version of a release string such as `6.1.0-28-cloud-amd64`.
    pub fn from_release(release: &str) -> Option<KernelVersion> {
        let numeric: String = release
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        numeric.trim_end_matches('.').parse().ok()
    }
}

impl KernelVersion {
    /// The most precise version known: Debian's `uname -v` names the upstream
    /// release ("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (...)") while `uname -r`
    /// says only "6.1.0-56-cloud-amd64".
    pub fn from_uname(release: &str, uname_version: &str) -> Option<KernelVersion> {
        let from_version = uname_version
            .split_whitespace()
            .skip_while(|w| *w != "Debian")
            .nth(1)
            .and_then(KernelVersion::from_release);
        from_version.or_else(|| KernelVersion::from_release(release))
    }
}

impl FromStr for KernelVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('.').collect();
        if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!("`{s}` is not a kernel version like 5.14 or 6.1.0"));
        }
        let mut nums = [0u32; 3];
        for (slot, part) in nums.iter_mut().zip(&parts) {
            *slot = part
                .parse()
                .map_err(|_| format!("`{s}` is not a kernel version like 5.14 or 6.1.0"))?;
        }
        Ok(KernelVersion(nums[0], nums[1], nums[2]))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

/// A conjunction of comparisons, written `">= 5.14, < 6.2"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReq {
    pub text: String,
    pub terms: Vec<(Op, KernelVersion)>,
}

impl VersionReq {
    pub fn matches(&self, v: KernelVersion) -> bool {
        self.terms.iter().all(|(op, bound)| match op {
            Op::Ge => v >= *bound,
            Op::Gt => v > *bound,
            Op::Le => v <= *bound,
            Op::Lt => v < *bound,
            Op::Eq => v == *bound,
        })
    }
}

impl FromStr for VersionReq {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',') {
            let term = term.trim();
            let (op, rest) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("==", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(sym, op)| term.strip_prefix(sym).map(|rest| (*op, rest)))
            .ok_or_else(|| {
                format!("`{term}` needs a comparison such as `>= 5.14` (one of >=, >, <=, <, ==)")
            })?;
            let version = rest.parse().map_err(|e| format!("in `{term}`: {e}"))?;
            terms.push((op, version));
        }
        Ok(VersionReq {
            text: s.trim().to_string(),
            terms,
        })
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for VersionReq {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for VersionReq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings() {
        let v = KernelVersion::from_release("6.1.0-28-cloud-amd64").unwrap();
        assert_eq!(v, KernelVersion(6, 1, 0));
        assert_eq!(
            KernelVersion::from_release("5.10.223-1"),
            Some(KernelVersion(5, 10, 223))
        );
        assert_eq!(
            KernelVersion::from_release("7.2-rc1"),
            Some(KernelVersion(7, 2, 0))
        );
        assert_eq!(
            KernelVersion::from_release("6.18.44-fc-v782"),
            Some(KernelVersion(6, 18, 44))
        );
    }

    #[test]
    fn debian_uname_version_wins() {
        let v = KernelVersion::from_uname(
            "6.1.0-56-cloud-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-10-01)",
        );
        assert_eq!(v, Some(KernelVersion(6, 1, 192)));
        let v = KernelVersion::from_uname("6.18.44-fc-v782", "#1 SMP Tue Nov 3 2026");
        assert_eq!(v, Some(KernelVersion(6, 18, 44)));
    }

    #[test]
    fn ranges() {
        let req: VersionReq = ">= 5.14, < 6.2".parse().unwrap();
        assert!(req.matches(KernelVersion(5, 14, 0)));
        assert!(req.matches(KernelVersion(6, 1, 99)));
        assert!(!req.matches(KernelVersion(6, 2, 0)));
        assert!(!req.matches(KernelVersion(5, 10, 0)));
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!("5.14"
            .parse::<VersionReq>()
            .unwrap_err()
            .contains("comparison"));
        assert!(">= five"
            .parse::<VersionReq>()
            .unwrap_err()
            .contains("kernel version"));
        assert!(">= 5.".parse::<VersionReq>().is_err());
    }
}
