//! Which pod subnet a node gets: the lowest block of the cluster CIDR that overlaps no
//! subnet already held (pure, so the choice is tested without a cluster).

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

/// Why a [`CidrSet`] cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrSetError {
    /// The per-node mask is shorter than the cluster CIDR's.
    #[error("--node-cidr-mask-size {mask} must be at least the cluster CIDR's prefix length ({cluster})")]
    MaskTooShort {
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// The per-node prefix length.
        mask: u8,
    },
    /// The per-node mask leaves no address for pods.
    #[error("--node-cidr-mask-size {0} must be between 8 and 30")]
    MaskOutOfRange(u8),
}

/// The node-sized blocks of a cluster CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrSet {
    cluster: Ipv4Net,
    mask: u8,
}

impl CidrSet {
    /// Blocks of prefix length `mask` in `cluster`.
    pub fn new(cluster: Ipv4Net, mask: u8) -> Result<CidrSet, CidrSetError> {
        if !(8..=30).contains(&mask) {
            return Err(CidrSetError::MaskOutOfRange(mask));
        }
        if mask < cluster.prefix_len() {
            return Err(CidrSetError::MaskTooShort { cluster, mask });
        }
        Ok(CidrSet {
            cluster: cluster.trunc(),
            mask,
        })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    /// How many nodes the cluster CIDR has room for.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.mask - self.cluster.prefix_len())
    }

    /// The lowest block overlapping none of `held` (any subnet, inside the cluster CIDR
    /// or not), or `None` when every block is taken.
    pub fn next_free(&self, held: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
        let overlaps =
            |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
        // Subnets that touch the cluster CIDR at all are the only ones that matter.
        let relevant: Vec<&Ipv4Net> = held.iter().filter(|h| overlaps(h, &self.cluster)).collect();
        self.cluster
            .subnets(self.mask)
            .ok()?
            .find(|block| !relevant.iter().any(|h| overlaps(h, block)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn held(nets: &[&str]) -> BTreeSet<Ipv4Net> {
        nets.iter().map(|n| net(n)).collect()
    }

    #[test]
    fn blocks_are_handed_out_lowest_first_around_held_ones() {
        let set = CidrSet::new(net("10.42.0.0/16"), 24).unwrap();
        assert_eq!(set.capacity(), 256);
        assert_eq!(set.next_free(&held(&[])), Some(net("10.42.0.0/24")));
        assert_eq!(
            set.next_free(&held(&["10.42.0.0/24", "10.42.2.0/24"])),
            Some(net("10.42.1.0/24"))
        );
        // A subnet outside the cluster CIDR (a node that brought its own) takes nothing.
        assert_eq!(
            set.next_free(&held(&["10.88.0.0/16"])),
            Some(net("10.42.0.0/24"))
        );
    }

    #[test]
    fn a_held_subnet_of_another_size_blocks_every_block_it_overlaps() {
        let set = CidrSet::new(net("10.42.0.0/16"), 24).unwrap();
        // A /23 covers the first two blocks; a /25 half of the fourth.
        assert_eq!(
            set.next_free(&held(&["10.42.0.0/23", "10.42.2.0/24", "10.42.3.128/25"])),
            Some(net("10.42.4.0/24"))
        );
        // A supernet of the whole cluster CIDR leaves nothing.
        assert_eq!(set.next_free(&held(&["10.0.0.0/8"])), None);
    }

    #[test]
    fn a_full_cluster_cidr_has_no_block_left() {
        let set = CidrSet::new(net("10.42.0.0/23"), 24).unwrap();
        assert_eq!(set.capacity(), 2);
        assert_eq!(
            set.next_free(&held(&["10.42.0.0/24", "10.42.1.0/24"])),
            None
        );
    }

    #[test]
    fn masks_are_checked() {
        assert_eq!(
            CidrSet::new(net("10.42.0.0/16"), 12),
            Err(CidrSetError::MaskTooShort {
                cluster: net("10.42.0.0/16"),
                mask: 12
            })
        );
        assert_eq!(
            CidrSet::new(net("10.42.0.0/16"), 31),
            Err(CidrSetError::MaskOutOfRange(31))
        );
        // The cluster CIDR's host bits are ignored, as Kubernetes does.
        assert_eq!(
            CidrSet::new(net("10.42.7.9/16"), 24).unwrap().cluster(),
            net("10.42.0.0/16")
        );
    }
}
