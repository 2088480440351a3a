//! Splitting a run's case x kernel work into n shards, the same way on every machine,
//! so shards can run apart and be merged (`sockmatrix merge`).

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count`, 1-based as written on the command line (`--shard 2/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard: write i/n with 1 <= i <= n, e.g. 2/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// This shard's work: for each kernel that has any, the indexes (into `case_ids`) of its
/// cases. All (kernel, case id) pairs are sorted and every n-th is taken, so the split
/// depends only on the ids, never on the order they were given in.
pub fn split(kernels: &[String], case_ids: &[&str], shard: Shard) -> Vec<(String, Vec<usize>)> {
    let mut pairs: Vec<(&str, &str, usize)> = kernels
        .iter()
        .flat_map(|k| {
            case_ids
                .iter()
                .enumerate()
                .map(move |(i, c)| (k.as_str(), *c, i))
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (kernel, _, case) in pairs
        .into_iter()
        .enumerate()
        .filter(|(n, _)| n % shard.count == shard.index - 1)
        .map(|(_, p)| p)
    {
        match out.last_mut() {
            Some((k, cases)) if k == kernel => cases.push(case),
            _ => out.push((kernel.to_string(), vec![case])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_i_of_n() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_cover_every_pair_once_whatever_the_order() {
        let ks = kernels(&["6.1", "5.10", "7.2"]);
        let cases = ["b/x", "a/y", "c/z", "a/a"];
        let mut seen = Vec::new();
        for index in 1..=3 {
            for (k, idx) in split(&ks, &cases, Shard { index, count: 3 }) {
                seen.extend(idx.into_iter().map(|i| (k.clone(), cases[i])));
            }
        }
        seen.sort();
        let mut all: Vec<(String, &str)> = ks
            .iter()
            .flat_map(|k| cases.iter().map(move |c| (k.clone(), *c)))
            .collect();
        all.sort();
        assert_eq!(seen, all);
        // Same split when kernels and cases come in another order.
        let (ks2, cases2) = (
            kernels(&["7.2", "6.1", "5.10"]),
            ["c/z", "a/a", "b/x", "a/y"],
        );
        let named = |ks: &[String], cs: &[&str]| -> Vec<(String, Vec<String>)> {
            split(ks, cs, Shard { index: 2, count: 3 })
                .into_iter()
                .map(|(k, idx)| (k, idx.into_iter().map(|i| cs[i].to_string()).collect()))
                .collect()
        };
        assert_eq!(named(&ks, &cases), named(&ks2, &cases2));
    }

    #[test]
    fn a_kernel_without_pairs_is_not_booted() {
        // Sorted pairs: (5.10,a) (5.10,b) (6.1,a) (6.1,b); shard 1/4 takes only (5.10,a).
        let got = split(
            &kernels(&["5.10", "6.1"]),
            &["a", "b"],
            Shard { index: 1, count: 4 },
        );
        assert_eq!(got, vec![("5.10".to_string(), vec![0])]);
        let got = split(
            &kernels(&["5.10", "6.1"]),
            &["a", "b"],
            Shard { index: 2, count: 2 },
        );
        assert_eq!(
            got,
            vec![("5.10".to_string(), vec![1]), ("6.1".to_string(), vec![1])]
        );
    }
}
