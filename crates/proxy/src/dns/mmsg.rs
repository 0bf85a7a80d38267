//! UDP datagrams a batch per system call: `recvmmsg(2)` and `sendmmsg(2)`, so that the
//! queries that arrived together cost one system call to read and their answers one to send.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

use nix::libc;

/// Datagrams per system call.
pub(super) const BATCH: usize = 32;
/// The longest query read; a longer datagram is dropped (no DNS query needs that much).
const QUERY_MAX: usize = 4096;

fn address(addr: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    )
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is a plain C struct, for which all zeroes is a valid value.
    let mut raw: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    raw.sin_family = libc::AF_INET as libc::sa_family_t;
    raw.sin_port = addr.port().to_be();
    raw.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    raw
}

/// `mmsghdr`s naming each address and its one buffer; built for each call, on the stack,
/// as they hold pointers (which would make the listener's future not `Send`).
fn headers(
    addrs: &mut [libc::sockaddr_in],
    iovs: &mut [libc::iovec; BATCH],
) -> [libc::mmsghdr; BATCH] {
    // SAFETY: mmsghdr is a plain C struct, for which all zeroes is a valid value (no
    // name, no buffers, no control data).
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((header, addr), iov) in headers.iter_mut().zip(addrs).zip(iovs) {
        header.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
        header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        header.msg_hdr.msg_iov = iov;
        header.msg_hdr.msg_iovlen = 1;
    }
    headers
}

fn no_buffers() -> [libc::iovec; BATCH] {
    [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH]
}

/// Queries read by one `recvmmsg`.
pub(super) struct Received {
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_in>,
    /// The length of each datagram read; `None` for one cut short or not from IPv4.
    lens: Vec<Option<usize>>,
}

impl Received {
    pub(super) fn new() -> Received {
        Received {
            data: vec![0; BATCH * QUERY_MAX],
            addrs: vec![sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); BATCH],
            lens: Vec::with_capacity(BATCH),
        }
    }

    /// Reads the datagrams waiting on the non-blocking IPv4 socket `fd`, at most [`BATCH`].
    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.lens.clear();
        let mut iovs = no_buffers();
        for (iov, chunk) in iovs.iter_mut().zip(self.data.chunks_exact_mut(QUERY_MAX)) {
            iov.iov_base = chunk.as_mut_ptr().cast();
            iov.iov_len = QUERY_MAX;
        }
        let mut headers = headers(&mut self.addrs, &mut iovs);
        // SAFETY: every header points at its own address (in `self.addrs`) and buffer (in
        // `self.data`, through `iovs`), all alive and untouched until the call returns.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        for (header, addr) in headers[..received as usize].iter().zip(&self.addrs) {
            let whole = header.msg_hdr.msg_flags & libc::MSG_TRUNC == 0;
            let ipv4 = i32::from(addr.sin_family) == libc::AF_INET;
            self.lens
                .push((whole && ipv4).then_some(header.msg_len as usize));
        }
        Ok(self.lens.len())
    }

    /// The datagrams read and their senders; cut ones are left out.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddrV4)> {
        self.lens
            .iter()
            .zip(self.data.chunks_exact(QUERY_MAX))
            .zip(&self.addrs)
            .filter_map(|((len, chunk), addr)| Some((&chunk[..(*len)?], address(addr))))
    }
}

/// Answers to send with one `sendmmsg`.
pub(super) struct Answers {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_in>,
}

impl Answers {
    pub(super) fn new() -> Answers {
        Answers {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            addrs: Vec::with_capacity(BATCH),
        }
    }

    pub(super) fn clear(&mut self) {
        self.addrs.clear();
    }

    /// How many answers are ready.
    pub(super) fn len(&self) -> usize {
        self.addrs.len()
    }

    /// The buffer of the next answer; it counts once [`Answers::commit`] names its client.
    pub(super) fn next_buf(&mut self) -> &mut Vec<u8> {
        &mut self.bufs[self.addrs.len()]
    }

    pub(super) fn commit(&mut self, client: SocketAddrV4) {
        self.addrs.push(sockaddr(client));
    }

    /// The answer `at` and its client.
    pub(super) fn get(&self, at: usize) -> (&[u8], SocketAddrV4) {
        (&self.bufs[at], address(&self.addrs[at]))
    }

    /// Sends the answers from `from` on the non-blocking IPv4 socket `fd`: how many went.
    pub(super) fn send(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let count = self.addrs.len() - from;
        let mut iovs = no_buffers();
        for (iov, buf) in iovs.iter_mut().zip(&mut self.bufs[from..]) {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
        }
        let mut headers = headers(&mut self.addrs[from..], &mut iovs);
        // SAFETY: the first `count` headers point at their own address (in `self.addrs`)
        // and answer (in `self.bufs`, through `iovs`), all alive and untouched until the
        // call returns.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}
