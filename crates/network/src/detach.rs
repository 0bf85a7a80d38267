//! CNI DEL: take a container off a network.

use crate::attach::validate_container_id;
use crate::attachment::Attachment;
use crate::store::Network;
use crate::{dns, Networking, Result};

impl Networking {
    /// CNI DEL: unpublishes the container's ports, deletes its veth pair,
    /// frees its address and record, and stops the network's resolver when
    /// the last container left. Detaching what is not attached, or what is
    /// half torn down, succeeds (DEL must be idempotent). Like every
    /// operation that changes rules, it first repairs skiff's nftables table
    /// ([`Networking::sync_rules`]).
    pub fn detach(&self, network: &str, container_id: &str) -> Result<()> {
        validate_container_id(container_id)?;
        let network = self.network(network)?;
        self.sync_rules()?;
        match self.records(&network).get(container_id)? {
            Some(a) => self.teardown(&network, &a),
            None => {
                // No record (never attached, or killed before recording):
                // an address may still be held.
                self.ipam(&network).release(container_id)?;
                Ok(())
            }
        }
    }

    /// Undoes an attachment's side effects (published ports, veth pair),
    /// continuing past failures so that as much as possible is gone.
    pub(crate) fn undo(&self, a: &Attachment) -> Result<()> {
        let mut first_error = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, container = %a.container_id, "tearing down");
                first_error.get_or_insert(e);
            }
        };
        // Both wait for an RCU grace period in the kernel; in parallel the
        // waits overlap.
        let (ports, link) = std::thread::scope(|s| {
            let ports = s.spawn(|| self.release_ports(a));
            let link = self
                .netlink
                .delete_link(&a.host_interface)
                .map(drop)
                .map_err(Into::into);
            (ports.join().expect("unpublish does not panic"), link)
        });
        note(ports);
        note(link);
        first_error.map_or(Ok(()), Err)
    }

    /// Undoes an attachment and forgets it: the record goes last, so a failed
    /// teardown is retried by the next detach or gc.
    pub(crate) fn teardown(&self, network: &Network, a: &Attachment) -> Result<()> {
        self.undo(a)?;
        let records = self.records(network);
        records.remove(&a.container_id)?;
        self.ipam(network).release(&a.container_id)?;
        if network.dns && records.list()?.is_empty() {
            dns::stop(&self.store.dir(&network.name))?;
        }
        Ok(())
    }
}
