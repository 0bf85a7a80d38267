//! The address pool of `--service-lb-pool`: IPv4 CIDRs (`198.18.0.0/30`), ranges
//! (`198.18.0.10-198.18.0.20`) and single addresses, comma-separated, as MetalLB's
//! `IPAddressPool` lists them. Every address of a CIDR is used, its first and last too
//! (MetalLB's default, `avoidBuggyIPs: false`).

use std::net::Ipv4Addr;
use std::str::FromStr;

/// A pool entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Neither an IPv4 address, a CIDR nor a range.
    #[error("service load-balancer pool entry {0:?}: want an IPv4 CIDR (198.18.0.0/30), a range (198.18.0.10-198.18.0.20) or an address")]
    Syntax(String),
    /// A CIDR whose address has bits set beyond its prefix.
    #[error("service load-balancer pool entry {entry:?}: the address has host bits set (did you mean {network}/{prefix}?)")]
    HostBits {
        /// The entry as given.
        entry: String,
        /// The network address of the prefix.
        network: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
    /// A range whose end comes before its start.
    #[error("service load-balancer pool entry {0:?}: the range ends before it starts")]
    Reversed(String),
    /// Nothing was given.
    #[error("the service load-balancer pool is empty")]
    Empty,
}

/// A set of IPv4 addresses, kept as sorted, merged, inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<(u32, u32)>,
}

impl Pool {
    /// Whether `ip` belongs to the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&ip))
    }

    /// How many addresses the pool has.
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| u64::from(b - a) + 1).sum()
    }

    /// The lowest address of the pool for which `taken` is false.
    pub fn first_free(&self, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        // Walks each range from its start; `taken` holds for few addresses (those of
        // the Services), so this stops after at most that many steps per range.
        self.ranges
            .iter()
            .find_map(|&(a, b)| (a..=b).map(Ipv4Addr::from).find(|ip| !taken(*ip)))
    }
}

/// One entry: its inclusive range.
fn entry(text: &str) -> Result<(u32, u32), PoolError> {
    let syntax = || PoolError::Syntax(text.to_string());
    let addr = |s: &str| s.trim().parse::<Ipv4Addr>().map_err(|_| syntax());
    if let Some((ip, prefix)) = text.split_once('/') {
        let ip = u32::from(addr(ip)?);
        let prefix: u8 = prefix.trim().parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if ip & !mask != 0 {
            return Err(PoolError::HostBits {
                entry: text.to_string(),
                network: Ipv4Addr::from(ip & mask),
                prefix,
            });
        }
        Ok((ip, ip | !mask))
    } else if let Some((start, end)) = text.split_once('-') {
        let (start, end) = (u32::from(addr(start)?), u32::from(addr(end)?));
        if end < start {
            return Err(PoolError::Reversed(text.to_string()));
        }
        Ok((start, end))
    } else {
        let ip = u32::from(addr(text)?);
        Ok((ip, ip))
    }
}

impl FromStr for Pool {
    type Err = PoolError;

    /// Parses comma-separated entries; overlapping entries are merged.
    fn from_str(s: &str) -> Result<Pool, PoolError> {
        let mut ranges = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.is_empty() {
            return Err(PoolError::Empty);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(Pool { ranges: merged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_ranges_and_addresses() {
        let pool: Pool = "198.18.0.0/30, 198.18.1.10-198.18.1.12,198.18.2.7"
            .parse()
            .unwrap();
        assert_eq!(pool.size(), 4 + 3 + 1);
        for a in [
            "198.18.0.0",
            "198.18.0.3",
            "198.18.1.10",
            "198.18.1.12",
            "198.18.2.7",
        ] {
            assert!(pool.contains(ip(a)), "{a}");
        }
        for a in ["198.18.0.4", "198.18.1.9", "198.18.1.13", "198.18.2.8"] {
            assert!(!pool.contains(ip(a)), "{a}");
        }
        assert_eq!(pool.first_free(|_| false), Some(ip("198.18.0.0")));
        assert_eq!(
            pool.first_free(|a| a < ip("198.18.1.11")),
            Some(ip("198.18.1.11"))
        );
        assert_eq!(pool.first_free(|_| true), None);
    }

    #[test]
    fn overlapping_entries_merge() {
        let pool: Pool = "10.0.0.0/29,10.0.0.4-10.0.0.9,10.0.0.10".parse().unwrap();
        assert_eq!(pool.size(), 11);
        let whole: Pool = "0.0.0.0/0".parse().unwrap();
        assert_eq!(whole.size(), 1 << 32);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        assert_eq!(
            "198.18.0.1/30".parse::<Pool>(),
            Err(PoolError::HostBits {
                entry: "198.18.0.1/30".into(),
                network: ip("198.18.0.0"),
                prefix: 30
            })
        );
        assert!(PoolError::HostBits {
            entry: "198.18.0.1/30".into(),
            network: ip("198.18.0.0"),
            prefix: 30
        }
        .to_string()
        .contains("did you mean 198.18.0.0/30"));
        assert_eq!(
            "10.0.0.9-10.0.0.1".parse::<Pool>(),
            Err(PoolError::Reversed("10.0.0.9-10.0.0.1".into()))
        );
        for bad in ["fd00::/64", "10.0.0.0/33", "nope", "10.0.0.1-"] {
            assert!(
                matches!(bad.parse::<Pool>(), Err(PoolError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(" , ".parse::<Pool>(), Err(PoolError::Empty));
    }
}
